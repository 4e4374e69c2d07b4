"""The in-memory form every source produces: uint8 images (N, C, H, W) or float32 feature vectors (N, D, 1, 1),
and int64 labels (N,)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageArrays:
    """One split of one dataset, held in memory as tensors; ``groups`` is each row's task-column value (an index
    into ``DatasetSplits.group_names``) where the source has a task column."""

    images: torch.Tensor  # uint8 (N, C, H, W) pixels, or float32 (N, D, 1, 1) features (D channels of 1×1 images)
    labels: torch.Tensor  # int64, (N,)
    groups: torch.Tensor | None = None  # int64, (N,)

    def __post_init__(self) -> None:
        if self.images.dtype not in (torch.uint8, torch.float32) or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 or float32 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be int64 (N,) matching the images")
        if self.groups is not None and (self.groups.dtype != torch.int64 or self.groups.shape != self.labels.shape):
            raise ValueError("groups must be int64 (N,) matching the labels")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def features(self) -> bool:
        """Whether the rows are float feature vectors rather than uint8 pixels."""
        return self.images.dtype == torch.float32

    def subset(self, index: torch.Tensor) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index], None if self.groups is None else self.groups[index])


@dataclass
class DatasetSplits:
    """A dataset's train and test splits and its class names (and its task-column values, where it has one)."""

    name: str
    train: ImageArrays
    test: ImageArrays
    class_names: list[str]
    group_names: list[str] | None = None
