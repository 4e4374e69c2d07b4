"""Turn datasets into task sequences: class splits, pixel permutations and sequences of datasets.

Every task keeps *local* labels 0..k-1. What the network must predict depends on the scenario:
task-incremental uses one head per task (local labels), class-incremental one head over all classes
(``label_offset`` + local label), domain-incremental one shared head over the local labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.errors import UserError

SCENARIOS = {
    "task": "task-incremental: the task id is given at test time, one head per task",
    "class": "class-incremental: no task id at test time, one head over every class seen so far",
    "domain": "domain-incremental: no task id, one shared head over the same label space",
}


@dataclass
class Task:
    """One task of a sequence, its data in memory and how to prepare its batches."""

    id: int
    name: str
    classes: list[int]  # the source dataset's labels, in local-label order
    class_names: list[str]
    train: ImageArrays
    test: ImageArrays
    val: ImageArrays | None = None
    mean: tuple[float, ...] = (0.0,)  # per channel, of the source's training images in [0, 1] (features: as they are)
    std: tuple[float, ...] = (1.0,)
    permutation: torch.Tensor | None = None  # pixel permutation of the flattened image (permuted MNIST)
    label_offset: int = 0  # added to local labels to form the prediction target (class-incremental)
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


@dataclass
class Benchmark:
    """A named sequence of tasks under one scenario."""

    name: str
    scenario: str
    tasks: list[Task] = field(default_factory=list)
    data_sha256: str | None = None  # of the user's files (data.source); None for named benchmarks

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.tasks[0].input_shape

    @property
    def class_counts(self) -> list[int]:
        return [t.num_classes for t in self.tasks]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], or of float features as they are."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    unit = 255.0 if images.dtype == torch.uint8 else 1.0
    for chunk in images.split(4096):  # chunks keep the float copy small (a whole dataset would be GBs)
        x = chunk.transpose(0, 1).reshape(images.shape[1], -1).double() / unit
        total += x.sum(1)
        squares += (x * x).sum(1)
    n = images.numel() // images.shape[1]
    mean = total / n
    std = ((squares / n - mean**2) * n / max(1, n - 1)).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _relabel(arrays: ImageArrays, classes: list[int]) -> ImageArrays:
    """Keep the samples of ``classes`` and map each to its position in that list."""
    size = max(int(arrays.labels.max()) if len(arrays) else -1, max(classes)) + 1
    lookup = torch.full((size,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    local = lookup[arrays.labels]
    keep = (local >= 0).nonzero().squeeze(1)
    return ImageArrays(arrays.images[keep], local[keep])


def split_classes(dataset: DatasetSplits, class_groups: list[list[int]]) -> list[Task]:
    """One task per group of classes (e.g. split MNIST's pairs), in the given order."""
    n = len(dataset.class_names)
    seen: set[int] = set()
    if not class_groups:
        raise UserError("class order [] has no tasks; give at least one group of classes, e.g. [[0, 1]]")
    for group in class_groups:
        if len(set(group)) != len(group):
            raise UserError(f"class order {class_groups} repeats a class within the group {group}")
        bad = [c for c in group if not 0 <= c < n]
        if bad or not group:
            raise UserError(f"class order {class_groups} is invalid for {dataset.name} (classes are 0..{n - 1})")
        if seen & set(group):
            raise UserError(f"class order {class_groups} uses class(es) {sorted(seen & set(group))} twice")
        seen |= set(group)
    mean, std = channel_stats(dataset.train.images)
    for split in (dataset.train, dataset.test):
        empty = sorted(seen - set(split.labels.unique().tolist()))
        if empty:
            raise UserError(f"{dataset.name} has no {'train' if split is dataset.train else 'test'} images of "
                            f"class(es) {empty}; check the dataset's files or leave those classes out of the order")
    return [
        Task(
            id=i,
            name=f"{dataset.name} " + "/".join(dataset.class_names[c] for c in group),
            classes=list(group),
            class_names=[dataset.class_names[c] for c in group],
            train=_relabel(dataset.train, group),
            test=_relabel(dataset.test, group),
            mean=mean,
            std=std,
            source=dataset.name,
        )
        for i, group in enumerate(class_groups)
    ]


def permuted(dataset: DatasetSplits, num_tasks: int, seed: int) -> list[Task]:
    """``num_tasks`` copies of the dataset, each with its own fixed random pixel permutation."""
    g = torch.Generator().manual_seed(seed)
    pixels = dataset.train.images[0].numel()
    mean, std = channel_stats(dataset.train.images)
    classes = list(range(len(dataset.class_names)))
    return [
        Task(
            id=i,
            name=f"permuted {dataset.name} #{i + 1}",
            classes=classes,
            class_names=list(dataset.class_names),
            train=dataset.train,
            test=dataset.test,
            mean=mean,
            std=std,
            permutation=torch.randperm(pixels, generator=g),
            source=dataset.name,
        )
        for i in range(num_tasks)
    ]


def by_group(dataset: DatasetSplits) -> list[Task]:
    """One task per task-column value (e.g. a month), in ``group_names`` order, each over every class."""
    mean, std = channel_stats(dataset.train.images)
    classes = list(range(len(dataset.class_names)))

    def rows(arrays: ImageArrays, group: int) -> ImageArrays:
        return arrays.subset((arrays.groups == group).nonzero().squeeze(1))

    return [
        Task(id=i, name=f"{dataset.name} {value}", classes=classes, class_names=list(dataset.class_names),
             train=rows(dataset.train, i), test=rows(dataset.test, i), mean=mean, std=std, source=dataset.name)
        for i, value in enumerate(dataset.group_names or [])
    ]


def sequence(datasets: list[DatasetSplits]) -> list[Task]:
    """One task per dataset (e.g. the 5-dataset sequence); all must share one image shape."""
    shapes = {tuple(d.train.images.shape[1:]) for d in datasets}
    if len(shapes) != 1:
        raise ValueError(f"datasets in a sequence must share one image shape, got {sorted(shapes)}")
    tasks = []
    for i, d in enumerate(datasets):
        mean, std = channel_stats(d.train.images)
        classes = list(range(len(d.class_names)))
        tasks.append(
            Task(id=i, name=d.name, classes=classes, class_names=list(d.class_names), train=d.train,
                 test=d.test, mean=mean, std=std, source=d.name)
        )
    return tasks


def to_rgb32(arrays: ImageArrays) -> ImageArrays:
    """Grey 28×28 → 3×32×32 (pad 2 on each side, repeat the channel), as in the 5-dataset sequence."""
    x = arrays.images
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    pad_h, pad_w = 32 - x.shape[2], 32 - x.shape[3]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"images of shape {tuple(x.shape[1:])} are larger than 32×32")
    x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return ImageArrays(x.contiguous(), arrays.labels)


def _stratified_pick(labels: torch.Tensor, fraction: float, g: torch.Generator, leave_one: bool = False
                     ) -> torch.Tensor:
    """A boolean mask selecting ``fraction`` of each class (at least one sample per class; ``leave_one``: never a
    class's last sample, so a held-out split cannot take all a class has to train on)."""
    pick = torch.zeros(labels.shape[0], dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        count = max(1, round(fraction * idx.numel()))
        pick[idx[: min(count, idx.numel() - 1) if leave_one else count]] = True
    return pick


def finalize(
    tasks: list[Task],
    scenario: str,
    seed: int,
    validation: float = 0.0,
    train_fraction: float = 1.0,
    max_tasks: int | None = None,
    test_fraction: float = 1.0,
) -> list[Task]:
    """Cut the sequence, hold out a stratified validation split, subsample training (and test) data, set label
    offsets."""
    if max_tasks is not None:
        tasks = tasks[:max_tasks]
    if scenario == "domain" and len({t.num_classes for t in tasks}) > 1:
        raise UserError("domain-incremental needs every task to have the same number of classes; use --scenario task")
    g = torch.Generator().manual_seed(seed + 7919)
    g_test = torch.Generator().manual_seed(seed + 7927)  # its own generator: train and validation picks unchanged
    out, offset = [], 0
    for i, task in enumerate(tasks):
        train, val = task.train, None
        if validation > 0:
            held = _stratified_pick(train.labels, validation, g, leave_one=True)
            val = train.subset(held.nonzero().squeeze(1))
            if train.labels.numel() and val.labels.numel() == 0:  # its accuracy would read 0 for any model
                raise UserError(f"task {i + 1} has no validation rows: each of its classes has a single training "
                                "row, which training keeps; set data.validation to 0, or give the classes two rows "
                                "or more")
            train = train.subset((~held).nonzero().squeeze(1))
        if train_fraction < 1.0:
            train = train.subset(_stratified_pick(train.labels, train_fraction, g).nonzero().squeeze(1))
        if task.train.labels.numel() == 0:  # the picks above keep a row of every class that has one
            raise UserError(f"task {i + 1} has no training rows; give it some (own data: a smaller "
                            "data.source.test_split)")
        test = task.test
        if test_fraction < 1.0:
            test = test.subset(_stratified_pick(test.labels, test_fraction, g_test).nonzero().squeeze(1))
        out.append(replace(task, id=i, train=train, val=val, test=test, label_offset=offset if scenario == "class" else 0))
        offset += task.num_classes
    return out
