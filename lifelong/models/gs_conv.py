"""The 4-block conv network of the group-sparse filter-mask method (document 000), with per-task BN and calibration.

Each block is Conv3×3 (shared by all tasks) → BatchNorm (the task's own) → ReLU → calibration (the task's own
squeeze-excitation channel scaling) → MaxPool2 (computed as pool, then scale: the same numbers, less work). Per-task modules are created when a task is first seen, from a
generator seeded by the network's seed and the task id, so they do not depend on when they are created (resume,
evaluating a future task first). A per-layer filter mask switches filters off: their conv outputs are exact
zeros before the task's BatchNorm, as if their weights and bias were zero (they are multiplied by the mask).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import UserError


class Calibration(nn.Module):
    """Squeeze-excitation channel scaling: x ⊙ sigmoid(W₂ · ReLU(W₁ · GAP(x))), hidden width channels // reduction."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, max(1, channels // reduction))
        self.excite = nn.Linear(max(1, channels // reduction), channels)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The channel scales (B, C, 1, 1), each in (0, 1)."""
        pooled = x.sum((2, 3)) / (x.shape[2] * x.shape[3])  # x.mean((2, 3)), bit for bit on the CPU; its gradient
        # stays a broadcast view (mean's backward writes a full-size map)
        return torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)


class TaskModules(nn.Module):
    """One task's BatchNorm and calibration for every block."""

    def __init__(self, filters: int, blocks: int, reduction: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(filters) for _ in range(blocks))
        self.calibrations = nn.ModuleList(Calibration(filters, reduction) for _ in range(blocks))


def _seeded_linear_init_(layer: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's default initialisation, drawn from ``generator``."""
    w = torch.empty(layer.weight.shape)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    layer.weight.copy_(w)
    layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=generator))


def max_pool2(h: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(h, 2)``; without autograd as three elementwise maxima of its strided quarters (the same values,
    ~7× faster on the CPU than the kernel, which also computes the indices a backward pass needs)."""
    if torch.is_grad_enabled() and h.requires_grad:
        return F.max_pool2d(h, 2)
    height, width = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    q = [h[..., i:height:2, j:width:2] for i in (0, 1) for j in (0, 1)]
    return torch.maximum(torch.maximum(q[0], q[1]), torch.maximum(q[2], q[3]))


class FilterMaskedConvNet(nn.Module):
    """``net(x, task_id, masks)`` → features (B, out_features) through task ``task_id``'s modules; method gs-mask
    passes masks, other task-incremental methods run it without (``Network`` passes the task id)."""

    name = "gs-conv"
    task_conditioned = True  # Network passes each batch's task id (heads.py)

    def __init__(self, in_shape: tuple[int, int, int], filters: int = 32, blocks: int = 4, reduction: int = 4):
        super().__init__()
        channels, height, width = in_shape
        if filters < 1 or blocks < 1 or reduction < 1:
            raise UserError(f"gs-conv options filters, blocks and reduction must be positive, got "
                            f"{filters}, {blocks}, {reduction}")
        if min(height, width) < 2 ** blocks:
            raise UserError(f"gs-conv with {blocks} blocks needs inputs of at least {2 ** blocks}×{2 ** blocks}, "
                            f"got {height}×{width}; use fewer blocks (model.blocks)")
        self.filters, self.blocks, self.reduction = filters, blocks, reduction
        self.convs = nn.ModuleList(nn.Conv2d(channels if k == 0 else filters, filters, 3, padding=1)
                                   for k in range(blocks))
        self.tasks = nn.ModuleDict()
        self.register_buffer("seed", torch.randint(0, 2**31 - 1, ()))  # per-task init, from the run's seed
        self.out_features: int = filters * (height >> blocks) * (width >> blocks)

    def task_modules(self, task_id: int) -> TaskModules:
        """Task ``task_id``'s BatchNorms and calibrations, created (deterministically) on first use."""
        key = str(task_id)
        if key not in self.tasks:
            device = self.convs[0].weight.device
            g = torch.Generator().manual_seed(int(self.seed) * 1000003 + task_id)
            with torch.inference_mode(False), torch.no_grad():
                modules = TaskModules(self.filters, self.blocks, self.reduction)
                for calibration in modules.calibrations:
                    _seeded_linear_init_(calibration.squeeze, g)
                    _seeded_linear_init_(calibration.excite, g)
                self.tasks[key] = modules.to(device)
        return self.tasks[key]

    @torch.no_grad()
    def redraw_filters_(self, masks: list[torch.Tensor], draw: int) -> None:
        """Give the filters where ``masks[l]`` is True a fresh Conv2d default initialisation (weights and bias),
        drawn from a generator seeded by the network's seed and ``draw``."""
        g = torch.Generator().manual_seed(int(self.seed) * 1000003 + 500009 + draw)
        for conv, mask in zip(self.convs, masks):
            weight = torch.empty(conv.weight.shape)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=g)
            bound = 1.0 / math.sqrt(weight[0].numel())
            bias = torch.empty(conv.bias.shape).uniform_(-bound, bound, generator=g)
            mask = mask.to(conv.weight.device)
            conv.weight.copy_(torch.where(mask.view(-1, 1, 1, 1), weight.to(conv.weight.device), conv.weight))
            conv.bias.copy_(torch.where(mask, bias.to(conv.bias.device), conv.bias))

    @torch.no_grad()
    def recompute_statistics_(self, batches: Iterable[torch.Tensor], task_id: int, masks: list[torch.Tensor]) -> None:
        """Task ``task_id``'s BatchNorm running statistics as the mean over ``batches`` of their batch statistics
        with the weights as they are now (the running averages lag behind weights that moved during training)."""
        norms, was_training = self.task_modules(task_id).norms, self.training
        momentum = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        self.train()
        try:
            for x in batches:
                self(x, task_id, masks)
        finally:
            for bn, m in zip(norms, momentum):
                bn.momentum = m
            self.train(was_training)

    def forward(self, x: torch.Tensor, task_id: int | None = None, masks: list[torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Features of ``x`` through task ``task_id``'s BN and calibration; ``masks[l]`` (bool, one per filter of
        block l) keeps the filters that are on, None = all on."""
        if not isinstance(task_id, int):
            raise UserError("model gs-conv needs the task id of each batch (its BatchNorm and calibration are the "
                            "task's own); call it through Network, which passes it")
        modules = self.task_modules(task_id)
        h = x
        for block, conv in enumerate(self.convs):
            if masks is None:
                h = conv(h)
            else:  # a switched-off filter's output is exactly 0 (and so is its gradient)
                on = masks[block].to(conv.weight.dtype)
                h = F.conv2d(h, conv.weight * on.view(-1, 1, 1, 1), conv.bias * on, padding=1)
            h = F.relu(modules.norms[block](h))  # not in place: the importance closed form reads the BN output
            # calibrate after pooling: a positive per-channel scale commutes with max, exactly, on 4× fewer values.
            # The scale first: backward then meets the pooling's gradient first and adds the scale's into it in
            # place, keeping its memory layout (a channels-last ReLU backward on a channel-major gradient is ~7× slower)
            scale = modules.calibrations[block].scale(h)
            h = max_pool2(h) * scale
        return h.flatten(1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Create the per-task modules a state holds before they are loaded."""
        for key in state_dict:
            parts = key[len(prefix):].split(".") if key.startswith(prefix) else []
            if len(parts) > 1 and parts[0] == "tasks":
                self.task_modules(int(parts[1]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
