import pytest

from lifelong.config import Config, build_config, parse_set, read_yaml
from lifelong.errors import UserError


def test_defaults_are_the_quickstart():
    cfg = build_config()
    assert cfg.method == "naive" and cfg.data.benchmark == "quickstart" and cfg.train.epochs == 5


def test_set_overrides_parse_yaml_values():
    cfg = build_config({}, ["train.lr=0.01", "model.hidden=[100, 50]", "data.augment=true", "seed=3"])
    assert cfg.train.lr == 0.01 and cfg.model.options == {"hidden": [100, 50]}
    assert cfg.data.augment is True and cfg.seed == 3


def test_later_settings_win():
    cfg = build_config({"train": {"epochs": 2}}, ["train.epochs=4", "train.epochs=7"])
    assert cfg.train.epochs == 7


@pytest.mark.parametrize(
    "raw, sets, fragment",
    [
        ({"trian": {}}, [], "unknown config key 'trian'; did you mean 'train'?"),
        ({}, ["train.lrr=1"], "unknown config key 'train.lrr'"),
        ({}, ["train.lr=-1"], "invalid config value for 'train.lr'"),
        ({}, ["data.scenario=sideways"], "invalid config value for 'data.scenario'"),
        ({}, ["data.train_fraction=0"], "data.train_fraction"),
        ({}, ["naive.foo=1"], "unknown config key 'naive.foo'"),
        ({}, ["train.lr"], "--set expects key=value"),
        ({"train": 3}, ["train.lr=1"], "'train' is a value, not a section"),
        ({}, ["train.epoch=3"], "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
        ({"method": "ewc"}, ["ewc.lamda=3"], "unknown config key 'ewc.lamda'; did you mean 'ewc.lam'?"),
        ({"method": "er"}, ["er.memory=3"], "unknown config key 'er.memory'; 'er' has store "),
        ({}, ["naive.foo=1"], "'naive' takes no settings"),
        ({}, ["train.zzzzz=1"], "unknown config key 'train.zzzzz'; check the spelling"),
    ],
)
def test_bad_config_is_one_line_user_error(raw, sets, fragment):
    with pytest.raises(UserError) as err:
        build_config(raw, sets)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_method_section_is_kept_and_round_trips():
    cfg = build_config({"naive": {}})
    assert "naive" in cfg.to_dict()
    again = build_config(cfg.to_dict())
    assert again.fingerprint() == cfg.fingerprint()


def test_fingerprint_ignores_output_folder_only():
    a, b = build_config({"out": "x"}), build_config({"out": "y"})
    assert a.fingerprint() == b.fingerprint()
    assert build_config({"seed": 1}).fingerprint() != a.fingerprint()


def test_parse_set_keeps_strings():
    assert parse_set("data.benchmark=split-mnist") == (["data", "benchmark"], "split-mnist")


def test_read_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_yaml(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        read_yaml(bad)
    listy = tmp_path / "list.yml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        read_yaml(listy)


def test_config_is_validated_on_assignment():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.train.epochs = 0


def test_keys_added_later_are_hashed_only_away_from_their_default():
    """Run directories made before data.test_fraction, data.rgb32, data.normalize and train.reset_optimizer
    existed keep their names (the hash of the first release's key set)."""
    import hashlib
    import json

    cfg = build_config({"seed": 3})
    before = cfg.to_dict()
    before.pop("out"), before.pop("logger"), before["data"].pop("test_fraction"), before["data"].pop("rgb32")
    before["train"].pop("reset_optimizer"), before["data"].pop("normalize")
    for key in ("online", "boundaries", "eval_every", "threads", "probe", "precision", "unseen_outputs"):
        before["train"].pop(key)
    for key in ("source", "tasks", "classes_per_task"):
        before["data"].pop(key)
    old_hash = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert cfg.fingerprint() == old_hash
    assert build_config({"seed": 3, "data": {"test_fraction": 0.5}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "train": {"reset_optimizer": False}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "train": {"online": True}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "train": {"probe": True}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "train": {"precision": "bf16"}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "train": {"unseen_outputs": "trained"}}).fingerprint() != old_hash
    assert build_config({"seed": 3, "mlflow": {"uri": "sqlite:///x.db"}}).fingerprint() == old_hash  # where it logs
    assert build_config({"seed": 3, "train": {"threads": 1}}).fingerprint() == old_hash  # how, not what


def test_method_revision_makes_earlier_run_directories_stale(monkeypatch):
    """A method whose results changed for the same config raises its ``revision``: the fingerprint changes (so
    compare does not reuse, and resume refuses, a directory the earlier code made); revision 0 hashes as before."""
    from lifelong.methods import METHODS

    before = build_config({"method": "ewc", "seed": 3}).fingerprint()
    monkeypatch.setattr(METHODS["ewc"], "revision", 2)
    after = build_config({"method": "ewc", "seed": 3}).fingerprint()
    assert after != before
    monkeypatch.setattr(METHODS["ewc"], "revision", 3)
    assert build_config({"method": "ewc", "seed": 3}).fingerprint() not in (before, after)


def test_the_source_path_shorthand_takes_sub_options_after_it():
    """--set data.source=PATH is short for {path: PATH}; a later --set data.source.size=8 adds to it."""
    from lifelong.config import merge, parse_set

    raw: dict = {}
    for assignment in ("data.source=imgs", "data.source.size=8"):
        merge(raw, *parse_set(assignment))
    assert raw == {"data": {"source": {"path": "imgs", "size": 8}}}
