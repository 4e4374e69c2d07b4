"""The optional TensorBoard sink: the same numbers as metrics.jsonl, rebuilt exactly on resume; a clear error
without the package; the logger never changes which run directory a config has."""

import sys

import pytest

from lifelong import run, store
from lifelong.cli import main
from lifelong.config import build_config


def scalars(run_dir):
    """{tag: [(step, value), ...]} from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_the_logged_metrics_and_survives_a_resume(tiny, crash_and_resume):
    pytest.importorskip("tensorboard", reason="the optional extra lifelong[tensorboard] is not installed")
    run_dir, results = run(tiny(logger="tensorboard"))
    logged = scalars(run_dir)
    R, init = results["acc_matrix"], results["random_init_acc"]
    for j in range(3):
        expected = [(0, init[j])] + [(i + 1, R[i][j]) for i in range(3)]
        assert logged[f"test_acc/task_{j + 1}"] == [(s, pytest.approx(v, abs=1e-6)) for s, v in expected]
    epochs = [r for r in store.read_metrics(run_dir) if r["event"] == "epoch"]
    assert logged["val/acc"] == [(i + 1, pytest.approx(r["val_acc"], abs=1e-6)) for i, r in enumerate(epochs)]
    assert [s for s, _ in logged["train/loss"]] == list(range(1, 7))

    resumed_dir, _ = crash_and_resume(tiny(logger="tensorboard", seed=1), [(1, 1), (2, 0)])
    uninterrupted, _ = run(tiny(seed=1, logger="tensorboard", out=str(resumed_dir.parent.parent / "fresh")))
    assert scalars(resumed_dir) == scalars(uninterrupted)  # no duplicated or missing points after crashes


def test_without_tensorboard_the_logger_is_a_user_error(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    config = tiny(logger="tensorboard", method="naive")
    assert main(["run", "--out", config["out"], "--max-tasks", "1", "--logger", "tensorboard", "--quiet",
                 "--set", "model.hidden=[8]", "--train-fraction", "0.1", "--epochs", "1"]) == 2
    assert "pip install 'lifelong[tensorboard]'" in capsys.readouterr().err


def test_the_logger_does_not_change_the_run_directory():
    assert build_config({"logger": "tensorboard"}).fingerprint() == build_config({}).fingerprint()
