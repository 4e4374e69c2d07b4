"""A run directory holds only the results of the config it holds; failures leave nothing half-made (issue 19)."""

import os
from pathlib import Path

import pytest
import torch
import yaml

import lifelong
from lifelong import store
from lifelong.config import build_config, difference
from lifelong.errors import UserError
from lifelong.methods.naive import Naive


def edit_config(run_dir, **train):
    path = run_dir / "config.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(train)
    path.write_text(yaml.safe_dump(raw))


def test_an_edited_config_of_an_unstarted_run_is_refused_by_resume_and_run(tiny):
    cfg = build_config(tiny())
    run_dir = store.run_directory(cfg)
    store.write_config(run_dir, cfg)  # killed before its first checkpoint
    edit_config(run_dir, lr=0.5)
    with pytest.raises(UserError, match="was edited after the run was made"):
        lifelong.resume(run_dir)
    with pytest.raises(UserError, match=r"train.lr: 0.001 → 0.5"):
        lifelong.run(tiny())
    assert not (run_dir / "results.json").exists()


def test_an_edited_config_of_a_finished_run_is_an_error_naming_the_difference(tiny):
    run_dir, results = lifelong.run(tiny())
    assert results["fingerprint"] == build_config(tiny()).fingerprint()
    edit_config(run_dir, lr=0.5)
    with pytest.raises(UserError, match=r"another config than config.yaml \(train.lr: 0.001 → 0.5\)"):
        lifelong.resume(run_dir)
    with pytest.raises(UserError, match=r"was edited.*train.lr"):
        lifelong.run(tiny())


def test_a_run_resumed_through_a_relative_path_names_only_what_changes_results(tiny, monkeypatch):
    """Resuming by a relative path reads ``out`` relative: the difference named (and own data's changed-files
    check, which needs an otherwise equal config) used to count that as an edit."""
    run_dir, _ = lifelong.run(tiny())
    monkeypatch.chdir(run_dir.parent.parent)
    edit_config(run_dir, lr=0.5)
    with pytest.raises(UserError, match=r"another config than config.yaml \(train.lr: 0.001 → 0.5\); restore"):
        lifelong.resume(Path(run_dir.parent.name) / run_dir.name)
    assert difference({"out": "a", "logger": "none", "train": {"threads": 1, "lr": 1}},
                      {"out": "b", "logger": "tensorboard", "train": {"threads": 2, "lr": 1}}) == ""


def test_report_and_inspect_refuse_results_their_config_did_not_make(tiny, capsys):
    """Before, both read results.json alone: results were reported under an edited config.yaml's settings.
    Results of an earlier revision of the method are still shown (resume refuses them)."""
    from lifelong.cli import main

    run_dir, results = lifelong.run(tiny())
    edit_config(run_dir, lr=0.5)
    for command in (["report", str(run_dir), "--out", str(run_dir / "r.html")], ["inspect", str(run_dir)]):
        assert main(command) == 2
        assert "(train.lr: 0.001 → 0.5)" in capsys.readouterr().err
    edit_config(run_dir, lr=0.001)
    store.write_json(run_dir / "results.json", {**results, "fingerprint": "0" * 64})  # as after a revision bump
    assert main(["inspect", str(run_dir)]) == 0  # shown as they were made
    with pytest.raises(UserError, match=r"made by an earlier version of lifelong.*lifelong run --config .* --force"):
        lifelong.resume(run_dir)


def test_results_of_an_earlier_version_without_a_fingerprint_are_checked_by_their_config(tiny):
    run_dir, results = lifelong.run(tiny())
    store.write_json(run_dir / "results.json", {k: v for k, v in results.items() if k != "fingerprint"})
    assert lifelong.resume(run_dir)["acc"] == results["acc"]


def test_one_experiment_has_one_directory_however_it_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"out": "runs"}
    dirs = {store.run_directory(build_config(raw)) for raw in [
        {**base, "data": {"data_dir": "data"}},
        {**base, "data": {"data_dir": "data/"}},
        {**base, "data": {"data_dir": str(tmp_path / "data")}},
        {**base, "data": {"data_dir": "./data", "scenario": "task", "max_tasks": 5,
                          "class_order": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]},
         "model": {"name": "mlp", "hidden": [400, 400], "dropout": 0.0}, "train": {"lr": 0.001}},
    ]}
    assert len(dirs) == 1
    assert build_config({"data": {"data_dir": "data"}}).data.data_dir == str(tmp_path / "data")
    ewc = [build_config({"method": "ewc", **extra}).fingerprint() for extra in ({}, {"ewc": {}})]
    assert ewc[0] == ewc[1]


def test_the_hash_of_a_config_at_its_defaults_is_unchanged():
    """Directories made by earlier versions keep their name when nothing was written differently."""
    assert build_config({}).fingerprint()[:8] == "8cdcbb8e"


def test_an_impossible_max_tasks_is_an_error_and_makes_no_directory(tiny, tmp_path):
    with pytest.raises(UserError, match="data.max_tasks=100 exceeds the 5 tasks of quickstart"):
        lifelong.run(tiny(data={"max_tasks": 100}))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_relative_data_dir_is_stored_absolute_and_resume_names_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config({"out": str(tmp_path / "runs"), "device": "cpu",
                        "data": {"benchmark": "split-mnist", "data_dir": "nowhere"}})
    run_dir = store.run_directory(cfg)
    store.write_config(run_dir, cfg)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["data_dir"] == str(tmp_path / "nowhere")
    monkeypatch.chdir(run_dir)
    with pytest.raises(UserError) as err:
        lifelong.resume(run_dir)
    assert "--data-dir" not in str(err.value) and f"set data.data_dir in {run_dir / 'config.yaml'}" in str(err.value)


@pytest.mark.parametrize("change", [
    {"data": {"benchmark": "no-such"}},
    {"model": {"name": "no-such"}},
    {"data": {"benchmark": "split-mnist", "data_dir": "/nonexistent", "max_tasks": None}},
    {"device": "cuda"},
])
def test_a_failed_start_leaves_no_run_directory(tiny, tmp_path, change, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "nodata"))
    if change.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(UserError):
        lifelong.run(tiny(**change))
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


def test_resume_and_force_remove_temporary_files_of_a_killed_write(tiny):
    cfg = build_config(tiny())
    run_dir = store.run_directory(cfg)
    store.write_config(run_dir, cfg)
    stale = [run_dir / ".checkpoint.pt.x1y2", run_dir / ".results.json.abc", run_dir / ".model.safetensors.tmp"]
    for path in stale:
        path.write_bytes(b"torn")
    lifelong.resume(run_dir)
    assert not any(path.exists() for path in stale)
    for path in stale:
        path.write_bytes(b"torn")
    lifelong.run(tiny(), force=True)
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_non_finite_weights_stop_the_run_like_a_diverged_loss(tiny, monkeypatch):
    def poison(self, task, view):
        for p in self.model.parameters():
            p.data.fill_(float("nan"))

    monkeypatch.setattr(Naive, "after_task", poison)
    with pytest.raises(UserError, match="training diverged: the network's weights are not finite after the end of "
                                        "task 1"):
        lifelong.run(tiny())
    run_dir = store.run_directory(build_config(tiny()))
    assert not (run_dir / "results.json").exists() and not (run_dir / "model.safetensors").exists()


def test_an_infinite_learning_rate_is_refused():
    with pytest.raises(UserError, match="train.lr"):
        build_config({}, ["train.lr=.inf"])


def test_run_files_follow_the_umask(tiny):
    old = os.umask(0o022)
    try:
        run_dir, _ = lifelong.run(tiny())
    finally:
        os.umask(old)
    for name in ("config.yaml", "results.json", "checkpoint.pt", "metrics.jsonl"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name
    assert Path(run_dir).is_dir()


def test_resume_refuses_a_service_directory(tmp_path):
    """A directory lifelong serve made from a config holds a config.yaml but no run to continue."""
    import lifelong
    from lifelong import store
    from lifelong.config import build_config, difference
    from lifelong.errors import UserError

    cfg = build_config({"out": str(tmp_path)})
    run_dir = tmp_path / "serve-quickstart-naive-seed0-00000000"
    store.write_config(run_dir, cfg)
    (run_dir / "serve").mkdir()
    with pytest.raises(UserError, match="service's directory"):
        lifelong.resume(run_dir)
