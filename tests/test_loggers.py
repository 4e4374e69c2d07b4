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


class Recorder:
    """A throwaway logger that keeps every call, registered for one test."""

    calls: list = []

    def __init__(self):
        self.name = "recorder"

    def start(self, run_dir, config, history):
        Recorder.calls.append(("start", config["method"], list(history)))

    def log(self, record):
        Recorder.calls.append(("log", record))

    def finish(self, results, files):
        Recorder.calls.append(("finish", results, sorted(files)))


@pytest.fixture
def recorder(monkeypatch):
    import lifelong.loggers

    Recorder.calls = []
    monkeypatch.setitem(lifelong.loggers.LOGGERS, "recorder", Recorder)
    return Recorder.calls


def test_several_loggers_receive_every_record_and_the_results(tiny, recorder):
    pytest.importorskip("tensorboard", reason="the optional extra lifelong[tensorboard] is not installed")
    run_dir, results = run(tiny(logger="tensorboard,recorder"))
    assert recorder[0] == ("start", "naive", [])
    assert [c[1] for c in recorder[1:-1]] == store.read_metrics(run_dir)
    assert recorder[-1] == ("finish", results, ["config.yaml", "metrics.jsonl", "model.safetensors", "results.json"])
    assert scalars(run_dir)["test_acc/task_1"]  # the other logger got the same records


def test_a_crashed_run_closes_its_loggers_and_a_resume_gives_them_the_history(tiny, recorder, crash_and_resume):
    run_dir, results = crash_and_resume(tiny(logger=["recorder"]), [(1, 1)])
    finishes = [c for c in recorder if c[0] == "finish"]
    assert finishes[0] == ("finish", None, []) and finishes[1][1] == results
    starts = [c for c in recorder if c[0] == "start"]
    logged_before_the_crash = [c[1] for c in recorder[1 : recorder.index(finishes[0])]]
    assert starts[1][2] == logged_before_the_crash  # every record up to the checkpoint, none after it
    resumed_logs = [c[1] for c in recorder[recorder.index(starts[1]) + 1 : -1]]
    assert starts[1][2] + resumed_logs == store.read_metrics(run_dir)


@pytest.mark.parametrize("value,names", [("none", []), (None, []), ("tensorboard", ["tensorboard"]),
                                         (["tensorboard"], ["tensorboard"]), ("none,tensorboard", ["tensorboard"])])
def test_logger_names_are_read_from_a_string_or_a_list(value, names):
    assert build_config({"logger": value}).logger == names


def test_an_unknown_logger_is_a_user_error():
    from lifelong.errors import UserError

    with pytest.raises(UserError, match="unknown logger 'wandb'; valid: none, tensorboard"):
        build_config({"logger": "wandb"})


def test_tensorboard_keeps_anytime_and_probe_points_apart_from_the_task_steps(tiny):
    pytest.importorskip("tensorboard", reason="the optional extra lifelong[tensorboard] is not installed")
    run_dir, results = run(tiny(logger="tensorboard", train={"epochs": 1, "eval_every": 200, "probe": True}))
    logged = scalars(run_dir)
    assert [s for s, _ in logged["test_acc/task_1"]] == [0, 1, 2, 3]  # anytime points are not task steps
    assert logged["probe_acc/task_2"][-1] == (3, pytest.approx(results["probe_matrix"][-1][1], abs=1e-6))
    assert [s for s, _ in logged["anytime/acc"]] == results["anytime"]["samples"]


class Failing(Recorder):
    """A logger whose first finish fails, as a tracking server that is down when the run ends."""

    failures = 1

    def finish(self, results, files):
        super().finish(results, files)
        if results is not None and Failing.failures:
            Failing.failures -= 1
            raise OSError("server down")


def test_loggers_that_failed_to_take_the_results_get_them_from_the_next_command(tiny, monkeypatch):
    """The run finished (results.json written) but its logger failed: every logger still closes, the command
    fails, and the next run or resume of it hands the results over (it trains nothing again)."""
    import lifelong.loggers
    from lifelong.loop import LOGGERS_PENDING, resume

    Recorder.calls, Failing.failures = [], 1
    monkeypatch.setitem(lifelong.loggers.LOGGERS, "failing", Failing)
    monkeypatch.setitem(lifelong.loggers.LOGGERS, "recorder", Recorder)
    cfg = build_config(tiny(logger="failing,recorder"))
    with pytest.raises(OSError, match="server down"):
        run(cfg)
    run_dir = store.run_directory(cfg)
    results = store.read_results(run_dir)
    assert results is not None and (run_dir / LOGGERS_PENDING).exists()
    assert [c[1] for c in Recorder.calls if c[0] == "finish"] == [results, results]  # the second logger finished too
    Recorder.calls = []
    assert run(build_config(tiny(logger="none")))[1] == results  # the run's own loggers, whatever this command's
    assert [c[0] for c in Recorder.calls] == ["start", "start", "finish", "finish"]  # both loggers, no training
    assert Recorder.calls[0][2] == store.read_metrics(run_dir) and not (run_dir / LOGGERS_PENDING).exists()
    Recorder.calls = []
    assert run(cfg)[1] == results and resume(run_dir) == results and Recorder.calls == []  # nothing pending
