"""The report's data: run directories → variants (runs that differ only in the seed) → table rows, curves and
figure specs, as pure functions of results.json and metrics.jsonl (report.py turns them into HTML).

Paths may be run directories, compare folders (their runs.json names the runs and their variants) and folders
holding run directories (e.g. ``runs/``). A variant is named after its compare variant or its method; variants
that would share a name get the config keys that tell them apart. Variants that differ only in the order of the
tasks form an order sweep: the final accuracy of the moved task against its position.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lifelong import compare, store
from lifelong.errors import UserError
from lifelong.metrics import mean_std_over_seeds

NOT_SETTINGS = ("seed", "out", "logger", "mlflow")  # keys that do not make two runs different variants


@dataclass
class Run:
    path: Path
    results: dict[str, Any]
    variant: str | None = None  # the compare variant that made it, from runs.json


@dataclass
class Variant:
    """Runs whose configs differ only in the seed; ``family`` names the variant without its task order."""

    label: str
    family: str
    runs: list[Run]

    def stack(self, key: str) -> np.ndarray:
        return np.array([r.results[key] for r in self.runs], dtype=np.float64)


@dataclass
class Collection:
    runs: list[Run] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # unfinished runs found inside a folder
    moved: list[int] | None = None  # the task an order sweep moves, from runs.json


def _load(run_dir: Path, variant: str | None = None) -> Run:
    results = store.read_for_viewing(run_dir)
    if results is None:
        raise UserError(f"run '{run_dir}' has no results.json (it did not finish); finish it with "
                        f"`lifelong resume {run_dir}` or leave it out")
    return Run(run_dir, results, variant)


def collect(paths: list[str | Path]) -> Collection:
    """The finished runs under ``paths``; a path that is neither a run nor holds runs is a user error."""
    found = Collection()
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"'{path}' is not a directory; pass run directories, compare folders or folders of runs")
        manifest = path / compare.MANIFEST_FILE
        if (path / store.CONFIG_FILE).is_file():
            found.runs.append(_load(path))
        elif manifest.is_file():
            try:
                listed = json.loads(manifest.read_text())
                entries = [((path / r["run_dir"]).resolve(), r["variant"]) for r in listed["runs"]]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"'{manifest}' is damaged; run the same `lifelong compare` again to rewrite it "
                                "(finished runs are reused)") from None
            found.moved = found.moved or listed.get("order_sweep_task")
            found.runs += [_load(run_dir, variant) for run_dir, variant in entries]
        else:
            children = sorted(d for d in path.iterdir() if (d / store.CONFIG_FILE).is_file())
            if not children:
                raise UserError(f"'{path}' is not a run directory and holds none (no {store.CONFIG_FILE}); pass "
                                "directories made by `lifelong run` or `lifelong compare`")
            for child in children:
                if (child / store.RESULTS_FILE).is_file():
                    found.runs.append(_load(child))
                else:
                    found.skipped.append(child)
    unique: dict[Any, Run] = {}
    for run in found.runs:  # the same run reached twice keeps its compare variant name
        key = run.results.get("fingerprint") or run.path.resolve()  # a copy of a run is the same run
        if key in unique and unique[key].path.resolve() != run.path.resolve():
            warnings.warn(f"'{run.path}' is the same run as '{unique[key].path}' (same config); counted once",
                          UserWarning, stacklevel=2)
        if key not in unique or run.variant:
            unique[key] = run
    found.runs = list(unique.values())
    if not found.runs:
        raise UserError(f"no finished runs under {', '.join(map(str, paths))}; finish them with `lifelong resume`")
    _check_comparable(found.runs)
    return found


def _check_comparable(runs: list[Run]) -> None:
    for key, what in (("benchmark", "benchmarks"), ("tasks", "numbers of tasks")):
        counts: dict[str, int] = {}
        for run in runs:
            value = run.results[key] if key == "benchmark" else len(run.results[key])
            counts[str(value)] = counts.get(str(value), 0) + 1
        if len(counts) > 1:
            found = ", ".join(f"{value} ({n} run{'s' * (n > 1)})" for value, n in counts.items())
            raise UserError(f"the runs have different {what}: {found}; report one kind at a time, e.g. pass only "
                            "one compare folder or the run directories of one benchmark")


def _settings(run: Run) -> dict[str, str]:
    """The run's config as flat ``a.b: value`` pairs (seed, out and logger left out), plus its task order."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = json.dumps(value)

    walk("", {k: v for k, v in run.results["config"].items() if k not in NOT_SETTINGS})
    flat.pop("data.class_order", None)
    flat["tasks"] = json.dumps(run.results["tasks"])
    return flat


def moved_task(orders: list[list[list[int]]], hint: list[int] | None = None) -> list[int] | None:
    """The task whose position alone differs between ``orders`` (``hint`` first, if it fits), else None."""
    for candidate in ([hint] if hint else []) + orders[0]:
        rest = {json.dumps([sorted(t) for t in order if sorted(t) != sorted(candidate)]) for order in orders}
        if len(rest) == 1 and all(sorted(candidate) in [sorted(t) for t in order] for order in orders):
            return candidate
    return None


def group(found: Collection) -> tuple[list[Variant], dict[str, list[int]]]:
    """Variants in first-seen order, and for each family that is an order sweep the task it moves."""
    by_key: dict[str, list[Run]] = {}
    for run in found.runs:
        by_key.setdefault(json.dumps(_settings(run), sort_keys=True), []).append(run)
    runs_of = list(by_key.values())
    base = [next((r.variant for r in runs if r.variant), runs[0].results["method"]) for runs in runs_of]
    settings = [_settings(runs[0]) for runs in runs_of]
    families, labels = [""] * len(runs_of), [""] * len(runs_of)
    for name in dict.fromkeys(base):
        mine = [i for i, b in enumerate(base) if b == name]
        keys = sorted(k for k in settings[mine[0]] if len({settings[i].get(k) for i in mine}) > 1)
        keys += sorted({k for i in mine for k in settings[i]} - set(settings[mine[0]]))
        for i in mine:
            parts = [f"{k}={settings[i].get(k, 'unset').strip(chr(34))}" for k in keys if k != "tasks"]
            families[i] = name + (f" ({', '.join(parts)})" if parts else "")
    sweeps: dict[str, list[int]] = {}
    for family in dict.fromkeys(families):
        mine = [i for i, f in enumerate(families) if f == family]
        orders = [runs_of[i][0].results["tasks"] for i in mine]
        moved = moved_task(orders, found.moved) if len(mine) > 1 else None
        for i, order in zip(mine, orders):
            if moved is not None:
                labels[i] = f"{family} · task {tuple(moved)} at {[sorted(t) for t in order].index(sorted(moved)) + 1}"
            else:
                labels[i] = family if len(mine) == 1 else f"{family} · order {order}"
        if moved is not None:
            sweeps[family] = moved
    variants = [Variant(label, family, runs) for label, family, runs in zip(labels, families, runs_of)]
    return variants, sweeps


def summary_rows(variants: list[Variant]) -> list[dict[str, Any]]:
    """The comparison table (compare.summarize): mean ± std over seeds per variant."""
    return compare.summarize([{"variant": v.label, "seed": r.results["seed"], "results": r.results}
                              for v in variants for r in v.runs])


def task_curves(variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """(T + 1) × T mean and std: accuracy on every task before training (row 0) and after each task."""
    T = len(variant.runs[0].results["tasks"])
    init = [r.results.get("random_init_acc") or [np.nan] * T for r in variant.runs]
    return mean_std_over_seeds(np.concatenate([np.array(init)[:, None, :], variant.stack("acc_matrix")], axis=1))


def validation_curve(variant: Variant) -> tuple[tuple[np.ndarray, np.ndarray], list[int]] | None:
    """Mean and std of the validation accuracy after each epoch (metrics.jsonl), and each task's first epoch."""
    curves, starts = [], []
    for run in variant.runs:
        epochs = [r for r in store.read_metrics(run.path) if r["event"] == "epoch"]
        if not epochs or any("val_acc" not in r for r in epochs):
            return None
        curves.append([r["val_acc"] for r in epochs])
        starts = [i + 1 for i, r in enumerate(epochs) if r["epoch"] == 1]
    length = min(map(len, curves))
    return mean_std_over_seeds(np.array([c[:length] for c in curves])), starts


def anytime_curve(variant: Variant) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Training rows seen at each anytime point, and the mean and std over seeds of the mean accuracy on the
    tasks seen there (results.json ``anytime``); None when a run has none."""
    points = [run.results.get("anytime") for run in variant.runs]
    if any(not p or not p["samples"] for p in points):
        return None
    length = min(len(p["samples"]) for p in points)
    means = np.array([[np.mean(acc) for acc in p["acc"][:length]] for p in points])
    mean, std = mean_std_over_seeds(means)
    return np.array(points[0]["samples"][:length]), mean, std


def sweep_points(variants: list[Variant], family: str, moved: list[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Positions (1-based) of the moved task and the mean and std over seeds of its final accuracy there."""
    results = [run.results for variant in variants if variant.family == family for run in variant.runs]
    positions, means, stds = compare.moved_task_accuracy(results, moved)
    return positions, np.array(means), np.array(stds)


def figure_specs(variants: list[Variant], sweeps: dict[str, list[int]]) -> list[tuple[str, str, str, Any, tuple]]:
    """(file name, title, caption, drawing function, its arguments) of every figure the runs allow."""
    from lifelong import figures  # matplotlib is imported only when figures are drawn

    labels = [v.label for v in variants]
    T = len(variants[0].runs[0].results["tasks"])
    curves = [task_curves(v) for v in variants]
    specs = [
        ("accuracy_matrix", "Accuracy matrix",
         "Test accuracy (%) on task j (column) after training task i (row), mean over seeds; the diagonal (bold) "
         "is each task just after it was learned, entries above it are tasks not trained yet.",
         figures.accuracy_matrices, (labels, [v.stack("acc_matrix").mean(axis=0) for v in variants])),
        ("task_accuracy", "Accuracy of each task over the training sequence",
         "One panel per task: its test accuracy before training (init) and after each task; the dotted line marks "
         "when it is trained. Error bars: one standard deviation over seeds.",
         figures.task_accuracy, (labels, [m for m, _ in curves], [s for _, s in curves])),
    ]
    if T > 1:
        per_task = [mean_std_over_seeds(v.stack("forgetting")) for v in variants]
        summary = [tuple(tuple(mean_std_over_seeds(v.stack(key))) for key in ("avg_forgetting", "max_forgetting"))
                   for v in variants]
        specs.append(("forgetting", "Forgetting",
                      "Forgetting of task j: its best accuracy after any earlier task minus its final accuracy "
                      "(Chaudhry et al. 2018; negative = improved later). Right: average and maximum over tasks. "
                      "Error bars: one standard deviation over seeds.",
                      figures.forgetting, (labels, per_task, summary)))
    validation = [(v.label, validation_curve(v)) for v in variants]
    validation = [(label, vc) for label, vc in validation if vc is not None]
    if validation:
        starts = {tuple(s) for _, (_, s) in validation}
        specs.append(("validation_accuracy", "Validation accuracy per epoch",
                      "Accuracy on the held-out validation split of the task being trained, after every epoch "
                      "(metrics.jsonl); band: one standard deviation over seeds.",
                      figures.validation, ([label for label, _ in validation], [c for _, (c, _) in validation],
                                     list(starts.pop()) if len(starts) == 1 else [])))
    anytime = [(v.label, anytime_curve(v)) for v in variants]
    anytime = [(label, curve) for label, curve in anytime if curve is not None]
    if anytime:
        specs.append(("anytime_accuracy", "Anytime accuracy",
                      "Mean test accuracy on every task seen so far, evaluated every train.eval_every training rows "
                      "of the stream; band: one standard deviation over seeds.",
                      figures.anytime, ([label for label, _ in anytime], [c for _, c in anytime])))
    if sweeps:
        moved = {str(tuple(m)) for m in sweeps.values()}
        specs.append(("order_sweep", "Task-order sweep",
                      "Final test accuracy of the moved task against its position in the task sequence; error bars: "
                      "one standard deviation over seeds.",
                      figures.order_sweep, (list(sweeps), [sweep_points(variants, f, m) for f, m in sweeps.items()],
                                      f"task {moved.pop()}" if len(moved) == 1 else "the moved task", T)))
    return specs
