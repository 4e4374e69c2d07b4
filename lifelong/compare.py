"""Comparisons: run several variants (methods or settings) × seeds on one benchmark and tabulate them.

An experiment is a base config, a list of variants (each a name plus config overrides), seeds, and
optionally single-task reference runs (forgetting against a_t, document 003) and a task-order sweep
(one task moved through every position). Finished runs are found by their run directory and not redone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lifelong import lock, metrics, store
from lifelong.config import build_config
from lifelong.errors import UserError
from lifelong.executors import Executor, Job


class Variant(BaseModel):
    """One row of the comparison: a name and the config keys it changes (e.g. method, method sections)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("set")
    @classmethod
    def _not_the_seed(cls, changes: dict[str, Any]) -> dict[str, Any]:
        if "seed" in changes:  # it would be overwritten by each of the experiment's seeds
            raise ValueError("a variant cannot set 'seed': list the seeds under `seeds` (or --seeds); every "
                             "variant runs each")
        return changes


class OrderSweep(BaseModel):
    """Move one task (given by its classes) through the listed positions (1-based) of the default order."""

    model_config = ConfigDict(extra="forbid")

    task: list[int]
    positions: list[int] | None = None  # None = every position

    @field_validator("positions")
    @classmethod
    def _distinct(cls, positions: list[int] | None) -> list[int] | None:
        return positions if positions is None else given_once(positions, "position")


class Experiment(BaseModel):
    """A comparison, as in configs/*.yml files with a top-level ``variants`` list."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant]
    seeds: list[int] = Field(default_factory=lambda: [0])
    references: bool = Field(False, description="also run single-task references for forgetting against a_t")
    order_sweep: OrderSweep | None = None

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if not names:
            raise ValueError("give at least one variant (--methods naive,ewc, or a name and its settings under "
                             "`variants`)")
        if len(set(names)) != len(names):
            raise ValueError(f"variants need distinct names, got {names}")
        return variants

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return check_seeds(seeds)


def check_seeds(seeds: list[int]) -> list[int]:
    """At least one seed, none twice: a repeated seed is one run counted twice in the mean and std."""
    if not seeds:
        raise ValueError("give at least one seed, e.g. [0, 1]")
    return given_once(seeds, "seed")


def given_once(values: list[int], what: str) -> list[int]:
    """``values`` when none repeats: a repeated seed or position is one run counted twice in the mean and std."""
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise ValueError(f"{what} {repeated} is given twice in {values}, which would count one run twice; give each "
                         f"{what} once")
    return values


def experiment_from_dict(raw: dict[str, Any]) -> Experiment:
    try:
        return Experiment(**raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"invalid experiment key '{key}': {first['msg'].removeprefix('Value error, ')}") from None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _orders(exp: Experiment) -> list[list[list[int]] | None]:
    """Class orders to run: the configured one, or one per position of the swept task."""
    if exp.order_sweep is None:
        return [None]
    from lifelong.data.benchmarks import default_class_order

    cfg = build_config(exp.base)
    order = cfg.data.class_order or default_class_order(cfg.data.benchmark)
    moved = sorted(exp.order_sweep.task)
    rest = [group for group in order if sorted(group) != moved]
    if len(rest) != len(order) - 1:
        raise UserError(f"order_sweep.task {exp.order_sweep.task} is not one task of the order {order}")
    kept = min(len(order), cfg.data.max_tasks or len(order))
    positions = exp.order_sweep.positions or list(range(1, kept + 1))
    if any(not 1 <= p <= kept for p in positions):
        raise UserError(f"order_sweep.positions must lie in 1..{kept} (the tasks that are trained), got {positions}")
    return [rest[: p - 1] + [exp.order_sweep.task] + rest[p - 1 :] for p in positions]


def plan(exp: Experiment) -> list[dict[str, Any]]:
    """Every run of the experiment: {variant, seed, order, config dict}."""
    runs = []
    variants = list(exp.variants)
    if exp.references:
        reference = Variant(name="single-task", set={"method": "single-task"})
        same_name = next((v for v in variants if v.name == reference.name), None)
        if same_name is None:
            variants.append(reference)
        elif same_name.set != reference.set:  # its rows would be averaged with the references'
            raise UserError("a variant named 'single-task' clashes with the single-task references (references / "
                            "--references); give it another name")
    for order in _orders(exp):
        for variant in variants:
            for seed in exp.seeds:
                raw = _deep_merge(exp.base, variant.set)
                raw["seed"] = seed
                if order is not None:
                    raw = _deep_merge(raw, {"data": {"class_order": order}})
                runs.append({"variant": variant.name, "seed": seed, "order": order, "config": raw})
    return runs


def run_experiment(exp: Experiment, progress: Callable[[int, int, str], None] | None = None,
                   executor: Executor | None = None) -> list[dict[str, Any]]:
    """Run (or find) every planned run with ``executor`` (default: one after another in this process); returns
    the plan entries with ``run_dir``, ``results`` and ``error`` (the message of a run that failed) filled in."""
    from lifelong.executors import Serial

    entries, jobs = _jobs(exp)
    outcomes = (executor or Serial()).map(jobs, progress)
    for entry, job, outcome in zip(entries, jobs, outcomes):
        entry["run_dir"] = Path(outcome.run_dir) if outcome.run_dir else store.run_directory(build_config(job.config))
        entry["results"], entry["error"] = outcome.results, outcome.error
    if progress:
        progress(len(entries), len(entries), "done")
    return entries


def _jobs(exp: Experiment) -> tuple[list[dict[str, Any]], list[Job]]:
    """The plan's entries and one job per entry; every config is validated before anything trains."""
    entries = plan(exp)
    jobs = []
    for i, entry in enumerate(entries):
        cfg = build_config(entry["config"])
        config = cfg.to_dict()  # data_dir is absolute already; out too, for workers in other folders
        config["out"] = os.path.abspath(cfg.out)
        jobs.append(Job(i, f"{entry['variant']} seed {entry['seed']}", config))
    return entries, jobs


def folder(exp: Experiment) -> Path:
    """Where a comparison's tables go: ``<out>/compare-<benchmark>-<hash of the experiment>``."""
    base = build_config(exp.base)
    digest = hashlib.sha256(json.dumps(exp.model_dump(), sort_keys=True).encode()).hexdigest()[:8]
    return Path(base.out) / f"compare-{base.data.benchmark}-{digest}"


def write_plan(exp: Experiment) -> list[Path]:
    """One runnable config file per planned run (``lifelong run --config FILE`` trains it), listed in plan.txt."""
    entries, jobs = _jobs(exp)
    plan_dir = folder(exp) / "plan"
    paths = []
    for entry, job in zip(entries, jobs):
        name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", entry["variant"])[:80]
        path = (plan_dir / f"{job.index:03d}-{name}-seed{entry['seed']}.yml").absolute()
        store.atomic_write_bytes(path, yaml.safe_dump(job.config, sort_keys=False).encode())
        paths.append(path)
    store.atomic_write_bytes(folder(exp) / "plan.txt", "".join(f"{p}\n" for p in paths).encode())
    return paths


def collect(exp: Experiment) -> list[dict[str, Any]]:
    """The plan's entries filled from their run directories alone (no training); an unfinished run is an error."""
    entries, jobs = _jobs(exp)
    for entry, job in zip(entries, jobs):
        cfg = build_config(job.config)
        entry["run_dir"], entry["results"], entry["error"] = store.run_directory(cfg), None, None
        try:
            entry["results"] = store.read_finished(entry["run_dir"], cfg)
        except UserError as err:
            entry["error"] = str(err)
            continue
        if entry["results"] is None:
            held = lock.is_held(entry["run_dir"])  # a killed trainer's lock file stays, unlocked
            entry["error"] = ("not run yet" if not entry["run_dir"].is_dir() else
                              f"being trained by {lock.describe(lock.owner(entry['run_dir']))}" if held else
                              f"unfinished; continue it with `lifelong resume {entry['run_dir']}`")
    return entries


def failures(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that ended in an error: variant, seed, run directory and the error."""
    return [{"variant": e["variant"], "seed": e["seed"], "run_dir": str(e["run_dir"]), "error": e["error"]}
            for e in entries if e.get("results") is None]


def _reference_for(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[float] | None:
    """a_t of the single-task run with the same seed, task sequence and scenario, if the entries hold one."""
    for other in entries:
        mine, theirs = entry["results"], other.get("results")
        if theirs is None:
            continue
        if theirs["method"] == "single-task" and other["seed"] == entry["seed"] and theirs["tasks"] == mine["tasks"] \
                and theirs.get("scenario") == mine.get("scenario"):
            R = other["results"]["acc_matrix"]
            return [R[j][j] for j in range(len(R))]
    return None


MANIFEST_FILE = "runs.json"

COLUMNS = ["variant", "runs", "acc", "bwt", "fwt", "avg_forgetting", "max_forgetting", "avg_forgetting_ref",
           "max_forgetting_ref", "train_seconds"]
HEADERS = {"variant": "variant", "runs": "runs", "acc": "ACC", "bwt": "BWT", "fwt": "FWT", "avg_forgetting": "avg F",
           "max_forgetting": "max F", "avg_forgetting_ref": "avg F (ref)", "max_forgetting_ref": "max F (ref)",
           "train_seconds": "train s"}


def summarize(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: mean and std over its runs of each metric (std 0 for a single run); forgetting against
    the single-task references only when every run of the row has its reference."""
    rows = []
    for name in dict.fromkeys(e["variant"] for e in entries):
        mine = [e for e in entries if e["variant"] == name and e.get("results") is not None]
        values: dict[str, list[float]] = {c: [] for c in COLUMNS[2:]}
        for e in mine:
            r = e["results"]
            for key in ("acc", "bwt", "fwt", "avg_forgetting", "max_forgetting", "train_seconds"):
                if r.get(key) is not None:
                    values[key].append(r[key])
            reference = _reference_for(entries, e)
            if reference is not None:
                values["avg_forgetting_ref"].append(metrics.average_forgetting(r["acc_matrix"], reference))
                values["max_forgetting_ref"].append(metrics.max_forgetting(r["acc_matrix"], reference))
        for key in ("avg_forgetting_ref", "max_forgetting_ref"):  # over every run of the row, or not at all
            if len(values[key]) != len(mine):
                values[key] = []
        row: dict[str, Any] = {"variant": name, "runs": len(mine)}
        for key, vals in values.items():
            row[key] = metrics.mean_std(vals) if vals else None
        rows.append(row)
    return rows


def moved_task_accuracy(results: list[dict[str, Any]], moved: list[int]) -> tuple[list[int], list[float], list[float]]:
    """The positions (1-based, ascending) the moved task takes in the task orders of ``results`` (one dict per run),
    and the mean and std over the runs of its final accuracy at each."""
    by_position: dict[int, list[float]] = {}
    for r in results:
        position = [sorted(g) for g in r["tasks"]].index(sorted(moved))
        by_position.setdefault(position + 1, []).append(r["acc_matrix"][-1][position])
    positions = sorted(by_position)
    stats = [metrics.mean_std(by_position[p]) for p in positions]
    return positions, [m for m, _ in stats], [s for _, s in stats]


def order_sweep_table(entries: list[dict[str, Any]], moved: list[int]) -> list[dict[str, Any]]:
    """Final accuracy of the moved task at each position, per variant, and its spread over positions."""
    rows = []
    for name in dict.fromkeys(e["variant"] for e in entries):
        done = [e["results"] for e in entries if e["variant"] == name and e.get("results") is not None]
        if not done:
            continue
        positions, means, _ = moved_task_accuracy(done, moved)
        rows.append({"variant": name, "final_acc_by_position": dict(zip(positions, means)),
                     "spread": max(means) - min(means)})
    return rows


def fmt(value: Any, digits: int = 4) -> str:
    """``mean ± std`` for a metric, plain text otherwise."""
    if isinstance(value, tuple):
        mean, std = value
        return f"{mean:.{digits}f}±{std:.{digits}f}"
    return "" if value is None else str(value)


def to_markdown(rows: list[dict[str, Any]], failed: list[dict[str, Any]] = ()) -> str:
    """The summary table, then the failed runs with their errors (if any)."""
    lines = ["| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    if failed:
        lines += ["", f"Failed runs ({len(failed)}), left out of the table above:", "",
                  "| variant | seed | run directory | error |", "|---|---|---|---|"]
        lines += [f"| {f['variant']} | {f['seed']} | {f['run_dir']} | {f['error'].replace('|', '/')} |" for f in failed]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Means and standard deviations in separate columns, for spreadsheets and plotting."""
    header = ["variant", "runs"] + [f"{c}_{part}" for c in COLUMNS[2:] for part in ("mean", "std")]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        cells = [row["variant"], row["runs"]]
        for c in COLUMNS[2:]:
            cells += list(row[c]) if row[c] is not None else ["", ""]
        writer.writerow(cells)
    return buffer.getvalue()


def write_manifest(out_dir: Path, entries: list[dict[str, Any]], moved: list[int] | None) -> None:
    """runs.json: the comparison's run directories (relative to ``out_dir``) by variant and seed, and the task an
    order sweep moves, so that ``lifelong report <compare folder>`` finds and names them."""
    runs = [{"variant": e["variant"], "seed": e["seed"], "run_dir": os.path.relpath(e["run_dir"], out_dir)}
            for e in entries if e.get("results") is not None]
    store.write_json(out_dir / MANIFEST_FILE, {"order_sweep_task": moved, "runs": runs, "failed": failures(entries)})


def write_tables(out_dir: Path, rows: list[dict[str, Any]], sweep: list[dict[str, Any]] | None,
                 failed: list[dict[str, Any]] = ()) -> None:
    store.atomic_write_bytes(out_dir / "summary.md", to_markdown(rows, failed).encode())
    store.atomic_write_bytes(out_dir / "summary.csv", to_csv(rows).encode())
    if sweep is not None:
        store.write_json(out_dir / "order_sweep.json", sweep)
