"""The docs name every config key, and the shipped configs validate."""

from pathlib import Path

import pytest

from lifelong.config import Config, DataConfig, TrainConfig, build_config, read_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    keys = [k for k in Config.model_fields if k not in ("data", "model", "train", "params")]
    keys += [f"data.{k}" for k in DataConfig.model_fields] + [f"train.{k}" for k in TrainConfig.model_fields]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"undocumented config keys: {missing}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    """Run configs build; experiment files (with `variants`) plan, and every planned run's config builds."""
    raw = read_yaml(path)
    if "variants" not in raw:
        build_config(raw)
        return
    from lifelong.compare import experiment_from_dict, plan

    for entry in plan(experiment_from_dict(raw)):
        build_config(entry["config"])


def test_quickstart_config_equals_the_defaults():
    shipped = build_config(read_yaml(ROOT / "configs" / "quickstart.yml"))
    assert shipped.fingerprint() == build_config({"model": {"hidden": [400, 400]}}).fingerprint()


def test_every_method_and_hyperparameter_is_documented():
    from lifelong.methods import METHODS

    text = (ROOT / "docs" / "methods.md").read_text()
    missing = [name for name in METHODS if f"`{name}`" not in text]
    missing += [f"{m.config_section()}.{field}" for m in METHODS.values() for field in m.Params.model_fields
                if f"`{m.config_section()}.{field}`" not in text]
    assert not missing, f"undocumented in docs/methods.md: {missing}"


def run_markdown(path, monkeypatch, tmp_path):
    """Run a page's blocks in order in an empty folder: ```python blocks, ```yaml blocks whose first line is
    ``# FILE`` (written to FILE), and each ``$ lifelong ...`` line of ```console blocks (must exit 0)."""
    import re
    import shlex

    from lifelong.cli import main

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    for kind, body in blocks:
        if kind == "python":
            exec(compile(body, str(path), "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs
        elif kind == "yaml" and body.startswith("# "):
            Path(body.splitlines()[0][2:].strip()).write_text(body)
        elif kind == "console":
            for line in body.splitlines():
                if line.startswith("$ lifelong "):
                    assert main(shlex.split(line[2:])[1:]) == 0, line
    return blocks


def test_own_data_tutorial_runs(monkeypatch, tmp_path):
    blocks = run_markdown(ROOT / "docs" / "own-data.md", monkeypatch, tmp_path)
    assert sum(kind == "console" for kind, _ in blocks) >= 5
    assert len(list((tmp_path / "runs").glob("source-*/results.json"))) >= 7
