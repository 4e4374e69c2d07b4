"""MLflow beyond one run's logger (docs/tracking.md): a run's report as an artifact of its MLflow run, and a
comparison as one parent MLflow run whose children are its runs' MLflow runs."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifelong import compare, store
from lifelong.config import Config
from lifelong.errors import UserError, first_line
from lifelong.loggers.mlflow import (COMPARE_TAG, PARENT_TAG, RUN_DIR_TAG, MlflowLogger, find_run, flatten,
                                     log_params, mlflow_client, settings_of, tracking_errors)
from lifelong.report import write_report


def uses_mlflow(cfg: Config) -> bool:
    return "mlflow" in cfg.logger


def log_report(run_dir: Path, cfg: Config) -> None:
    """Attach the run's HTML report (figures and "Inside the model") to its MLflow run."""
    client, experiment = mlflow_client(settings_of(cfg.to_dict()))
    with tracking_errors(client):
        found = find_run(client, experiment, RUN_DIR_TAG, run_dir)
        if found is not None:
            _attach_report(client, found.info.run_id, [run_dir])


def _attach_report(client: Any, run_id: str, paths: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with _not_mlflow():  # the report's own errors are not the store's
            write_report(paths, Path(tmp) / "report.html")
        client.log_artifact(run_id, str(Path(tmp) / "report.html"), "report")
        client.log_artifacts(run_id, str(Path(tmp) / "report_figures"), "report/figures")


@contextmanager
def _not_mlflow() -> Iterator[None]:
    """Errors raised inside are shown as they are, not as the tracking store's (``tracking_errors`` around)."""
    try:
        yield
    except (OSError, ValueError) as err:
        raise UserError(f"the report for MLflow could not be written: {first_line(err)}") from None


def child_run(client: Any, experiment: str, run_dir: Path, settings: dict[str, Any]) -> str:
    """The MLflow run of ``run_dir``, made from its files in the store of ``settings`` (the parent's) when it has
    none (a run trained without the logger)."""
    found = find_run(client, experiment, RUN_DIR_TAG, run_dir)
    if found is not None:
        return found.info.run_id
    logger = MlflowLogger()
    logger.start(run_dir, {**store.read_config(run_dir).to_dict(), "mlflow": settings}, store.read_metrics(run_dir))
    logger.finish(store.read_results(run_dir), store.run_files(run_dir))
    return logger.run_id


def log_compare(out_dir: Path, entries: list[dict[str, Any]], base: Config) -> str:
    """One parent MLflow run for the comparison in ``out_dir`` (found again when it is run again): its settings,
    each variant's mean metrics, the summary tables and the report; every finished run becomes its child."""
    from mlflow.entities import Metric

    settings = settings_of(base.to_dict())
    client, experiment = mlflow_client(settings)
    with tracking_errors(client):
        found = find_run(client, experiment, COMPARE_TAG, out_dir)
        if found is None:
            parent = client.create_run(experiment, tags={COMPARE_TAG: str(out_dir.resolve())},
                                       run_name=out_dir.name).info.run_id
            log_params(client, parent, flatten({k: v for k, v in base.to_dict().items() if k != "seed"}))
        else:
            parent = found.info.run_id
            client.update_run(parent, status="RUNNING")
        finished = [e for e in entries if e.get("results") is not None]
        for entry in finished:
            child = child_run(client, experiment, Path(entry["run_dir"]), settings.model_dump())
            client.set_tag(child, PARENT_TAG, parent)
            client.set_tag(child, "lifelong.variant", entry["variant"])
        metrics = []
        for row in compare.summarize(finished):
            name = re.sub(r"[^A-Za-z0-9_. /-]+", "_", row["variant"])[:200]
            metrics += [Metric(f"{key}/{name}", float(row[key][0]), 0, 0)
                        for key in ("acc", "bwt", "fwt", "avg_forgetting", "max_forgetting") if row.get(key)]
        if metrics:
            client.log_batch(parent, metrics=metrics)
        for name in ("summary.md", "summary.csv", compare.MANIFEST_FILE):
            if (out_dir / name).is_file():
                client.log_artifact(parent, str(out_dir / name))
        if finished and (out_dir / compare.MANIFEST_FILE).is_file():
            _attach_report(client, parent, [out_dir])
        client.set_terminated(parent, status="FINISHED" if len(finished) == len(entries) else "FAILED")
    return parent
