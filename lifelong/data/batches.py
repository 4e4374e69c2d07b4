"""Fast in-memory batching: shuffled index tensors over uint8 data, normalised and augmented per batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from lifelong.data.arrays import ImageArrays
from lifelong.data.scenarios import Task



@dataclass
class Batch:
    """Ready inputs (normalised, permuted, augmented) with their targets and task ids, beside the raw rows
    they came from (uint8, as stored) and each row's index in its task's view: what a replay memory keeps.
    Unpacks as ``x, y, task_ids``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    task_ids: int | torch.Tensor  # one int for a single-task batch, else one id per sample
    raw: torch.Tensor
    rows: torch.Tensor | None  # None where the rows have no index in a view (a Learner's batches)
    augmented: bool = False  # whether ``inputs`` were augmented (a replay memory augments its rows likewise)

    def __iter__(self) -> Iterator:
        return iter((self.inputs, self.targets, self.task_ids))

    def sample_task_ids(self) -> torch.Tensor:
        """One task id per sample, also for a single-task batch."""
        if isinstance(self.task_ids, int):
            return torch.full_like(self.targets, self.task_ids)
        return self.task_ids


class TaskView:
    """One split of one task, on a device, turning index tensors into ready float batches."""

    def __init__(self, task: Task, arrays: ImageArrays, device: torch.device):
        self.task = task
        self.images = arrays.images.to(device)
        self.targets = arrays.labels.to(device) + task.label_offset
        channels = self.images.shape[1]
        std = torch.tensor(task.std, device=device).expand(channels)
        mean = torch.tensor(task.mean, device=device).expand(channels)
        # uint8 rows are pixels (x/255), float rows are values (x); normalised = x * scale - shift, one fused
        # multiply-subtract per batch, per channel (dimension 1) whatever the rows' rank
        unit = 255.0 if self.images.dtype == torch.uint8 else 1.0
        shape = (1, -1) + (1,) * (self.images.dim() - 2)
        self.scale = (1.0 / (unit * std)).view(shape)
        self.shift = (mean / std).view(shape)
        self.permutation = None if task.permutation is None else task.permutation.to(device)

    def __len__(self) -> int:
        return self.targets.shape[0]

    def with_rows(self, images: torch.Tensor, targets: torch.Tensor) -> TaskView:
        """Other rows of this task (e.g. a memory's), prepared like this view's: same permutation, statistics."""
        view = copy.copy(self)
        view.images, view.targets = images, targets
        return view

    def inputs(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Float, normalised (and permuted) images at ``index``."""
        return self.prepare(self.rows(index))

    def rows(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The raw uint8 images at ``index``."""
        # index_select is several times faster than advanced indexing for a batch of rows
        return self.images[index] if isinstance(index, slice) else self.images.index_select(0, index)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rows of this task (uint8 pixels or float values) → float network inputs (permuted, normalised),
        e.g. rows from a memory."""
        if self.permutation is not None:
            x = x.flatten(1)[:, self.permutation].view_as(x)
        if x.dtype != torch.float32:
            return x.float().mul_(self.scale).sub_(self.shift)
        return x.mul(self.scale).sub_(self.shift)  # float rows: a new tensor, the stored rows stay untouched


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by ``pad`` and random horizontal flip, for a whole batch at once."""
    b, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
    out = padded[torch.arange(b, device=device)[:, None, None, None], torch.arange(c, device=device)[None, :, None, None],
                 rows, cols]
    flip = (torch.rand(b, generator=generator) < 0.5).to(device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out)


class Stream:
    """Shuffled training batches over one or more task views (several = mixed batches, e.g. joint training)."""

    def __init__(self, views: list[TaskView], batch_size: int, generator: torch.Generator, augment: bool = False):
        self.views = views
        self.batch_size = batch_size
        self.generator = generator
        self.augment = augment
        sizes = torch.tensor([len(v) for v in views])
        self.bounds = torch.cumsum(sizes, 0)
        self.total = int(self.bounds[-1])

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.total // self.batch_size)

    def epoch(self) -> Iterator[Batch]:
        """One pass in a fresh random order."""
        order = torch.randperm(self.total, generator=self.generator)
        for start in range(0, self.total, self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def batch(self, index: torch.Tensor) -> Batch:
        """The rows at ``index`` of the concatenated views."""
        if len(self.views) == 1:
            view = self.views[0]
            rows = index.to(view.images.device)
            raw = view.rows(rows)
            x, y, task_ids = view.prepare(raw), view.targets.index_select(0, rows), view.task.id
        else:
            owner = torch.bucketize(index, self.bounds, right=True)
            xs, ys, ts, raws, locals_ = [], [], [], [], []
            for k in owner.unique().tolist():
                view = self.views[k]
                local = (index[owner == k] - (self.bounds[k] - len(view))).to(view.images.device)
                raws.append(view.rows(local))
                xs.append(view.prepare(raws[-1]))
                ys.append(view.targets[local])
                ts.append(torch.full((local.numel(),), view.task.id, device=local.device))
                locals_.append(local)
            x, y, task_ids, raw, rows = map(torch.cat, (xs, ys, ts, raws, locals_))
        if self.augment:
            x = augment(x, self.generator)
        return Batch(x, y, task_ids, raw, rows, self.augment)


def eval_batches(view: TaskView, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split in order, in large batches, for evaluation."""
    for start in range(0, len(view), batch_size):
        index = slice(start, start + batch_size)
        yield view.inputs(index), view.targets[index]
