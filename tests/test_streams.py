"""Streams: train.online (each sample once), train.boundaries hidden, train.eval_every anytime accuracy."""

import json

import pytest

import lifelong
from lifelong import store
from lifelong.errors import UserError
from lifelong.methods.naive import Naive

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def stream_config(tiny, method="naive", **train):
    return tiny(method=method, data={"validation": 0.0, "train_fraction": 0.1, "scenario": "class"},
                train={"online": True, "batch_size": 10, "eval_every": 100, **train},
                **({"memory": {"size": 30, "batch_size": 10}} if method in ("er", "der++", "gdumb") else {}))


def training_rows(run_dir) -> list[int]:
    """Rows of each task's training split, from the run's task records."""
    from lifelong.config import build_config
    from lifelong.data.benchmarks import build_benchmark

    cfg = store.read_config(run_dir)
    return [len(t.train) for t in build_benchmark(build_config(cfg.to_dict()).data, cfg.seed).tasks]


def test_online_sees_each_sample_once_and_records_anytime_accuracy(tiny):
    run_dir, results = lifelong.run(stream_config(tiny))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records if r["event"] == "epoch"] == [0, 1, 2]  # one pass per task
    total = sum(training_rows(run_dir))
    anytime = results["anytime"]
    assert anytime["samples"] == list(range(100, total + 1, 100))  # every 100 rows, never a row twice
    means = [sum(a) / len(a) for a in anytime["acc"]]
    assert anytime["average"] == pytest.approx(sum(means) / len(means))
    assert [r["samples"] for r in records if r["event"] == "anytime"] == anytime["samples"]


def test_anytime_points_follow_the_tasks_seen(tiny):
    run_dir, results = lifelong.run(stream_config(tiny))
    rows = training_rows(run_dir)
    for samples, acc in zip(results["anytime"]["samples"], results["anytime"]["acc"]):
        seen = sum(1 for start in [0, rows[0], rows[0] + rows[1]] if samples > start)
        assert len(acc) == seen


def test_hidden_boundaries_tell_the_method_only_the_start_and_the_end(tiny, monkeypatch):
    calls = {"before": 0, "after": 0}
    before, after = Naive.before_task, Naive.after_task

    def count_before(self, task):
        calls["before"] += 1
        return before(self, task)

    def count_after(self, task, train):
        calls["after"] += 1
        return after(self, task, train)

    monkeypatch.setattr(Naive, "before_task", count_before)
    monkeypatch.setattr(Naive, "after_task", count_after)
    _, hidden = lifelong.run(stream_config(tiny, boundaries="hidden"))
    assert calls == {"before": 1, "after": 1}
    _, given = lifelong.run(stream_config(tiny))
    assert calls == {"before": 4, "after": 4}
    assert hidden["acc_matrix"] != given["acc_matrix"]  # one optimizer across the stream, not a fresh one per task


@pytest.mark.parametrize("method", ["er", "der++", "gdumb"])
def test_task_free_methods_learn_a_stream_with_hidden_boundaries(tiny, method):
    _, results = lifelong.run(stream_config(tiny, method, boundaries="hidden"))
    assert results["acc"] > 1 / 6  # above chance over 6 classes


def test_methods_that_need_boundaries_say_so(tiny):
    with pytest.raises(UserError, match="needs task boundaries.*task-free method"):
        lifelong.run(stream_config(tiny, "ewc", boundaries="hidden"))
    with pytest.raises(UserError, match="set train.online true"):
        lifelong.run(tiny(train={"boundaries": "hidden"}))
    with pytest.raises(UserError, match="train.iterations does not apply to a stream"):  # was silently ignored
        lifelong.run(tiny(train={"online": True, "iterations": 5}))


def test_a_stream_resumes_to_the_same_results(tiny, crash_and_resume):
    config = stream_config(tiny, "er")
    _, uninterrupted = lifelong.run({**config, "out": config["out"] + "-whole"})
    run_dir, resumed = crash_and_resume(config, [(1, 0)])
    for key in ("acc_matrix", "anytime"):
        assert resumed[key] == uninterrupted[key]


def test_the_report_draws_the_anytime_curve(tiny, tmp_path):
    from lifelong.report import write_report

    run_dir, _ = lifelong.run(stream_config(tiny, "er"))
    folder, _, _ = write_report([run_dir], tmp_path / "report.html")
    assert (folder / "anytime_accuracy.png").stat().st_size > 0
    assert "Anytime accuracy" in (tmp_path / "report.html").read_text()
