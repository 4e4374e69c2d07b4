"""iCaRL (Rebuffi, Kolesnikov, Sperl & Lampert, CVPR 2017): class-incremental training on the task's rows plus
herded exemplars with a sigmoid cross-entropy that distils the old classes from a frozen copy, and a
nearest-mean-of-exemplars classifier; docs/methods.md, "icarl"."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError
from lifelong.methods import base
from lifelong.methods.lwf import frozen
from lifelong.methods.memory import MemoryRows, herding
from lifelong.methods.rehearsal import Rehearsal, with_memory
from lifelong.models.heads import Network


class Params(base.Params):
    """Section ``icarl``: iCaRL has no hyperparameters of its own (the exemplar budget is ``memory.size``)."""


def class_means(features: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Row c: the mean of the L2-normalised features of class c's rows, L2-normalised again (paper, Alg. 1)."""
    phi = F.normalize(features.flatten(1), dim=1)
    sums = phi.new_zeros(classes, phi.shape[1]).index_add_(0, targets, phi)
    return F.normalize(sums / torch.bincount(targets, minlength=classes).clamp_min(1).unsqueeze(1), dim=1)


def nearest_mean_scores(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """−‖φ(x) − μ_y‖ for each class y (φ L2-normalised): the argmax is the nearest mean."""
    return -torch.cdist(F.normalize(features.flatten(1), dim=1), means)


class ICaRL(Rehearsal):
    name = "icarl"
    description = "iCaRL: herded exemplars, sigmoid distillation, nearest-mean-of-exemplars classifier (Rebuffi 2017)"
    Params = Params
    Combined = with_memory(Params)
    task_features = False  # nearest mean of exemplars in a task-free feature space
    scenarios = ("class",)  # one growing set of classes: the paper's setting (docs/methods.md)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher: Network | None = None  # the network as it was before the current task
        self.means = torch.zeros(0, self.model.backbone.out_features, device=self.device())

    def check_benchmark(self, benchmark: Benchmark) -> None:
        super().check_benchmark(benchmark)
        classes = sum(len(t.classes) for t in benchmark.tasks)
        if self.params.memory.size < classes:
            raise UserError(f"memory.size {self.params.memory.size} leaves no exemplar for some of the benchmark's "
                            f"{classes} classes; set memory.size to at least {classes}")

    # --- training: the task's rows plus the exemplars, sigmoid cross-entropy with distilled old classes ---
    def training_views(self, task: Task, seen: list[TaskView]) -> list[TaskView]:
        own = super().training_views(task, seen)
        if not len(self.memory):
            return own
        held = self.memory.rows()
        return own + [self.views[k].with_rows(held.raw[held.task_ids == k], held.targets[held.task_ids == k])
                      for k in held.task_ids.unique().tolist()]

    def before_task(self, task: Task) -> None:
        self.teacher = frozen(copy.deepcopy(self.model)) if task.id > 0 else None
        super().before_task(task)

    def targets(self, x: torch.Tensor, y: torch.Tensor, width: int) -> torch.Tensor:
        """BCE targets over the ``width`` classes seen: the old network's sigmoid outputs for its classes, one-hot
        of y for the new ones."""
        targets = F.one_hot(y, width).float()
        if self.teacher is not None:
            old = int(self.teacher.classes_seen)
            with torch.no_grad():
                targets[:, :old] = torch.sigmoid(self.teacher.logits(self.teacher.features(x), 0, all_classes=True)
                                                 [:, :old])
        return targets

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """Σ over the classes seen of the binary cross-entropy of their sigmoid outputs, mean over the batch."""
        logits = self.model(x, task_ids)
        bce = F.binary_cross_entropy_with_logits(logits, self.targets(x, y, logits.shape[1]), reduction="none")
        return bce.sum(1).mean()

    # --- after the task: exemplar sets by herding, class means ---
    @torch.no_grad()
    def embed(self, inputs: Any, n: int) -> torch.Tensor:
        """Backbone features of ``inputs(slice)`` for rows 0..n-1, in evaluation-sized batches."""
        size = self.train_config.eval_batch_size
        return torch.cat([self.model.features(inputs(slice(i, i + size))) for i in range(0, n, size)])

    def exemplar_sets(self, task: Task, train: TaskView, m: int) -> MemoryRows:
        """The old classes' sets cut to their first m rows (herding order), then the new classes' sets herded
        from the task's training rows; grouped by class, each in selection order (paper, Alg. 2, 4 and 5)."""
        parts = []
        if len(self.memory):
            held = self.memory.rows()
            kept = torch.cat([(held.targets == c).nonzero().squeeze(1)[:m] for c in held.targets.unique().tolist()])
            parts.append(MemoryRows(held.raw[kept], held.targets[kept], held.task_ids[kept]))
        features = self.embed(train.inputs, len(train))
        for c in train.targets.unique().tolist():
            rows = (train.targets == c).nonzero().squeeze(1)
            chosen = rows[herding(features[rows], m)]
            parts.append(MemoryRows(train.rows(chosen), train.targets[chosen], torch.full_like(chosen, task.id)))
        return MemoryRows(*(torch.cat([getattr(p, f) for p in parts]) for f in ("raw", "targets", "task_ids")))

    def after_task(self, task: Task, train: TaskView) -> None:
        """Exemplar sets for m = memory.size // classes seen per class, then the class means of their features."""
        self.teacher = None
        was_training = self.model.training
        self.model.eval()
        classes = int(self.model.classes_seen)
        self.memory.replace(self.exemplar_sets(task, train, self.params.memory.size // classes))
        exemplars = self.memory.rows()
        x = self.inputs(exemplars)
        self.means = class_means(self.embed(x.__getitem__, len(x)), exemplars.targets, classes)
        self.model.train(was_training)

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Nearest mean of exemplars over the classes seen; the network's outputs before the first task ends."""
        if not len(self.means):
            return self.model(x, task_id)
        return nearest_mean_scores(self.model.features(x), self.means)

    def task_log(self) -> dict[str, Any]:
        return {"exemplars_per_class": self.memory.class_counts(len(self.means)).tolist()}

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "means": self.means,
                "teacher": None if self.teacher is None else self.teacher.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.means = state["means"]
        self.teacher = None
        if state["teacher"] is not None:
            teacher = self.build_network()
            teacher.load_state_dict(state["teacher"])
            self.teacher = frozen(teacher)
