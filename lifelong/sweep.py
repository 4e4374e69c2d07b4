"""Hyperparameter sweeps: grid or random trials run like a comparison, chosen on validation accuracy over every
task seen (never on test data); writes a table of all trials and the chosen config as runnable YAML.

docs/sweeps.md describes the sweep file and the selection.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import random
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lifelong import compare, metrics, store
from lifelong.config import build_config, merge, read_yaml
from lifelong.errors import UserError
from lifelong.executors import Executor

DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int_uniform")


class Sweep(BaseModel):
    """A sweep file: the base config, the searched keys and how to search them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.+-]{1,60}$")
    base: dict[str, Any] = Field(default_factory=dict)
    search: str = Field("grid", pattern="^(grid|random)$")
    trials: int | None = Field(None, gt=0, le=10_000, description="random search: how many trials")
    sample_seed: int = Field(0, ge=0, description="random search: the seed of the draws")
    seeds: list[int] = Field(default_factory=lambda: [0])
    params: dict[str, Any] = Field(min_length=1, description="dotted config key → values or a distribution")
    scheduler: str = Field("none", pattern="^(none|asha)$", description="asha: stop poor runs early (Ray Tune)")
    grace_tasks: int | None = Field(None, ge=1, description="asha: tasks every run trains before it can be stopped")
    reduction_factor: int | None = Field(None, ge=2, description="asha: 1 in this many runs goes on at each rung")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return compare.check_seeds(seeds)

    def asha_options(self) -> dict[str, int]:
        return {"grace_period": self.grace_tasks or 1, "reduction_factor": self.reduction_factor or 2}


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep file's mapping, its ``base`` read when it names a run config (a path relative to the sweep file)."""
    raw = read_yaml(path)
    if isinstance(raw.get("base"), str):
        raw["base"] = read_yaml(Path(path).parent / raw["base"])
    base = raw.setdefault("base", {})
    if not isinstance(base, dict):
        raise UserError(f"the sweep's base must be a config mapping or a config file path, got {str(base)[:60]}")
    return raw


def sweep_from_dict(raw: dict[str, Any]) -> Sweep:
    try:
        sweep = Sweep(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"invalid sweep key '{key}': {first['msg'].removeprefix('Value error, ')}") from None
    for key, spec in sweep.params.items():
        if key in ("seed", "out"):
            raise UserError(f"sweep params cannot vary '{key}': " + ("list the seeds under `seeds` (every trial "
                            "runs each)" if key == "seed" else "set it in `base`"))
        _check_spec(key, spec, sweep.search)
    if sweep.scheduler == "none" and (sweep.grace_tasks or sweep.reduction_factor):
        raise UserError("grace_tasks and reduction_factor set up the asha scheduler; add `scheduler: asha` or "
                        "remove them")
    if sweep.search == "random" and sweep.trials is None:
        raise UserError("a random search needs `trials` (how many configurations to draw)")
    validation = build_config(sweep.base).data.validation
    if validation <= 0:
        raise UserError("a sweep chooses on validation accuracy: set data.validation above 0 in its base "
                        "(e.g. 0.1); test data is never used to choose")
    return sweep


def _check_spec(key: str, spec: Any, search: str) -> None:
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"sweep param '{key}' lists no values")
        return
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS):
        raise UserError(f"sweep param '{key}' must be a list of values or one of {{{', '.join(DISTRIBUTIONS)}: "
                        f"...}}, got {str(spec)[:80]}")
    kind, values = next(iter(spec.items()))
    if kind != "choice" and search == "grid":
        raise UserError(f"a grid search needs a list of values for '{key}', not a {kind} distribution; "
                        "use search: random or list the values")
    if kind != "choice" and not (isinstance(values, list) and len(values) == 2
                                 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                                 and values[0] < values[1] and (kind != "log_uniform" or values[0] > 0)):
        raise UserError(f"sweep param '{key}': {kind} needs [low, high] with low < high"
                        f"{' and low > 0' if kind == 'log_uniform' else ''}, got {values}")


def trials(sweep: Sweep) -> list[dict[str, Any]]:
    """The configurations to try, each a {dotted key: value} dict: the grid's product, or random draws."""
    keys = list(sweep.params)
    if sweep.search == "grid":
        lists = [_values(sweep.params[k]) for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    rng = random.Random(sweep.sample_seed)
    return [{k: _draw(sweep.params[k], rng) for k in keys} for _ in range(sweep.trials)]


def _values(spec: Any) -> list[Any]:
    return spec if isinstance(spec, list) else spec["choice"]


def _draw(spec: Any, rng: random.Random) -> Any:
    if isinstance(spec, list):
        return rng.choice(spec)
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        return rng.choice(values)
    low, high = values
    if kind == "uniform":
        return _round(rng.uniform(low, high))
    if kind == "log_uniform":
        return _round(math.exp(rng.uniform(math.log(low), math.log(high))))
    return rng.randint(int(low), int(high))


def _round(value: float) -> float:
    """Four significant digits: readable trial names and YAML."""
    return float(f"{value:.4g}")


def label(trial: dict[str, Any]) -> str:
    return ",".join(f"{key}={json.dumps(value)}" for key, value in trial.items())


def experiment(sweep: Sweep) -> compare.Experiment:
    """The sweep as a comparison: one variant per trial."""
    variants = []
    for trial in trials(sweep):
        changes: dict[str, Any] = {}
        for key, value in trial.items():
            merge(changes, key.split("."), value)
        variants.append({"name": label(trial), "set": changes})
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):  # random draws from short lists repeat: keep each configuration once
        variants = list({v["name"]: v for v in variants}.values())
    return compare.experiment_from_dict({"base": sweep.base, "variants": variants, "seeds": sweep.seeds})


def folder(sweep: Sweep) -> Path:
    unset = {"scheduler", "grace_tasks", "reduction_factor"} if sweep.scheduler == "none" else set()
    digest = hashlib.sha256(json.dumps(sweep.model_dump(exclude=unset), sort_keys=True).encode()).hexdigest()[:8]
    return Path(build_config(sweep.base).out) / f"sweep-{sweep.name}-{digest}"


def run_sweep(sweep: Sweep, executor: Executor | None = None,
              progress: Callable[[int, int, str], None] | None = None) -> tuple[list[dict[str, Any]], dict | None]:
    """Run every trial × seed; returns the trial table (best first) and the chosen trial (None if all failed).
    ``scheduler: asha`` runs them as Ray Tune trials instead (the executor gives the cluster or how many at once)."""
    if sweep.scheduler == "asha":
        entries = run_asha(sweep, executor, progress)
    else:
        entries = compare.run_experiment(experiment(sweep), progress=progress, executor=executor)
    for entry in entries:
        if entry["results"] is not None:
            entry["val_acc"] = final_validation_accuracy(entry["run_dir"], entry["results"])
    table = trial_table(entries, trials(sweep))
    return table, next((row for row in table if row["error"] is None), None)


def run_asha(sweep: Sweep, executor: Executor | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Every trial × seed as a Ray Tune trial under ASHA: each run reports, after each task, its validation accuracy
    over the tasks seen so far, and ASHA stops the runs that rank low at a rung (a task count). A stopped run keeps
    its checkpoint; its trial is reported as stopped and never chosen. ``--executor ray [--address]``: the
    trials spread over that cluster; else a local Ray instance runs ``--jobs`` of them at once (default one).
    Returns compare.run_experiment's entries."""
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        raise UserError("scheduler: asha needs Ray Tune: pip install 'lifelong[ray]'") from None
    import ray

    from lifelong.data.benchmarks import build_benchmark
    from lifelong.executors.raycluster import RayCluster, _connect

    on_cluster = isinstance(executor, RayCluster)
    at_once = None if on_cluster else getattr(executor, "jobs", 1)

    entries, planned = compare._jobs(experiment(sweep))
    base = build_config(sweep.base)
    tasks = len(build_benchmark(base.data, base.seed).tasks)
    scheduler = ASHAScheduler(time_attr="tasks", metric="val_acc", mode="max", max_t=tasks, **sweep.asha_options())
    trainable = tune.with_resources(tune.with_parameters(_tune_run, configs=[job.config for job in planned], tasks=tasks),
                                    {"cpu": 1, "gpu": 1 if base.device == "cuda" else 0})
    started = not ray.is_initialized()
    if started:
        _connect(ray, executor.address if on_cluster else None)
    try:
        tuner = tune.Tuner(trainable, param_space={"index": tune.grid_search(list(range(len(planned))))},
                           tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=at_once),
                           run_config=tune.RunConfig(name="asha", storage_path=str((folder(sweep) / "tune").resolve()),
                                                     verbose=0))
        results = {r.config["index"]: r for r in tuner.fit()}
    finally:
        if started:
            ray.shutdown()
    for i, (entry, job) in enumerate(zip(entries, planned)):
        cfg = build_config(job.config)
        entry["run_dir"], entry["results"], entry["error"] = store.run_directory(cfg), None, None
        result = results.get(i)
        reached = (result.metrics or {}).get("tasks", 0) if result is not None else 0
        if result is not None and result.error is not None:
            entry["error"] = _error_line(result.error)
        elif reached < tasks:
            entry["error"] = (f"stopped by asha after {reached} of {tasks} tasks (val ACC over the tasks seen "
                              f"{result.metrics.get('val_acc', float('nan')):.4f})" if reached else "not run")
        else:
            entry["results"] = store.read_finished(entry["run_dir"], cfg)
        if progress:
            progress(i + 1, len(entries), entry["variant"])
    return entries


def _tune_run(config: dict[str, Any], configs: list[dict[str, Any]], tasks: int) -> None:
    """One Ray Tune trial: one run, reporting its validation accuracy over the tasks seen after each task (the
    last task's once results.json is written: Tune ends a trial at its last report)."""
    from ray import tune

    from lifelong.executors.base import run_job

    reported: list[float] = []

    def report(rows: list[list[float]]) -> None:
        for row in rows[len(reported):tasks]:
            reported.append(sum(row[: len(reported) + 1]) / (len(reported) + 1))
            tune.report({"tasks": len(reported), "val_acc": reported[-1]})

    outcome = run_job(configs[config["index"]], 1, on_checkpoint=lambda state: report(state.val_rows[: tasks - 1]))
    if outcome.error is not None:
        raise UserError(outcome.error)
    report(outcome.results.get("val_acc_matrix") or [])  # a run found finished reports its rows now


def _error_line(err: BaseException) -> str:
    """The message a trial failed with: the last non-empty line of Ray's error (its traceback comes first)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else type(err).__name__


def final_validation_accuracy(run_dir: Path, results: dict[str, Any]) -> float:
    """Mean validation accuracy over every task seen, after the last task: results.json's ``val_acc_matrix`` when
    the loop records it, else the final checkpoint evaluated on each task's validation split."""
    matrix = results.get("val_acc_matrix")
    if matrix:
        return sum(matrix[-1]) / len(matrix[-1])
    return sum(_evaluate_validation(run_dir)) / len(results["acc_matrix"][-1])


def _evaluate_validation(run_dir: Path) -> list[float]:
    """The run's final state (its last checkpoint) on the validation split of every task it trained."""
    from lifelong.data.batches import TaskView
    from lifelong.data.benchmarks import build_benchmark
    from lifelong.learner import Learner, on_device, resolve_device
    from lifelong.loop import evaluate

    cfg = store.read_config(run_dir)
    checkpoint = store.load_checkpoint(run_dir)
    if checkpoint is None or checkpoint.get("fingerprint") != cfg.fingerprint():
        raise UserError(f"'{run_dir}' has no final checkpoint of its config to measure validation accuracy with; "
                        "delete the run directory and sweep again")
    device = resolve_device(cfg.device)
    benchmark = build_benchmark(cfg.data, cfg.seed)
    learner = Learner.for_benchmark(cfg, benchmark, device)
    learner.method.load_state_dict(on_device(checkpoint["method"], device))
    learner.method.model.eval()
    views = [TaskView(t, t.val, device) for t in benchmark.tasks if t.val is not None]
    if len(views) != len(benchmark.tasks):
        raise UserError(f"'{run_dir}' has no validation split; sweeps need data.validation above 0")
    import torch

    with torch.inference_mode():
        return [evaluate(learner, view, cfg.train.eval_batch_size) for view in views]


def trial_table(entries: list[dict[str, Any]], tried: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial: its settings, mean ± std over seeds of validation ACC (the choice) and test figures
    (reported, never used to choose), the runs and errors; sorted best first, failed trials last."""
    rows = []
    for trial in {label(t): t for t in tried}.values():
        mine = [e for e in entries if e["variant"] == label(trial)]
        done = [e for e in mine if e["results"] is not None]
        errors = [e["error"] for e in mine if e["results"] is None]
        row = {"trial": label(trial), "params": trial, "runs": len(done), "error": errors[0] if errors else None,
               "run_dirs": [str(e["run_dir"]) for e in mine]}
        for key, values in (("val_acc", [e["val_acc"] for e in done]), ("acc", [e["results"]["acc"] for e in done]),
                            ("bwt", [e["results"]["bwt"] for e in done]),
                            ("train_seconds", [e["results"]["train_seconds"] for e in done])):
            row[key] = metrics.mean_std(values) if values and not errors else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["error"] is not None, -(r["val_acc"] or (0.0, 0))[0]))


def to_markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0]["params"]) if rows else []
    header = ["rank", *keys, "runs", "val ACC (chosen on)", "test ACC", "test BWT", "train s", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), *[json.dumps(row["params"][k]) for k in keys], str(row["runs"]),
                 compare.fmt(row["val_acc"]), compare.fmt(row["acc"]), compare.fmt(row["bwt"]),
                 compare.fmt(row["train_seconds"], 1), (row["error"] or "").replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0]["params"]) if rows else []
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*keys, "runs", *[f"{m}_{p}" for m in ("val_acc", "acc", "bwt", "train_seconds")
                                      for p in ("mean", "std")], "error"])
    for row in rows:
        cells = [*[json.dumps(row["params"][k]) for k in keys], row["runs"]]
        for m in ("val_acc", "acc", "bwt", "train_seconds"):
            cells += list(row[m]) if row[m] is not None else ["", ""]
        writer.writerow(cells + [row["error"] or ""])
    return buffer.getvalue()


def best_config(sweep: Sweep, best: dict[str, Any], source: str | None = None) -> str:
    """The chosen trial as a runnable config file: the base with its settings, under a comment with the figures."""
    raw = json.loads(json.dumps(sweep.base))
    for key, value in best["params"].items():
        merge(raw, key.split("."), value)
    raw.pop("out", None)
    raw.get("data", {}).pop("data_dir", None)  # the machine's folders are not part of a setting
    raw["seed"] = sweep.seeds[0]
    build_config(raw)
    val, acc = best["val_acc"], best["acc"]
    where = f" --config {source}" if source else ""
    header = (f"# Chosen by `lifelong sweep{where}` ({sweep.name}, {sweep.search} search) on validation accuracy "
              f"over every task seen:\n# {best['trial']}\n# val ACC {val[0]:.4f} ± {val[1]:.4f}, test ACC {acc[0]:.4f} ± "
              f"{acc[1]:.4f} (test reported, never used to choose), seeds {sweep.seeds}\n")
    return header + yaml.safe_dump(raw, sort_keys=False)


def write_outputs(sweep: Sweep, rows: list[dict[str, Any]], best: dict[str, Any] | None,
                  extra_best: Path | None = None, source: str | None = None) -> Path:
    """trials.md, trials.csv, trials.json and best.yml in the sweep's folder (best.yml also at ``extra_best``)."""
    out = folder(sweep)
    store.atomic_write_bytes(out / "trials.md", to_markdown(rows).encode())
    store.atomic_write_bytes(out / "trials.csv", to_csv(rows).encode())
    store.write_json(out / "trials.json", rows)
    if best is not None:
        text = best_config(sweep, best, source).encode()
        store.atomic_write_bytes(out / "best.yml", text)
        if extra_best is not None:
            store.atomic_write_bytes(extra_best, text)
    return out
