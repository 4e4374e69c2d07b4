"""Continual-learning metrics as pure functions of the accuracy matrix R (numpy only, no torch).

R[i][j] is the accuracy on task j after training task i (0-indexed, T×T, fractions in [0, 1]); row T-1 is the
final model. Each definition is in its function's docstring (summarised in docs/compare.md). Every function
validates its input and returns plain Python floats/lists so results can go straight into `results.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "average_accuracy",
    "average_forgetting",
    "backward_transfer",
    "forgetting",
    "forgetting_vs_reference",
    "forward_transfer",
    "intransigence",
    "max_forgetting",
    "mean_std",
    "mean_std_over_seeds",
    "summarize",
]


def _matrix(R: ArrayLike) -> np.ndarray:
    """Return R as a float64 array after checking it is a non-empty, square, finite matrix of fractions."""
    try:
        m = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"accuracy matrix must be a T×T array of numbers: {e}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"accuracy matrix must be square (T×T), got shape {m.shape}")
    if m.shape[0] == 0:
        raise ValueError("accuracy matrix is empty; it needs at least one task")
    _check_fractions(m, "accuracy matrix")
    return m


def _vector(values: ArrayLike, T: int, name: str) -> np.ndarray:
    """Return a per-task reference vector as float64 after checking it has one finite fraction per task."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of numbers: {e}") from None
    if v.shape != (T,):
        raise ValueError(f"{name} must have one accuracy per task ({T}), got shape {v.shape}")
    _check_fractions(v, name)
    return v


def _check_fractions(a: np.ndarray, name: str) -> None:
    """Reject NaN/inf and values outside [0, 1], which catch percentages passed where fractions belong."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any((a < 0.0) | (a > 1.0)):
        raise ValueError(f"{name} must hold fractions in [0, 1] (not percentages); got min {a.min()}, max {a.max()}")


def average_accuracy(R: ArrayLike) -> float:
    """ACC: mean accuracy of the final model over all tasks."""
    m = _matrix(R)
    return float(m[-1].mean())


def backward_transfer(R: ArrayLike) -> float:
    """BWT: mean change on each earlier task from just after learning it to the end; 0.0 for a single task."""
    m = _matrix(R)
    T = m.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean(m[-1, :-1] - np.diag(m)[:-1]))


def forward_transfer(R: ArrayLike, random_init: ArrayLike) -> float:
    """FWT: mean gain on each task j ≥ 1 before training it, over a randomly initialised model; 0.0 for one task.

    `random_init` holds one accuracy per task (length T); its first entry is validated but unused.
    """
    m = _matrix(R)
    T = m.shape[0]
    b = _vector(random_init, T, "random_init")
    if T == 1:
        return 0.0
    before = m[np.arange(T - 1), np.arange(1, T)]  # R[j-1][j] for j = 1..T-1
    return float(np.mean(before - b[1:]))


def forgetting(R: ArrayLike) -> list[float]:
    """Chaudhry et al. (2018) forgetting of each task j < T-1: max_{i<T-1} R[i][j] − R[T-1][j].

    The list has length T-1 (the last task has no forgetting yet; T == 1 gives []). Values may be negative
    when the final model beats every earlier one on a task; they are not clipped.
    """
    m = _matrix(R)
    if m.shape[0] == 1:
        return []
    return [float(x) for x in m[:-1, :-1].max(axis=0) - m[-1, :-1]]


def forgetting_vs_reference(R: ArrayLike, reference: ArrayLike) -> list[float]:
    """Forgetting of every task against an independent reference (document 003): a_j − R[T-1][j], length T.

    `reference` holds a_j, the accuracy of a model trained on task j alone.
    """
    m = _matrix(R)
    a = _vector(reference, m.shape[0], "reference")
    return [float(x) for x in a - m[-1]]


def _per_task_forgetting(R: ArrayLike, reference: ArrayLike | None) -> list[float]:
    """Chaudhry forgetting when `reference` is None, else forgetting against the reference."""
    return forgetting(R) if reference is None else forgetting_vs_reference(R, reference)


def average_forgetting(R: ArrayLike, reference: ArrayLike | None = None) -> float:
    """Mean per-task forgetting (Chaudhry, or vs `reference` when given); 0.0 when no task can have forgotten."""
    f = _per_task_forgetting(R, reference)
    return float(np.mean(f)) if f else 0.0


def max_forgetting(R: ArrayLike, reference: ArrayLike | None = None) -> float:
    """Largest per-task forgetting (Chaudhry, or vs `reference` when given); 0.0 when no task can have forgotten."""
    f = _per_task_forgetting(R, reference)
    return float(np.max(f)) if f else 0.0


def intransigence(R: ArrayLike, joint_reference: ArrayLike) -> list[float]:
    """Intransigence of every task: a*_j − R[j][j], where a*_j is a jointly trained model's accuracy on task j."""
    m = _matrix(R)
    a = _vector(joint_reference, m.shape[0], "joint_reference")
    return [float(x) for x in a - np.diag(m)]


def summarize(R: ArrayLike, random_init: ArrayLike | None = None) -> dict[str, float | list[float] | None]:
    """The headline metrics of one run, keyed as in `results.json`; fwt is None without `random_init`."""
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": None if random_init is None else forward_transfer(R, random_init),
        "forgetting": forgetting(R),
        "max_forgetting": max_forgetting(R),
        "avg_forgetting": average_forgetting(R),
    }


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; the std of a single value is 0.0."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"mean_std needs a non-empty 1-D list of values, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("mean_std values contain NaN or infinite values")
    mean, std = mean_std_over_seeds(v)
    return float(mean), float(std)


def mean_std_over_seeds(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1) over the first axis (one entry per seed) of an array of any
    shape, elementwise; the std of a single seed is 0, and NaN entries (values a run lacks) stay NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or len(v) == 0:
        raise ValueError(f"mean_std_over_seeds needs at least one seed along the first axis, got shape {v.shape}")
    std = v.std(axis=0, ddof=1) if len(v) > 1 else np.zeros_like(v[0])
    return v.mean(axis=0), std


def anytime_average(points: list[list[float]]) -> float | None:
    """Average anytime accuracy: the mean, over the evaluation points of a stream, of the mean accuracy on the
    tasks seen at that point (docs/runs.md, "Streams"); None without points."""
    means = [sum(acc) / len(acc) for acc in points if acc]
    return sum(means) / len(means) if means else None
