"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, so no global backend or state).

Every function takes plain arrays (means and standard deviations over seeds, already computed by report_data.py)
and returns a Figure. Series differ in colour (Okabe–Ito, safe for colour-blind readers) and also in marker,
line style or hatch, so the figures stay readable in greyscale print.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">"]  # 11, so (colour, marker) repeats after 88
LINESTYLES = ["-", "--", "-.", ":"]
HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--", "||"]  # 9, so (colour, hatch) repeats after 72
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "lines.linewidth": 1.8, "lines.markersize": 5,
         "svg.hashsalt": "lifelong", "hatch.linewidth": 0.8}


def render(draw: Callable[..., Figure], *args) -> tuple[bytes, bytes]:
    """Draw a figure in the house style; returns its PNG (150 dpi) and SVG bytes (reproducible: no dates)."""
    with matplotlib.rc_context(STYLE):
        fig = draw(*args)
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(i: int) -> dict:
    """Line style of series ``i``: colour, marker and dash pattern all change, so no series relies on colour."""
    return {"color": OKABE_ITO[i % 8], "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % 4]}


def _legend_columns(labels: Sequence[str], width: float) -> int:
    """As many legend columns as fit in ``width`` inches (a 9 pt character is about 0.075 in)."""
    column = 0.075 * max(map(len, labels)) + 0.6
    return max(1, min(len(labels), int(width / column)))


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = min(n, max_cols)
    return -(-n // cols), cols


def accuracy_matrices(labels: Sequence[str], means: Sequence[np.ndarray]) -> Figure:
    """One annotated heatmap per variant: accuracy on task j (column) after training task i (row)."""
    T = means[0].shape[0]
    rows, cols = _grid(len(labels), 3)
    side = max(2.8, 0.42 * T + 1.3)
    fig = _figure(side * cols + 0.8, side * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    for ax, label, R in zip(axes.flat, labels, means):
        image = ax.imshow(R, cmap="cividis", vmin=0.0, vmax=1.0)
        ax.set_title(label)
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        ticks = np.arange(T)
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
        if T <= 12:  # beyond that the numbers would be unreadably small
            for i in range(T):
                for j in range(T):
                    ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=8 if T > 6 else 9,
                            color="black" if R[i, j] > 0.55 else "white",
                            fontweight="bold" if i == j else "normal")
    fig.colorbar(image, ax=axes, label="test accuracy", shrink=0.8)
    return fig


def _task_panels(T: int) -> tuple[Figure, np.ndarray, np.ndarray]:
    """A grid of one accuracy panel per task over x = init, 1..T, each with a dotted line where its task trains."""
    rows, cols = _grid(T, 5)
    fig = _figure(2.9 * cols, 2.5 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in axes.flat[T:]:
        ax.set_visible(False)
    x = np.arange(T + 1)
    for j, ax in enumerate(axes.flat[:T]):
        ax.axvline(j + 1, color="0.6", linestyle=":", linewidth=1.2)
        ax.set_xticks(x, ["init"] + [str(t) for t in x[1:]])
        ax.set_xlabel("after training task")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    return fig, axes, x


def task_accuracy(labels: Sequence[str], means: Sequence[np.ndarray], stds: Sequence[np.ndarray]) -> Figure:
    """One panel per task: its accuracy before training (0) and after each task, one line per variant.

    ``means[k]`` / ``stds[k]`` are (T + 1) × T: row 0 the untrained network, row i after training task i.
    """
    fig, axes, x = _task_panels(means[0].shape[1])
    for j, ax in enumerate(axes.flat[: len(x) - 1]):
        for k, (label, mean, std) in enumerate(zip(labels, means, stds)):
            ax.errorbar(x, mean[:, j], yerr=std[:, j], label=label, capsize=2, **_series(k))
        ax.set_title(f"task {j + 1} (trained at {j + 1}, dotted)")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=_legend_columns(labels, fig.get_figwidth()))
    return fig


def forgetting(labels: Sequence[str], per_task: Sequence[tuple[np.ndarray, np.ndarray]],
               summary: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> Figure:
    """Left: forgetting of each task; right: its average and maximum over tasks. Bars per variant (colour and
    hatch), error bars one standard deviation over seeds.

    ``per_task[k]`` is (mean, std) over seeds of the T − 1 per-task values; ``summary[k]`` is ((avg mean, avg
    std), (max mean, max std)).
    """
    n, T1 = len(labels), len(per_task[0][0])
    fig = _figure(max(7.0, 2.5 + 0.3 * n * (T1 + 2)), 3.8)
    left, right = fig.subplots(1, 2, width_ratios=[T1 + 0.5, 2])
    width = 0.8 / n
    for k, label in enumerate(labels):
        style = {"color": OKABE_ITO[k % 8], "hatch": HATCHES[k % len(HATCHES)], "edgecolor": "black", "linewidth": 0.6,
                 "capsize": 2}
        offset = (k - (n - 1) / 2) * width
        left.bar(np.arange(T1) + offset, per_task[k][0], width, yerr=per_task[k][1], label=label, **style)
        right.bar(np.arange(2) + offset, [s[0] for s in summary[k]], width, yerr=[s[1] for s in summary[k]], **style)
    left.set_xticks(np.arange(T1), [str(t + 1) for t in range(T1)])
    left.set_xlabel("task (the last one cannot be forgotten yet)")
    left.set_ylabel("forgetting (best earlier − final acc.)")
    left.set_title("forgetting per task")
    right.set_xticks(np.arange(2), ["average", "maximum"])
    right.set_xlabel("over tasks")
    right.set_title("average and maximum")
    right.sharey(left)
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center",
               ncols=_legend_columns(labels, fig.get_figwidth()))
    for ax in (left, right):
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
    return fig


def validation(labels: Sequence[str], curves: Sequence[tuple[np.ndarray, np.ndarray]],
               task_starts: Sequence[int]) -> Figure:
    """Validation accuracy of the task being trained after each epoch of the run, one line per variant.

    ``curves[k]`` is (mean, std) over seeds per epoch; ``task_starts`` the first epoch (1-based) of each task.
    """
    epochs = max(len(mean) for mean, _ in curves)
    fig = _figure(max(6.0, min(14.0, 2.5 + 0.25 * epochs)), 3.6)
    ax = fig.subplots()
    for k, (label, (mean, std)) in enumerate(zip(labels, curves)):
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, label=label, **_series(k))
        ax.fill_between(x, mean - std, mean + std, color=OKABE_ITO[k % 8], alpha=0.15, linewidth=0)
    for t, start in enumerate(task_starts):
        ax.axvline(start - 0.5, color="0.6", linestyle=":", linewidth=1.0)
        ax.annotate(f"task {t + 1}", (start - 0.4, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8)
    ax.set_xlabel("epoch over the whole run")
    ax.set_ylabel("validation accuracy (current task)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def anytime(labels: Sequence[str], curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """Mean accuracy on the tasks seen so far against training rows seen, one line per variant."""
    fig = _figure(6.5, 3.6)
    ax = fig.subplots()
    for k, (label, (samples, mean, std)) in enumerate(zip(labels, curves)):
        ax.plot(samples, mean, label=label, **_series(k))
        ax.fill_between(samples, mean - std, mean + std, color=OKABE_ITO[k % 8], alpha=0.15, linewidth=0)
    ax.set_xlabel("training rows seen")
    ax.set_ylabel("accuracy on the tasks seen")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig


def order_sweep(labels: Sequence[str], points: Sequence[tuple[list[int], np.ndarray, np.ndarray]],
                moved: str, num_tasks: int) -> Figure:
    """Final accuracy of the moved task against its position in the sequence, one line per variant."""
    fig = _figure(5.5, 3.6)
    ax = fig.subplots()
    for k, (label, (positions, mean, std)) in enumerate(zip(labels, points)):
        ax.errorbar(positions, mean, yerr=std, label=label, capsize=3, **_series(k))
    ax.set_xticks(range(1, num_tasks + 1))
    ax.set_xlabel(f"position of {moved} in the task sequence")
    ax.set_ylabel("final accuracy of the moved task")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# --- inside the model (lifelong/inside.py: lifelong inspect and the report's "Inside the model") ---
def _task_colour(i: int, n: int) -> tuple:
    """Task ``i`` of ``n`` on cividis (dark to light: the order of the tasks reads without colour too)."""
    return matplotlib.colormaps["cividis"](0.1 + 0.8 * i / max(1, n - 1))


def importance_histograms(names: Sequence[str], edges: np.ndarray, counts: Sequence[Sequence[np.ndarray]],
                          zeros: Sequence[Sequence[float]], tasks: Sequence[int]) -> Figure:
    """One panel per layer: the share of its parameters per log10-importance bin, one line per task."""
    rows, cols = _grid(len(names), 3)
    fig = _figure(3.4 * cols, 2.6 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    centres = (edges[:-1] + edges[1:]) / 2
    for ax, name, per_task, zero in zip(axes.flat, names, counts, zeros):
        for i, (task, c) in enumerate(zip(tasks, per_task)):
            ax.plot(centres, c, color=_task_colour(i, len(tasks)), linestyle=LINESTYLES[i % 4],
                    label=f"after task {task} (zeros {100 * zero[i]:.0f}%)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[-1, :]:
        ax.set_xlabel("log10 importance")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of parameters")
    return fig


def importance_growth(layers: Sequence[str], means: Sequence[Sequence[float]], shares: Sequence[Sequence[float]],
                      tasks: Sequence[int]) -> Figure:
    """Left: each layer's mean importance after each task (log scale; a layer no term reaches yet is left out
    there); right: its share above the threshold. The figure grows with the legend (one entry per layer)."""
    columns = _legend_columns(list(layers), 9.0)
    fig = _figure(9.0, 3.4 + 0.2 * -(-len(layers) // columns))
    left, right = fig.subplots(1, 2)
    for k, (layer, mean, share) in enumerate(zip(layers, means, shares)):
        mean = np.asarray(mean, dtype=float)
        left.plot(tasks, np.where(mean > 0, mean, np.nan), label=layer, **_series(k))  # none yet: not drawn
        right.plot(tasks, share, **_series(k))
    left.set_yscale("log")
    left.set_ylabel("mean importance")
    right.set_ylabel("share above the threshold")
    right.set_ylim(-0.02, 1.02)
    for ax in (left, right):
        ax.set_xlabel("after task")
        ax.set_xticks(list(tasks))
        ax.grid(alpha=0.3)
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=columns)
    return fig


def filter_ownership(owned: Sequence[Sequence[int]], filters: int | None) -> Figure:
    """One horizontal bar per conv layer: filters owned by each task (stacked, hatched per task), then free ones."""
    layers, tasks = len(owned), max(len(row) for row in owned)
    fig = _figure(7.0, 1.2 + 0.45 * layers)
    ax = fig.subplots()
    left = np.zeros(layers)
    for t in range(tasks):
        width = np.array([row[t] if t < len(row) else 0 for row in owned], dtype=float)
        ax.barh(np.arange(layers), width, left=left, color=_task_colour(t, tasks), hatch=HATCHES[t % len(HATCHES)],
                edgecolor="black", linewidth=0.5, label=f"task {t + 1}")
        left += width
    if filters:
        ax.barh(np.arange(layers), filters - left, left=left, color="white", edgecolor="black", linewidth=0.5,
                label="free")
    ax.set_yticks(np.arange(layers), [f"conv {layer + 1}" for layer in range(layers)])
    ax.invert_yaxis()
    ax.set_xlabel("filters")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(tasks + 1, 8))
    return fig


def sparsity_matrix(matrix: np.ndarray, row_labels: Sequence[int], column_name: str, row_name: str) -> Figure:
    """An annotated heatmap of shares (0..1): rows are tasks, columns blocks or layers."""
    rows, cols = matrix.shape
    fig = _figure(max(3.5, 0.6 * cols + 2.0), max(2.5, 0.4 * rows + 1.5))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="cividis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(np.arange(cols), [str(c + 1) for c in range(cols)])
    ax.set_yticks(np.arange(rows), [str(r) for r in row_labels])
    ax.set_xlabel(column_name)
    ax.set_ylabel(row_name)
    if rows * cols <= 200:
        for i in range(rows):
            for j in range(cols):
                ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if matrix[i, j] > 0.55 else "white")
    fig.colorbar(image, ax=ax, label="share off")
    return fig


def memory_classes(labels: Sequence[str], table: np.ndarray, task_sizes: Sequence[int], tasks: Sequence[int]) -> Figure:
    """Rows the memory holds per class after each task: stacked bars, classes of one task in one colour, each
    class of a task in its own hatch."""
    fig = _figure(max(5.0, 1.0 + 0.5 * len(tasks)), 3.8)
    ax = fig.subplots()
    bottom = np.zeros(table.shape[0])
    owner = [t for t, size in enumerate(task_sizes) for _ in range(size)]
    local = [i for size in task_sizes for i in range(size)]
    for c, label in enumerate(labels):
        ax.bar(np.arange(table.shape[0]), table[:, c], bottom=bottom, color=_task_colour(owner[c], len(task_sizes)),
               hatch=HATCHES[local[c] % len(HATCHES)], edgecolor="black", linewidth=0.4,
               label=label if len(labels) <= 20 else None)
        bottom += table[:, c]
    ax.set_xticks(np.arange(table.shape[0]), [str(t) for t in tasks])
    ax.set_xlabel("after task")
    ax.set_ylabel("rows in memory")
    if len(labels) <= 20:
        ax.legend(title="class", fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def probe(acc: np.ndarray, probed: np.ndarray) -> Figure:
    """One panel per task: the method's accuracy (solid) and the linear probe's (dashed) before training and after
    each task; ``acc`` and ``probed`` are (T + 1) × T."""
    fig, axes, x = _task_panels(acc.shape[1])
    for j, ax in enumerate(axes.flat[: len(x) - 1]):
        ax.plot(x, acc[:, j], label="method (head)", **_series(0))
        ax.plot(x, probed[:, j], label="linear probe (features)", **{**_series(1), "linestyle": "--"})
        ax.set_title(f"task {j + 1}")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return fig
