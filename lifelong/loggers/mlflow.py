"""MLflow tracking (``logger: [mlflow]``, the optional extra ``lifelong[mlflow]``): one MLflow run per run
directory, found again by its tags on resume; settings, names and what is logged: docs/tracking.md."""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

try:
    import fcntl
except ImportError:  # Windows: no lock; start one run first when several share a new SQLite store
    fcntl = None

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lifelong.errors import UserError
from lifelong.loggers.base import Logger

RUN_DIR_TAG, COMPARE_TAG = "lifelong.run_dir", "lifelong.compare_dir"  # the run directory (compare folder), resolved
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the run under that one


class MlflowSettings(BaseModel):
    """Config section ``mlflow`` (not part of a run's identity)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    uri: str | None = Field(None, description="tracking URI: sqlite:///PATH.db, http(s)://HOST:PORT or a folder; "
                            "none = $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db here)")
    experiment: str = Field("lifelong", min_length=1, description="MLflow experiment the runs go to (made if new)")
    artifacts: str | None = Field(None, description="artifact folder or URI of a new experiment; none = beside the "
                                  "SQLite file (sqlite URIs) or the server's default")

    @field_validator("uri", "artifacts")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Relative paths (``sqlite:///x.db``, ``mlruns``) made absolute, so a resume from elsewhere finds them."""
        if value is not None and urlsplit(value).password is not None:  # it would be saved in config.yaml
            raise ValueError("a password in the URI would be written to config.yaml and results.json; give it in "
                             "MLFLOW_TRACKING_PASSWORD (and the user in MLFLOW_TRACKING_USERNAME)")
        if value is not None and value.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://"):
            raise ValueError("sqlite:// is an in-memory store, lost when the process ends; give a file, "
                             "sqlite:///PATH.db")
        if value is None or value.startswith("sqlite:////"):
            return value
        if value.startswith("sqlite:///"):
            return "sqlite:///" + os.path.abspath(value[len("sqlite:///"):])
        return value if "://" in value or value.startswith("databricks") else os.path.abspath(value)


def settings_of(config: dict[str, Any]) -> MlflowSettings:
    return MlflowSettings(**(config.get("mlflow") or {}))


def mlflow_client(settings: MlflowSettings) -> tuple[Any, str]:
    """An MlflowClient for the settings and the id of their experiment (created when new)."""
    try:
        from mlflow.tracking import MlflowClient, get_tracking_uri
    except ImportError:
        raise UserError("logger 'mlflow' needs the mlflow package: pip install 'lifelong[mlflow]' (or pip install "
                        "mlflow), or set logger: none") from None
    uri = settings.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    resolved = uri or get_tracking_uri()
    database = Path(resolved[len("sqlite:///"):]) if resolved.startswith("sqlite:///") else None
    if database is not None:  # MLflow would retry a store it cannot open for minutes
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        if not database.parent.is_dir() or not os.access(database.parent, os.W_OK):
            raise UserError(f"MLflow store '{resolved}': cannot write to the folder '{database.parent}'; set "
                            "mlflow.uri to a SQLite file in a writable folder")
    with tracking_errors(resolved), _creation_lock(database):  # runs of `compare --jobs N` start at once
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            return client, experiment.experiment_id
        artifacts = settings.artifacts
        if artifacts is None and database is not None:
            artifacts = str(database.parent / "mlartifacts")
        return client, client.create_experiment(settings.experiment, artifact_location=artifacts)


@contextmanager
def _creation_lock(database: Path | None) -> Iterator[None]:
    """Hold ``<database>.lock`` while a SQLite store and its experiment are made: processes creating its tables or
    the same experiment at once would clash."""
    if database is None or fcntl is None:
        yield
        return
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class tracking_errors:  # noqa: N801 - used as a context manager
    """MLflow's errors (store unreachable, bad URI, refused values) as one-line UserErrors."""

    def __init__(self, where: Any = "the tracking store"):
        self.where = where if isinstance(where, str) else getattr(where, "tracking_uri", "the tracking store")

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _tb) -> bool:
        if err is None or isinstance(err, (UserError, KeyboardInterrupt, SystemExit)) or not isinstance(err, Exception):
            return False
        where = redact(self.where)
        if isinstance(err, ImportError):  # a database store whose driver is not installed (postgresql, mysql)
            raise UserError(f"MLflow store '{where}' needs a package that is not installed ({err.name or err}; a "
                            "database store needs its driver, an s3:// artifact store boto3): pip install it, or "
                            "use sqlite:///PATH.db") from None
        module = type(err).__module__.split(".")[0]
        if module in ("mlflow", "requests", "urllib3", "sqlalchemy", "alembic") or isinstance(err, (OSError, ValueError)):
            text = redact(str(err))
            if "filesystem tracking backend" in text and "maintenance mode" in text:
                raise UserError(f"MLflow ({where}) no longer writes to a folder unless MLFLOW_ALLOW_FILE_STORE=true "
                                "is set; use a SQLite file instead (mlflow.uri: sqlite:///PATH.db)") from None
            first = (text.strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(f"MLflow ({where}): {first}; check mlflow.uri (docs/tracking.md)") from None
        return False


def redact(text: str) -> str:
    """``text`` with the user and password of any URI in it replaced by ***."""
    return re.sub(r"(?<=://)[^/@\s:']+(:[^/@\s']*)?@", "***@", str(text))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: ``a.b`` keys, values as JSON (strings as they are)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def metrics_of(record: dict[str, Any], epochs: int, tasks: int) -> list[tuple[str, float, int]]:
    """(key, value, step) of one metrics.jsonl record; ``epochs`` and ``tasks`` count the records before it."""
    event = record["event"]
    if event == "epoch":
        keys = {"train_loss": "train_loss", "val_acc": "val_acc", "seconds": "epoch_seconds"}
        return [(name, float(record[key]), epochs + 1) for key, name in keys.items() if key in record]
    if event == "anytime":
        return [("anytime_acc", sum(record["acc"]) / len(record["acc"]), int(record["samples"]))]
    if event not in ("random_init", "task"):
        return []
    step = tasks + (event == "task")
    out = [(f"test_acc/task_{j + 1}", float(a), step) for j, a in enumerate(record["acc"])]
    out += [(f"probe_acc/task_{j + 1}", float(a), step) for j, a in enumerate(record.get("probe", []))]
    if event == "task":
        seen = record["acc"][: record["task"] + 1]
        out.append(("acc_seen", sum(seen) / len(seen), step))
    return out


class MlflowLogger(Logger):
    """Params (the config, flattened), per-epoch and per-task metrics, and at the end the summary metrics, the
    accuracy matrix and the run's files as artifacts; a resumed run continues its MLflow run without duplicates."""

    name = "mlflow"
    description = "MLflow tracking: a local SQLite store or a server (mlflow.uri; pip install 'lifelong[mlflow]')"

    def start(self, run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.run_dir, self.epochs, self.tasks = run_dir, 0, 0
        self.client, experiment = mlflow_client(settings_of(config))
        with tracking_errors(self.client):
            found = find_run(self.client, experiment, RUN_DIR_TAG, run_dir) if history else None
            if found is not None:
                self.run_id = found.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                self.logged = {(key, m.step) for key in found.data.metrics
                               for m in self.client.get_metric_history(self.run_id, key)}
            else:
                tags = {RUN_DIR_TAG: str(run_dir.resolve()), "lifelong.method": str(config.get("method"))}
                self.run_id = self.client.create_run(experiment, tags=tags, run_name=run_dir.name).info.run_id
                self.logged = set()
                log_params(self.client, self.run_id, flatten(config))
                for earlier in unfinished_runs(self.client, experiment, run_dir):  # an attempt killed before its
                    if earlier.info.run_id != self.run_id:  # first checkpoint: this start replaces it
                        self.client.set_tag(earlier.info.run_id, "lifelong.superseded_by", self.run_id)
                        self.client.set_terminated(earlier.info.run_id, status="KILLED")
            for record in history:
                self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [p for p in metrics_of(record, self.epochs, self.tasks) if (p[0], p[2]) not in self.logged]
        self.epochs += record["event"] == "epoch"
        self.tasks += record["event"] == "task"
        if points:
            with tracking_errors(self.client):
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, s) for k, v, s in points])
            self.logged.update((k, s) for k, _, s in points)

    def finish(self, results: dict[str, Any] | None, files: dict[str, Path]) -> None:
        with tracking_errors(self.client):
            if results is None:
                self.client.set_terminated(self.run_id, status="FAILED")  # `lifelong resume` continues it
                return
            log_results(self.client, self.run_id, results, files, self.run_dir)
            self.client.set_terminated(self.run_id, status="FINISHED")


def find_run(client: Any, experiment: str, tag: str, folder: Path) -> Any:
    """The latest MLflow run whose ``tag`` names ``folder`` (a run directory, a compare folder), or None."""
    runs = _tagged_runs(client, experiment, tag, folder, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _tagged_runs(client: Any, experiment: str, tag: str, folder: Path, **search: Any) -> list[Any]:
    """The MLflow runs whose ``tag`` names ``folder`` (resolved)."""
    quoted = str(folder.resolve()).replace("'", "\\'")
    return client.search_runs([experiment], filter_string=f"tags.`{tag}` = '{quoted}'", **search)


def unfinished_runs(client: Any, experiment: str, run_dir: Path) -> list[Any]:
    """The MLflow runs of ``run_dir`` that never finished (killed or failed attempts)."""
    runs = _tagged_runs(client, experiment, RUN_DIR_TAG, run_dir, max_results=100)
    return [r for r in runs if r.info.status != "FINISHED"]


def log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
        client.log_batch(run_id, params=items[start : start + 100])


def log_results(client: Any, run_id: str, results: dict[str, Any], files: dict[str, Path], run_dir: Path) -> None:
    """Summary metrics, the accuracy matrix (CSV), the run's files and its diagnostics as artifacts."""
    from mlflow.entities import Metric

    now, step = int(time.time() * 1000), len(results["acc_matrix"])
    keys = ("acc", "bwt", "fwt", "avg_forgetting", "max_forgetting", "train_seconds", "peak_rss_mb")
    summary = [Metric(k, float(results[k]), now, step) for k in keys if results.get(k) is not None]
    if results.get("anytime"):
        summary.append(Metric("anytime_average", float(results["anytime"]["average"]), now, step))
    client.log_batch(run_id, metrics=summary)
    rows = results["acc_matrix"]
    header = "after_task," + ",".join(f"task_{j + 1}" for j in range(len(rows[0]))) + "\n"
    client.log_text(run_id, header + "".join(f"{i + 1}," + ",".join(f"{v:.6f}" for v in row) + "\n"
                                             for i, row in enumerate(rows)), "acc_matrix.csv")
    if results.get("probe_matrix"):
        client.log_dict(run_id, {"probe_matrix": results["probe_matrix"]}, "probe_matrix.json")
    for path in files.values():
        client.log_artifact(run_id, str(path))
    if (run_dir / "diagnostics").is_dir():
        client.log_artifacts(run_id, str(run_dir / "diagnostics"), "diagnostics")
