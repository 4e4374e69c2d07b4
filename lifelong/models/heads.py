"""Backbone + output heads. Task-incremental: one head per task, added as tasks arrive. Class- and
domain-incremental: one shared head (class-incremental masks the outputs of classes not yet reached)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lifelong.errors import UserError


class Network(nn.Module):
    """``network(x, task_ids)`` → logits in the target space of the scenario.

    ``task_ids`` is an int (every sample from one task, the fast path) or a tensor with one id per sample
    (mixed batches). With one head per task and a mixed batch, each sample gets its own task's logits,
    padded with -inf to the widest head so one cross-entropy covers the batch.
    """

    def __init__(self, backbone: nn.Module, scenario: str, class_counts: list[int], head_seed: int = 0,
                 mask_unseen: bool = True):
        super().__init__()
        self.backbone = backbone
        self.scenario = scenario
        self.mask_unseen = mask_unseen  # class-incremental: outputs of classes not reached yet are cut off
        self.class_counts = list(class_counts)
        self.head_seed = head_seed
        if self.task_conditioned and scenario != "task":
            raise UserError(f"model {self.backbone_name} needs the task-incremental scenario: it picks modules by "
                            "task id, which only that scenario gives at test time; set the scenario to task "
                            "(data.scenario, --scenario) or use another model")
        self.heads = nn.ModuleDict()
        self.register_buffer("classes_seen", torch.zeros((), dtype=torch.int64))
        if scenario != "task":
            width = sum(class_counts) if scenario == "class" else class_counts[0]
            self.heads["shared"] = self._new_head(width, 0)

    def _new_head(self, width: int, index: int) -> nn.Linear:
        """A linear head initialised like nn.Linear from its own generator, so it does not depend on when it
        is created (on resume, or when a future task is evaluated first). Real parameters even if it is first
        needed inside ``inference_mode``."""
        device = next(self.backbone.parameters()).device
        g = torch.Generator().manual_seed(self.head_seed * 1000003 + index)
        with torch.inference_mode(False), torch.no_grad():
            head = nn.Linear(self.backbone.out_features, width)
            w = torch.empty_like(head.weight, device="cpu")
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
            bound = 1.0 / math.sqrt(head.in_features)
            b = torch.empty_like(head.bias, device="cpu").uniform_(-bound, bound, generator=g)
            head.weight.copy_(w)
            head.bias.copy_(b)
            return head.to(device)

    def head(self, task_id: int) -> nn.Linear:
        """Task ``task_id``'s head (task-incremental), created on first use."""
        key = str(task_id)
        if key not in self.heads:
            if len(self.class_counts) <= task_id:
                raise IndexError(f"no class count known for task {task_id}; call add_task first")
            self.heads[key] = self._new_head(self.class_counts[task_id], task_id + 1)
        return self.heads[key]

    def add_task(self, num_classes: int) -> int:
        """Register one more task (a model that keeps learning after deployment); returns its id."""
        if self.scenario != "task":
            raise ValueError("only task-incremental networks grow new heads; shared heads have a fixed width")
        self.class_counts.append(num_classes)
        return len(self.class_counts) - 1

    def start_task(self, task_id: int) -> None:
        """Mark task ``task_id``'s classes as reached (class-incremental output masking)."""
        self.classes_seen.fill_(max(int(self.classes_seen), sum(self.class_counts[: task_id + 1])))
        self.prepare_task(task_id)

    def prepare_task(self, task_id: int) -> None:
        """Create task ``task_id``'s own parameters if missing: its head, a task-conditioned backbone's modules
        (before the task's optimizer is built, so that it trains them)."""
        if self.scenario == "task":
            self.head(task_id)
        if self.task_conditioned:
            self.backbone.task_modules(task_id)

    @property
    def backbone_name(self) -> str:
        """The backbone's registered name where it has one (its class name otherwise)."""
        return getattr(self.backbone, "name", type(self.backbone).__name__)

    @property
    def task_conditioned(self) -> bool:
        """Whether the backbone has modules of each task's own (gs-conv's BatchNorms and calibrations): it is called
        as ``backbone(x, task_id)``, creates them in ``task_modules(task_id)`` and holds them under ``tasks``."""
        return getattr(self.backbone, "task_conditioned", False)

    def per_task(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to one task only: a task-incremental head, a task-conditioned
        backbone's modules."""
        if name.startswith("heads."):
            return _head_index(name) is not None
        return self.task_conditioned and name.startswith("backbone.tasks.")

    def features(self, x: torch.Tensor, task_ids: int | torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's features; a task-conditioned backbone runs each task's rows through that task's modules."""
        if not self.task_conditioned:
            return self.backbone(x)
        if task_ids is None:
            raise UserError(f"model {self.backbone_name} has modules of each task's own (BatchNorm, calibration): "
                            "its features need the task id (Network.features(x, task_ids)); or use another model "
                            "(mlp, alexnet, resnet18-reduced)")
        if isinstance(task_ids, int) or task_ids.dim() == 0:
            return self.backbone(x, int(task_ids))
        out = None
        for t, rows in _rows_by_task(task_ids).items():
            part = self.backbone(x[rows], t)
            out = part.new_empty(x.shape[0], *part.shape[1:]) if out is None else out
            out[rows] = part
        return out

    def forward(self, x: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x, task_ids), task_ids)

    def logits(self, features: torch.Tensor, task_ids: int | torch.Tensor, all_classes: bool = False) -> torch.Tensor:
        """Head outputs for already computed features; ``all_classes`` keeps a class-incremental head's outputs
        for classes not reached yet (DER stores them), as every call does when ``mask_unseen`` is false."""
        if self.scenario == "domain" or (self.scenario == "class" and (all_classes or not self.mask_unseen)):
            return self.heads["shared"](features)
        if self.scenario == "class":
            last = task_ids if isinstance(task_ids, int) else int(task_ids.max())
            active = max(int(self.classes_seen), sum(self.class_counts[: last + 1]))
            return self.heads["shared"](features)[:, :active]
        if isinstance(task_ids, int):
            return self.head(task_ids)(features)
        by_task = _rows_by_task(task_ids)
        width = max(self.class_counts[t] for t in by_task)
        out = features.new_full((features.shape[0], width), float("-inf"))
        for t, rows in by_task.items():
            out[rows, : self.class_counts[t]] = self.head(t)(features[rows])
        return out

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        """Create the task heads the state holds before loading it."""
        for key in state:
            if (task_id := _head_index(key)) is not None:
                self.head(task_id)
        return super().load_state_dict(state, strict=strict, assign=assign)


def _rows_by_task(task_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """The row indices of each task id in a mixed batch."""
    return {t: (task_ids == t).nonzero().squeeze(1) for t in task_ids.unique().tolist()}


def _head_index(name: str) -> int | None:
    """The task of a task-incremental head's parameter ``heads.<k>.*`` (None for any other name)."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "heads" and len(parts) > 1 and parts[1].isdigit() else None
