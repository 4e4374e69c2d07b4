"""Executors: --jobs N equals a sequential comparison; a killed worker's run is retried and resumes from its
checkpoint; a user error is reported, not retried; --plan and --collect."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from lifelong import compare, store
from lifelong.cli import main
from lifelong.executors import EXECUTORS, Processes, make_executor
from lifelong.errors import UserError
from lifelong.lock import owner

SLOW = {"data": {"max_tasks": 4, "train_fraction": 1.0}, "train": {"epochs": 3, "batch_size": 16}}


def experiment(tiny, out):
    return compare.experiment_from_dict({
        "base": tiny(out=str(out), train={"epochs": 1}),
        "variants": [{"name": "naive", "set": {"method": "naive"}},
                     {"name": "slow", "set": {"method": "ewc", **SLOW}},
                     {"name": "diverges", "set": {"train": {"optimizer": "sgd", "lr": 1e12}}}],
    })


def kill_during(run_dir: Path, done: threading.Event) -> list[str]:
    """SIGKILL the worker training ``run_dir`` once it has checkpointed its first task; returns the metrics lines
    that checkpoint covers."""
    deadline, seen = time.time() + 120, None
    while time.time() < deadline and not done.is_set():
        path = run_dir / store.CHECKPOINT_FILE
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != seen and stamp is not None:
            seen = stamp
            state = store.load_checkpoint(run_dir)["loop"]
            holder = owner(run_dir)
            if state["task"] >= 1 and holder:
                os.kill(holder["pid"], signal.SIGKILL)
                return (run_dir / store.METRICS_FILE).read_text().splitlines()[: state["metrics_lines"]]
        time.sleep(0.02)
    raise AssertionError("the slow run finished before it could be killed")


def test_jobs_equal_a_sequential_comparison_retry_a_killed_worker_and_report_user_errors(tiny, tmp_path):
    sequential = compare.run_experiment(experiment(tiny, tmp_path / "seq"))
    exp = experiment(tiny, tmp_path / "par")
    slow_dir = store.run_directory(compare.build_config(compare.plan(exp)[1]["config"]))
    box, done = {}, threading.Event()

    def go():
        box["entries"] = compare.run_experiment(exp, executor=Processes(2, retries=2))
        done.set()

    thread = threading.Thread(target=go)
    thread.start()
    before_kill = kill_during(slow_dir, done)
    thread.join(300)
    parallel = box["entries"]
    for seq, par in zip(sequential, parallel):
        assert (seq["error"] is None) == (par["error"] is None)
        if seq["results"]:
            assert par["results"]["acc_matrix"] == seq["results"]["acc_matrix"]
    assert compare.to_markdown(compare.summarize(parallel)).count("|") == \
        compare.to_markdown(compare.summarize(sequential)).count("|")
    after = (slow_dir / store.METRICS_FILE).read_text().splitlines()
    assert after[: len(before_kill)] == before_kill  # resumed from the checkpoint, not retrained: same timings
    failed = compare.failures(parallel)
    assert [f["variant"] for f in failed] == ["diverges"] and "training diverged" in failed[0]["error"]
    assert "Failed runs (1)" in compare.to_markdown(compare.summarize(parallel), failed)


def test_executor_flags_are_checked():
    assert set(EXECUTORS) == {"serial", "processes", "ray"}
    assert make_executor(None, 1).name == "serial" and make_executor(None, 2).name == "processes"
    with pytest.raises(UserError, match="unknown executor"):
        make_executor("slurm")
    with pytest.raises(UserError, match="--address names a Ray cluster"):
        make_executor("processes", 2, address="auto")
    assert Processes(64).threads >= 1 and Processes(64).jobs <= os.cpu_count()


def test_cli_user_errors_for_the_new_flags(tmp_path, capsys):
    base = ["compare", "--methods", "naive", "--out", str(tmp_path)]
    for extra, message in ((["--jobs", "0"], "--jobs must be at least 1"), (["--jobs", "x"], "whole number"),
                           (["--plan", "--collect"], "one at a time"), (["--plan", "--jobs", "2"], "does not apply"),
                           (["--executor", "nope"], "unknown executor")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_plan_then_run_each_file_then_collect(tmp_path, capsys):
    flags = ["--methods", "naive,single-task", "--out", str(tmp_path), "--set", "data.max_tasks=2",
             "--set", "data.train_fraction=0.2", "--set", "train.epochs=1", "--set", "model.hidden=[16]"]
    assert main(["compare", "--plan", *flags]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)
    assert yaml.safe_load(Path(paths[0]).read_text())["out"] == str(tmp_path)
    assert main(["run", "--config", paths[0], "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", "--collect", *flags]) == 2
    assert "1 of 2 runs are not finished" in capsys.readouterr().err
    assert main(["run", "--config", paths[1], "--quiet"]) == 0
    assert main(["compare", "--collect", *flags]) == 0
    collected = next(tmp_path.glob("compare-*/summary.md")).read_text()
    assert main(["compare", *flags]) == 0  # the same comparison run here reuses them: the same table
    assert next(tmp_path.glob("compare-*/summary.md")).read_text() == collected


def test_ctrl_c_during_a_comparison_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_experiment", interrupted)
    assert main(["compare", "--methods", "naive", "--out", str(tmp_path)]) == 130
    assert "run the same `lifelong compare` again" in capsys.readouterr().err
