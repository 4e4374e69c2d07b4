"""Backbones: modules mapping a float image batch (B, C, H, W) to features (B, out_features), built by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong.errors import UserError, unknown
from lifelong.models.conv import AlexNetLike
from lifelong.models.gs_conv import FilterMaskedConvNet
from lifelong.models.heads import Network
from lifelong.models.mark import KnowledgeBase
from lifelong.models.mlp import MLP
from lifelong.models.resnet import ReducedResNet18

MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mlp": (MLP, "fully connected ReLU network on flattened pixels (default 2×400)"),
    "alexnet": (AlexNetLike, "small AlexNet-like conv net of HAT, ACL and MARK (3 conv + 2×2048 FC)"),
    "resnet18-reduced": (ReducedResNet18, "reduced ResNet-18 of GEM (nf=20 base filters, global average pooling)"),
    "gs-conv": (FilterMaskedConvNet, "4 × (Conv3×3 32 → per-task BN → ReLU → per-task calibration → MaxPool2); "
                                     "gs-mask's network, also for task-incremental methods that name the task"),
    "mark-kb": (KnowledgeBase, "MARK's knowledge base: 3 conv blocks without BatchNorm + FC (no masks outside mark)"),
}


def build_backbone(name: str, in_shape: tuple[int, int, int], **options: Any) -> nn.Module:
    """Construct the backbone registered as ``name``, turning bad names or options into one-line UserErrors."""
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    if len(in_shape) != 3:
        raise UserError(f"model input shape must be (C, H, W), got {tuple(in_shape)}")
    constructor = MODELS[name][0]
    valid = list(inspect.signature(constructor).parameters)[1:]
    for option in options:
        if option not in valid:
            raise UserError(f"model option {option!r} is not valid for {name}; valid: {', '.join(valid)}")
    try:
        return constructor(tuple(in_shape), **options)
    except (TypeError, ValueError) as error:
        raise UserError(f"invalid options for model {name}: {error}") from error


@dataclass(frozen=True)
class NetworkFactory:
    """Builds fresh networks for one benchmark: the configured backbone, or one a method names (mark's KB)."""

    backbone: str
    options: dict[str, Any]
    in_shape: tuple[int, int, int]
    scenario: str
    class_counts: list[int]
    head_seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mask_unseen: bool = True  # class-incremental: outputs of classes not reached yet cut off (train.unseen_outputs)

    def __call__(self, backbone: str | None = None, **options: Any) -> Network:
        """A network on ``device`` around ``backbone`` with ``options`` (default: the configured ones)."""
        name, options = (self.backbone, self.options) if backbone is None else (backbone, options)
        module = build_backbone(name, self.in_shape, **options)
        return Network(module, self.scenario, self.class_counts, head_seed=self.head_seed,
                       mask_unseen=self.mask_unseen).to(self.device)


__all__ = ["MODELS", "AlexNetLike", "FilterMaskedConvNet", "KnowledgeBase", "MLP", "NetworkFactory", "Network",
           "ReducedResNet18", "build_backbone"]
