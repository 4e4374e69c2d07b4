"""Inside the model (issue 21): a run directory's diagnostics files, metrics.jsonl and results.json → tables for
``lifelong inspect`` and the figures of the report's "Inside the model" section (docs/inspect.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lifelong import diagnostics, store
from lifelong.errors import UserError

THRESHOLDS = (1e-1, 1e-2, 1e-3)  # shares of parameters whose importance is above t × the run's largest
BINS = 40  # of the log-scale importance histograms


@dataclass
class Inside:
    """What one run recorded about its model, task by task (``tasks``: the ids with a diagnostics file)."""

    run_dir: Path
    results: dict[str, Any]
    tasks: list[int] = field(default_factory=list)
    # each series by the task (0-based) whose file holds it
    importance: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # layer → task → values
    memory: dict[int, np.ndarray] = field(default_factory=dict)  # rows held per (task, class of that task)
    mask_sparsity: dict[int, np.ndarray] = field(default_factory=dict)  # mark: per KB block, that task's masks
    activation_sparsity: dict[int, np.ndarray] = field(default_factory=dict)  # slni: per hidden layer
    ownership: list[list[list[int]]] = field(default_factory=list)  # gs-mask: [layer][task] owned, after each task
    filters: int | None = None  # gs-mask: filters per layer

    @property
    def empty(self) -> bool:
        return not (self.importance or self.memory or self.mask_sparsity or self.activation_sparsity
                    or self.ownership or self.results.get("probe_matrix"))


def layer_of(parameter: str) -> str:
    """``backbone.layers.0.weight`` → ``backbone.layers.0``: a layer's weight and bias are one layer here."""
    return parameter.rsplit(".", 1)[0] if "." in parameter else parameter


def read(run_dir: str | Path) -> Inside:
    """Everything the run directory holds about its model's inside; a run without results is a user error."""
    run_dir = Path(run_dir)
    results = store.read_for_viewing(run_dir)  # not a run, or its config.yaml edited: one line naming it
    if results is None:
        raise UserError(f"run '{run_dir}' has not finished (no results.json); finish it with `lifelong resume "
                        f"{run_dir}` first")
    found = Inside(run_dir, results)
    for task, tensors in diagnostics.load_run(run_dir).items():
        _check_shapes(run_dir, task, tensors)
        found.tasks.append(task)
        layers: dict[str, list[np.ndarray]] = {}
        for name, t in tensors.items():
            if name.startswith("importance/"):
                layers.setdefault(layer_of(name.removeprefix("importance/")), []).append(_numpy(t).ravel())
        for layer, parts in layers.items():
            found.importance.setdefault(layer, {})[task] = np.concatenate(parts)
        for key, target in (("memory/rows", found.memory), ("mark/mask_sparsity", found.mask_sparsity),
                            ("slni/activation_sparsity", found.activation_sparsity)):
            if key in tensors:
                target[task] = _numpy(tensors[key])
    found.importance = {n: found.importance[n] for n in sorted(found.importance, key=_natural)}
    for record in store.read_metrics(run_dir):
        if record.get("event") == "task" and isinstance(record.get("gs_mask"), dict):
            found.ownership.append(record["gs_mask"]["filters_owned"])
    found.filters = (results.get("method_info") or {}).get("filters") if found.ownership else None
    return found


def _check_shapes(run_dir: Path, task: int, tensors: dict) -> None:
    """Refuse tensors the figures cannot draw (a method's own diagnostics may hold anything): one line naming them."""
    for name, t in tensors.items():
        empty = name.startswith("importance/") and t.numel() == 0
        if empty or (name == "memory/rows" and t.dim() != 2):
            why = "no values" if empty else "tasks × classes expected"
            raise UserError(f"the diagnostics of task {task + 1} in '{run_dir}' hold '{name}' of shape "
                            f"{list(t.shape)}, which inspect cannot draw ({why}); delete that task's file under "
                            "diagnostics/ (the run's other results stay valid)")


def _natural(name: str) -> list:
    """``layers.10`` after ``layers.9``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split(".")]


def _numpy(t: Any) -> np.ndarray:
    return t.float().numpy() if t.is_floating_point() else t.numpy()


# --- importance ---
def importance_tasks(inside: Inside) -> list[int]:
    """The tasks whose files hold importance."""
    return sorted({t for values in inside.importance.values() for t in values})


def _last(values: dict[int, np.ndarray]) -> np.ndarray:
    return values[max(values)]


def _top(inside: Inside) -> float:
    """The largest importance in the network after the last task (the thresholds' unit)."""
    return max((float(_last(v).max()) for v in inside.importance.values() if _last(v).size), default=0.0)


def importance_summary(inside: Inside, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, Any]]:
    """Per layer, after the last task: parameters, mean, median, max and the share above each threshold × the
    run's largest importance; ``mean_per_task`` (one per ``importance_tasks``, NaN where the layer has none) is
    how the layer's mean grows task after task."""
    top, tasks, rows = _top(inside), importance_tasks(inside), []
    for layer, values in inside.importance.items():
        last = _last(values)
        rows.append({"layer": layer, "parameters": last.size, "mean": float(last.mean()),
                     "median": float(np.median(last)), "max": float(last.max()),
                     "above": [float((last > t * top).mean()) if top > 0 else 0.0 for t in thresholds],
                     "mean_per_task": [float(values[t].mean()) if t in values else np.nan for t in tasks]})
    return rows


def shares_per_task(inside: Inside, threshold: float) -> list[list[float]]:
    """Per layer and task, the share of parameters above ``threshold`` × the run's largest importance."""
    top, tasks = _top(inside), importance_tasks(inside)
    return [[float((values[t] > threshold * top).mean()) if t in values and top > 0 else np.nan for t in tasks]
            for values in inside.importance.values()]


def importance_histograms(inside: Inside, layers: int = 12) -> tuple[list[str], np.ndarray, list[list[np.ndarray]],
                                                                      list[list[float]]]:
    """For the ``layers`` largest layers: names, shared log10 bin edges, and per task (``importance_tasks``; zeros
    where the layer has none) the share of parameters in each bin and the share of exact zeros (no logarithm: a
    parameter the penalty does not reach)."""
    tasks = importance_tasks(inside)
    chosen = sorted(inside.importance, key=lambda n: -_last(inside.importance[n]).size)[:layers]
    chosen.sort(key=list(inside.importance).index)
    positive = [v[v > 0] for n in chosen for v in inside.importance[n].values()]
    positive = [p for p in positive if p.size]
    low = np.log10(min(float(p.min()) for p in positive)) if positive else -1.0
    high = np.log10(max(float(p.max()) for p in positive)) if positive else 1.0
    edges = np.linspace(low, high if high > low else low + 1.0, BINS + 1)
    counts = [[_binned(inside.importance[n].get(t), edges) for t in tasks] for n in chosen]
    zeros = [[float((inside.importance[n][t] <= 0).mean()) if t in inside.importance[n] else 1.0 for t in tasks]
             for n in chosen]
    return chosen, edges, counts, zeros


def _binned(values: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each log10 bin (zeros where there are none)."""
    if values is None:
        return np.zeros(len(edges) - 1)
    return np.histogram(np.log10(values[values > 0]), edges)[0] / max(1, values.size)


# --- the other diagnostics ---
def memory_by_class(inside: Inside) -> tuple[list[str], np.ndarray]:
    """Class labels (the source dataset's class ids, ``T<task>:`` prefixed where tasks share labels) and the rows
    the memory held of each after each task with a file (``inside.memory``'s tasks × classes)."""
    classes, shared = inside.results["tasks"], inside.results["scenario"] != "class"
    columns = [(t, local) for t, task_classes in enumerate(classes) for local in range(len(task_classes))]
    labels = [f"T{t + 1}:{classes[t][local]}" if shared else str(classes[t][local]) for t, local in columns]
    table = np.zeros((len(inside.memory), len(columns)), dtype=np.int64)
    for i, rows in enumerate(inside.memory.values()):
        for c, (t, local) in enumerate(columns):
            table[i, c] = rows[t, local] if t < rows.shape[0] and local < rows.shape[1] else 0
    return labels, table


def probe_rows(inside: Inside) -> tuple[np.ndarray, np.ndarray] | None:
    """(accuracy matrix, probe matrix), each (T + 1) × T with the untrained network first; None without probe."""
    r = inside.results
    if not r.get("probe_matrix"):
        return None
    T = len(r["tasks"])
    acc = np.array([r.get("random_init_acc") or [np.nan] * T, *r["acc_matrix"]], dtype=np.float64)
    probe = np.array([r.get("probe_random_init") or [np.nan] * T, *r["probe_matrix"]], dtype=np.float64)
    return acc, probe


# --- figures: the report's "Inside the model" section and lifelong inspect ---
def figure_specs(inside: Inside, label: str, prefix: str = "") -> list[tuple[str, str, str, Any, tuple]]:
    """(file name, title, caption, drawing function, its arguments) of every figure this run's records allow."""
    from lifelong import figures  # matplotlib only when figures are drawn

    specs = []
    if inside.importance:
        tasks = [t + 1 for t in importance_tasks(inside)]
        names, edges, counts, zeros = importance_histograms(inside)
        specs.append((f"{prefix}importance_histograms", f"{label}: importance per layer",
                      "Distribution of the importance the method's penalty gives each parameter of a layer (its Ω "
                      "times the penalty strength, summed over tasks; IMM: its precision), after each task, on a "
                      "log scale; zeros (parameters not protected) are counted in the legend.",
                      figures.importance_histograms, (names, edges, counts, zeros, tasks)))
        rows = importance_summary(inside)
        specs.append((f"{prefix}importance_growth", f"{label}: how importance grows",
                      f"Left: mean importance of each layer after each task. Right: share of each layer's parameters "
                      f"whose importance exceeds {THRESHOLDS[1]:g} × the largest at the last task.",
                      figures.importance_growth, ([r["layer"] for r in rows], [r["mean_per_task"] for r in rows],
                                                  shares_per_task(inside, THRESHOLDS[1]), tasks)))
    if inside.ownership:
        specs.append((f"{prefix}filter_ownership", f"{label}: filters owned per task",
                      "gs-mask: filters of each conv layer owned by each task (frozen for the later ones) and still "
                      "free, after the last task.",
                      figures.filter_ownership, (inside.ownership[-1], inside.filters)))
    if inside.mask_sparsity:
        specs.append((f"{prefix}mask_sparsity", f"{label}: mask sparsity",
                      "MARK: share of each task's mask values below 0.01 (channels of a KB block switched off), on "
                      "its training data.", figures.sparsity_matrix,
                      (np.array(list(inside.mask_sparsity.values())), [t + 1 for t in inside.mask_sparsity],
                       "KB block", "task")))
    if inside.activation_sparsity:
        specs.append((f"{prefix}activation_sparsity", f"{label}: activation sparsity",
                      "SLNI: share of zero activations of each hidden layer on the task's training data, after "
                      "each task.", figures.sparsity_matrix,
                      (np.array(list(inside.activation_sparsity.values())), [t + 1 for t in inside.activation_sparsity],
                       "hidden layer", "after task")))
    if inside.memory:
        labels, table = memory_by_class(inside)
        specs.append((f"{prefix}memory_classes", f"{label}: replay memory by class",
                      "Rows the replay memory holds of each class after each task (stacked; classes of one task "
                      "share a colour, each its own hatch).",
                      figures.memory_classes, (labels, table, [len(c) for c in inside.results["tasks"]],
                                               [t + 1 for t in inside.memory])))
    probe = probe_rows(inside)
    if probe is not None:
        specs.append((f"{prefix}probe", f"{label}: head against features",
                      "Solid: the method's test accuracy on each task; dashed: a linear probe (ridge classifier) "
                      "fitted on the frozen features of that task. A gap that opens means the head forgot what the "
                      "features still hold.", figures.probe, probe))
    return specs


# --- lifelong inspect ---
def tables(inside: Inside) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the run's records allow, as text."""
    out = []
    if inside.importance:
        rows, tasks = importance_summary(inside), [f"T{t + 1}" for t in importance_tasks(inside)]
        out.append((f"Importance per layer after task {importance_tasks(inside)[-1] + 1} (shares above t × the "
                    "largest)",
                    ["layer", "params", "mean", "median", "max", *[f"> {t:g}" for t in THRESHOLDS]],
                    [[r["layer"], str(r["parameters"]), f"{r['mean']:.3g}", f"{r['median']:.3g}", f"{r['max']:.3g}",
                      *[f"{100 * a:.1f}%" for a in r["above"]]] for r in rows]))
        out.append(("Mean importance per layer after each task", ["layer", *tasks],
                    [[r["layer"], *[f"{m:.3g}" if m == m else "" for m in r["mean_per_task"]]] for r in rows]))
    if inside.ownership:
        owned, free = inside.ownership[-1], inside.filters
        out.append(("gs-mask: filters owned per task per layer, after the last task",
                    ["layer", *[f"T{t + 1}" for t in range(len(owned[0]))], "free"],
                    [[f"conv {k + 1}", *map(str, row), str(free - sum(row)) if free else "?"]
                     for k, row in enumerate(owned)]))
    for title, values, column in (("MARK: mask sparsity (share of mask values below 0.01) per task", inside.mask_sparsity,
                                   "block"),
                                  ("SLNI: activation sparsity (share of zero activations) after each task",
                                   inside.activation_sparsity, "layer")):
        if values:
            out.append((title, ["task", *[f"{column} {k + 1}" for k in range(len(next(iter(values.values()))))]],
                        [[f"T{t + 1}", *[f"{100 * v:.1f}%" for v in row]] for t, row in values.items()]))
    if inside.memory:
        labels, table = memory_by_class(inside)
        if len(labels) > 20:  # per task's classes: one column per task
            sizes = [len(c) for c in inside.results["tasks"]]
            ends = np.cumsum(sizes)
            table = np.stack([table[:, e - s : e].sum(1) for s, e in zip(sizes, ends)], 1)
            labels = [f"T{t + 1} classes" for t in range(len(sizes))]
        out.append(("Replay memory: rows held per class after each task", ["after", *labels, "total"],
                    [[f"T{t + 1}", *map(str, row), str(int(row.sum()))] for t, row in zip(inside.memory, table)]))
    probe = probe_rows(inside)
    if probe is not None:
        acc, probed = probe
        names = ["init", *[f"T{i}" for i in range(1, len(acc))]]
        out.append(("Accuracy / linear-probe accuracy on each task (head / features)",
                    ["after", *[f"T{j + 1}" for j in range(acc.shape[1])]],
                    [[name, *[f"{a:.3f} / {p:.3f}" for a, p in zip(acc[i], probed[i])]]
                     for i, name in enumerate(names)]))
    return out


def write_figures(inside: Inside, folder: Path) -> list[Path]:
    """Every figure as PNG and SVG in ``folder``; returns the PNG paths."""
    from lifelong.figures import render

    paths = []
    for name, _, _, draw, args in figure_specs(inside, inside.results["method"]):
        png, svg = render(draw, *args)
        store.atomic_write_bytes(folder / f"{name}.png", png)
        store.atomic_write_bytes(folder / f"{name}.svg", svg)
        paths.append(folder / f"{name}.png")
    return paths
