"""Issue 21: logger mlflow against a real local SQLite store, read back through MLflow's client: the config as
params, per-epoch and per-task metrics, results and files as artifacts, a resume without duplicated points, and a
comparison as one parent run with a child run per run."""

import sys
from pathlib import Path

import pytest

from lifelong import store
from lifelong.cli import main
from lifelong.config import build_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tracking(tmp_path):
    """(URI of a fresh SQLite store, a client on it)."""
    pytest.importorskip("mlflow", reason="the optional extra lifelong[mlflow] is not installed")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, MlflowClient(uri)


def runs_of(client, experiment="lifelong"):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def history(client, run):
    """{metric: [(step, value)]} of an MLflow run."""
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}


def artifacts(client, run, path=None):
    return sorted(a.path for a in client.list_artifacts(run.info.run_id, path))


def test_a_run_and_its_resume_in_mlflow(tiny, tracking, crash_and_resume, capsys):
    uri, client = tracking
    config = tiny(train={"epochs": 2, "probe": True})
    argv = ["run", "--out", config["out"], "--max-tasks", "3", "--train-fraction", "0.3", "--epochs", "2", "--quiet",
            "--set", "model.hidden=[32]", "--set", "data.validation=0.1", "--device", "cpu", "--probe",
            "--logger", "mlflow", "--set", f"mlflow.uri={uri}"]
    assert main(argv) == 0
    (run,) = runs_of(client)
    run_dir = next(p.parent for p in Path(config["out"]).glob("*/results.json"))
    results = store.read_results(run_dir)
    assert run.info.status == "FINISHED" and run.data.tags["lifelong.run_dir"] == str(run_dir.resolve())
    assert run.data.params["method"] == "naive" and run.data.params["train.epochs"] == "2"
    assert run.data.params["model.hidden"] == "[32]" and "mlflow.uri" in run.data.params
    logged = history(client, run)
    R, init = results["acc_matrix"], results["random_init_acc"]
    assert logged["test_acc/task_2"] == [(0, pytest.approx(init[1])), *[(i + 1, pytest.approx(R[i][1])) for i in range(3)]]
    assert logged["probe_acc/task_1"][-1] == (3, pytest.approx(results["probe_matrix"][2][0]))
    assert [s for s, _ in logged["train_loss"]] == list(range(1, 7))
    assert logged["acc"] == [(3, pytest.approx(results["acc"]))]
    assert {"acc_matrix.csv", "config.yaml", "metrics.jsonl", "model.safetensors", "results.json",
            "report"} <= set(artifacts(client, run))
    assert "report/report.html" in artifacts(client, run, "report")

    mlflow_cfg = tiny(seed=1, logger="mlflow", mlflow={"uri": uri, "experiment": "resumed"}, train={"epochs": 2})
    crashed, _ = crash_and_resume(mlflow_cfg, [(1, 1), (2, 0)])
    fresh = {**mlflow_cfg, "out": str(crashed.parent.parent / "fresh"), "mlflow": {"uri": uri, "experiment": "fresh"}}
    from lifelong import run as train

    train(fresh)
    (resumed,), (uninterrupted,) = runs_of(client, "resumed"), runs_of(client, "fresh")
    assert resumed.info.status == "FINISHED"
    a, b = history(client, resumed), history(client, uninterrupted)
    a.pop("epoch_seconds"), b.pop("epoch_seconds"), a.pop("train_seconds"), b.pop("train_seconds")
    a.pop("peak_rss_mb"), b.pop("peak_rss_mb")
    assert a == b  # one point per step: nothing logged twice across the crashes, nothing missing


def test_compare_is_one_parent_run_with_a_child_per_run(tiny, tracking, tmp_path, capsys):
    uri, client = tracking
    base = tiny(train={"epochs": 1})
    argv = ["compare", "--methods", "naive,ewc", "--seeds", "0", "--out", str(tmp_path / "cmp"), "--max-tasks", "2",
            "--train-fraction", "0.2", "--epochs", "1", "--set", "model.hidden=[16]", "--device", "cpu",
            "--set", "logger=mlflow", "--set", f"mlflow.uri={uri}", "--set", f"data.benchmark={base['data']['benchmark']}"]
    assert main(argv) == 0
    runs = runs_of(client)
    (parent,) = [r for r in runs if "lifelong.compare_dir" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["lifelong.variant"] for r in children) == ["ewc", "naive"] and len(runs) == 3
    assert all(r.info.status == "FINISHED" and "results.json" in artifacts(client, r) for r in children)
    assert {"acc/naive", "acc/ewc"} <= set(parent.data.metrics)
    assert {"summary.md", "summary.csv", "runs.json", "report"} <= set(artifacts(client, parent))
    assert parent.info.run_id in capsys.readouterr().out

    assert main(argv) == 0  # again: the same parent, the same children, nothing new
    assert len(runs_of(client)) == 3
    naive = next(r for r in children if r.data.tags["lifelong.variant"] == "naive")
    client.delete_run(naive.info.run_id)  # as if it had been trained without the logger
    assert main(argv) == 0
    runs = runs_of(client)
    rebuilt = next(r for r in runs if r.data.tags.get("lifelong.variant") == "naive")
    assert len(runs) == 3 and rebuilt.info.run_id != naive.info.run_id  # made again from its run directory
    assert rebuilt.data.tags["mlflow.parentRunId"] == parent.info.run_id and rebuilt.info.status == "FINISHED"
    assert rebuilt.data.metrics["acc"] == naive.data.metrics["acc"] and "results.json" in artifacts(client, rebuilt)


def test_without_mlflow_the_logger_is_a_user_error(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    config = tiny()
    assert main(["run", "--out", config["out"], "--max-tasks", "1", "--logger", "mlflow", "--quiet",
                 "--set", "model.hidden=[8]", "--train-fraction", "0.1", "--epochs", "1"]) == 2
    assert "pip install 'lifelong[mlflow]'" in capsys.readouterr().err


def test_mlflow_settings_are_checked_and_not_part_of_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config({"logger": "mlflow", "mlflow": {"uri": "sqlite:///m.db", "artifacts": "art"}})
    assert cfg.mlflow.uri == f"sqlite:///{tmp_path}/m.db" and cfg.mlflow.artifacts == str(tmp_path / "art")
    assert cfg.fingerprint() == build_config({}).fingerprint() and "mlflow" not in build_config({}).to_dict()
    with pytest.raises(Exception, match="mlflow.colour"):
        build_config({"mlflow": {"colour": "red"}})


def test_a_store_that_cannot_be_written_is_one_line_and_no_run_directory(tiny, tracking, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    config = tiny()
    assert main(["run", "--out", config["out"], "--max-tasks", "1", "--logger", "mlflow", "--quiet",
                 "--set", f"mlflow.uri=sqlite:///{tmp_path}/a_file/m.db", "--train-fraction", "0.1", "--epochs", "1",
                 "--set", "model.hidden=[8]"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the folder" in err and len(err.strip().splitlines()) == 1
    assert not Path(config["out"]).exists() or not list(Path(config["out"]).iterdir())


def test_processes_starting_on_a_new_sqlite_store_at_once_share_it(tracking, tmp_path):
    """`compare --jobs N`: workers that make the store's tables and the experiment at once would clash."""
    import subprocess

    uri, client = tracking
    code = ("import sys; from lifelong.loggers.mlflow import MlflowSettings, mlflow_client; "
            "print(mlflow_client(MlflowSettings(uri=sys.argv[1], experiment='shared'))[1])")
    workers = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [err[-300:] for _, err in outputs]
    ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert ids == {client.get_experiment_by_name("shared").experiment_id}


def test_uri_credentials_are_refused_and_never_echoed(tmp_path, capsys):
    """A password in mlflow.uri would land in config.yaml and results.json: refused, the message masking it; a user
    name alone is accepted but masked in messages; an in-memory SQLite store (lost at exit) is refused."""
    from lifelong.errors import UserError
    from lifelong.loggers.mlflow import redact, tracking_errors

    code = main(["run", "--benchmark", "quickstart", "--logger", "mlflow", "--set",
                 "mlflow.uri=http://alice:S3CRET@127.0.0.1:9/", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "MLFLOW_TRACKING_PASSWORD" in err and "S3CRET" not in err and "alice" not in err
    assert main(["run", "--logger", "mlflow", "--set", "mlflow.uri=sqlite://", "--out", str(tmp_path)]) == 2
    assert "in-memory store" in capsys.readouterr().err
    masked = redact("MLflow (http://bob@h:1/x): to http://bob:pw@h:1/api")
    assert masked == "MLflow (http://***@h:1/x): to http://***@h:1/api"
    with pytest.raises(UserError, match=r"'postgresql://\*\*\*@h/db' needs a package that is not installed "
                                        r"\(psycopg; a database store needs its driver"):
        with tracking_errors("postgresql://bob@h/db"):
            raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")


def test_an_attempt_killed_before_its_first_checkpoint_is_marked_superseded(tiny, tracking, tmp_path):
    """A run killed before any checkpoint starts over; the MLflow run of the killed attempt (left RUNNING) is
    closed as KILLED and points at the run that replaced it, so the run directory has one live MLflow run."""
    from lifelong import run as train
    from lifelong.config import build_config
    from lifelong.loggers.mlflow import RUN_DIR_TAG

    uri, client = tracking
    cfg = build_config(tiny(logger="mlflow", mlflow={"uri": uri}, train={"epochs": 1}))
    experiment = client.create_experiment("lifelong", artifact_location=str(tmp_path / "mlartifacts"))
    run_dir = store.run_directory(cfg)
    killed = client.create_run(experiment, tags={RUN_DIR_TAG: str(run_dir.resolve())}).info.run_id
    train(cfg)
    runs = {r.info.run_id: r for r in runs_of(client)}
    (finished,) = [r for r in runs.values() if r.info.status == "FINISHED"]
    assert runs[killed].info.status == "KILLED"
    assert runs[killed].data.tags["lifelong.superseded_by"] == finished.info.run_id
