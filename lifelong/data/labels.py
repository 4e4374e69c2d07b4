"""Labels of a user's source as class ids, and its seeded stratified test split."""

from __future__ import annotations

import numpy as np
import torch

from lifelong.errors import UserError


def class_ids(labels: list[np.ndarray], what: str) -> tuple[list[str], list[torch.Tensor]]:
    """Class names (the distinct label values, numbers in numeric order) and each array's labels as class ids."""
    values = []
    for y in labels:
        if np.issubdtype(y.dtype, np.floating):
            if not np.isfinite(y).all() or (y != np.round(y)).any():
                raise UserError(f"{what} are not whole numbers or text; use integers or class names as labels")
            y = y.astype(np.int64)
        elif not np.issubdtype(y.dtype, np.integer):
            y = y.astype(str)
        values.append(y)
    if any(np.issubdtype(y.dtype, np.integer) for y in values) and not all(
            np.issubdtype(y.dtype, np.integer) for y in values):
        values = [y.astype(str) for y in values]
    distinct = np.unique(np.concatenate(values))
    if distinct.dtype.kind == "U" and all(_is_int(v) for v in distinct):
        distinct = np.array(sorted(distinct, key=int))
    names = [str(v) for v in distinct]
    index = {v: i for i, v in enumerate(distinct.tolist())}
    return names, [torch.tensor([index[v] for v in y.tolist()], dtype=torch.int64) for y in values]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def holdout(keys: np.ndarray, fraction: float) -> np.ndarray:
    """A boolean test mask taking ``fraction`` of the rows of each key (a class, or a task and class), at least one
    and never all where a key has two rows or more; seeded, so the same files give the same split."""
    generator = np.random.default_rng(0)
    test = np.zeros(len(keys), dtype=bool)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        if len(rows) > 1:
            count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
            test[generator.permutation(rows)[:count]] = True
    return test
