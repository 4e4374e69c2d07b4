"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017): CE on the current head plus λ Σ over old
heads of KL(softmax(teacher/T) ‖ softmax(student/T)) on the current task's inputs, the teacher a frozen copy.

The objective, the choices (KL, sum over heads, no T², the scenarios, the teacher's outputs computed once per
task) and van de Ven et al.'s weighting: docs/methods.md, section ``lwf``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import Batch, TaskView, eval_batches
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.models.heads import Network


class Params(base.Params):
    lam: float = Field(1.0, ge=0.0, description="weight λ of the distillation loss (Li & Hoiem: 1)")
    temperature: float = Field(2.0, gt=0.0, description="softmax temperature T of the distillation (Li & Hoiem: 2)")
    head_reduction: Literal["sum", "mean"] = Field(
        "sum", description="combine the old heads' distillation terms by their sum (the specification's choice) "
                       "or their mean")
    t_squared: bool = Field(False, description="multiply the distillation by T² (Hinton 2015; Li & Hoiem do not)")
    lam_by_tasks: bool = Field(False, description="multiply λ by the number of old tasks: van de Ven et al. 2019's "
                               "(1/t)·CE + (1 − 1/t)·distillation, up to the overall factor 1/t (their distillation "
                               "is the mean over old heads: head_reduction mean)")
    student_classes: Literal["old", "seen"] = Field(
        "old", description="class-incremental: the student's softmax in the distillation over the classes the "
        "teacher knew (old) or over every class seen so far, the new ones with target 0 (seen; van de Ven et al.)")


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of KL(softmax(teacher/T) ‖ softmax(student/T)). The student may have more outputs than
    the teacher (its first ones match the teacher's): the target puts probability 0 on the extra ones."""
    return kl_to(student, F.log_softmax(teacher / temperature, dim=1), temperature)


def kl_to(student: torch.Tensor, log_p: torch.Tensor, temperature: float) -> torch.Tensor:
    """``soft_kl`` with the teacher given as its log-probabilities ``log_p`` at temperature T."""
    log_q = F.log_softmax(student / temperature, dim=1)[:, : log_p.shape[1]]
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def frozen(network: Network) -> Network:
    """``network`` in eval mode with no trainable parameters (a teacher)."""
    for p in network.parameters():
        p.requires_grad_(False)
        p.grad = None
    return network.eval()


class LwF(Method):
    name = "lwf"
    description = "Learning without Forgetting: distil a frozen copy's old-head outputs on new data (Li & Hoiem 2016)"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher: Network | None = None  # the model as it was before the current task
        self.old_tasks: list[int] = []  # tasks the teacher was trained on
        self._view: TaskView | None = None  # the current task's training data
        self._cache: dict[str, list[torch.Tensor]] | None = None  # teacher_terms of every row of _view
        self._rows: torch.Tensor | None = None  # the current batch's rows in _view, when the cache serves it

    # --- hooks ---
    def before_task(self, task: Task) -> None:
        self.old_tasks = list(range(task.id))
        self.teacher = frozen(copy.deepcopy(self.model)) if task.id > 0 else None
        self._view = self._cache = None
        super().before_task(task)

    def before_epoch(self, task: Task, train: TaskView, epoch: int) -> None:
        super().before_epoch(task, train, epoch)
        if self._view is not train:
            self._view, self._cache = train, None

    def after_task(self, task: Task, train) -> None:
        self.teacher = None  # a later before_task takes a fresh copy; keeps boundary checkpoints small
        self._view = self._cache = None

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """The step, with the teacher's outputs read from the per-task cache when the batch's rows are plain
        (not augmented) rows of the task's view; otherwise the teacher runs on the batch."""
        view = self._view
        if (self.teacher is not None and view is not None and not batch.augmented and batch.rows is not None
                and isinstance(batch.task_ids, int) and batch.task_ids == view.task.id):
            if self._cache is None:
                self._cache = self.teacher_cache(view)
            self._rows = batch.rows
        try:
            return super().train_batch(batch)
        finally:
            self._rows = None

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        features = self.model.features(x)
        logits = self.model.logits(features, task_ids)
        loss = F.cross_entropy(logits, y)
        if self.teacher is None:
            return loss
        if self._rows is None:
            terms = self.teacher_terms(self.teacher_features(x))
        else:
            terms = {k: [t.index_select(0, self._rows) for t in v] for k, v in self._cache.items()}
        if self.params.lam > 0:
            lam = self.params.lam * (len(self.old_tasks) if self.params.lam_by_tasks else 1)
            loss = loss + lam * self.distil(features, logits, terms["log_p"])
        return loss + self.terms_penalty(features, terms)

    # --- the teacher's side, per batch or once per task ---
    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher.features(x)

    def teacher_terms(self, teacher_features: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """What the losses need from the teacher, per input row: its log-probabilities at T, per old head."""
        T = self.params.temperature
        with torch.no_grad():
            return {"log_p": [F.log_softmax(t / T, dim=1) for t in self.old_outputs(self.teacher, teacher_features)]}

    def teacher_cache(self, view: TaskView) -> dict[str, list[torch.Tensor]]:
        """``teacher_terms`` of every row of ``view``, in one pass in evaluation batches: O(rows × old outputs)."""
        parts = [self.teacher_terms(self.teacher_features(x))
                 for x, _ in eval_batches(view, self.train_config.eval_batch_size)]
        return {k: [torch.cat([p[k][i] for p in parts]) for i in range(len(v))] for k, v in parts[0].items()}

    # --- the distillation term ---
    def old_width(self) -> int:
        """Outputs of the shared head that the teacher knew (class: classes of earlier tasks; domain: all)."""
        counts = self.model.class_counts
        return sum(counts[: len(self.old_tasks)]) if self.model.scenario == "class" else counts[0]

    def old_outputs(self, network: Network, features: torch.Tensor, logits: torch.Tensor | None = None
                    ) -> list[torch.Tensor]:
        """``network``'s logits of every old head (one tensor per old task; one tensor for a shared head).
        For a shared head, ``logits`` (already computed, at least ``old_width`` wide) is reused if given."""
        if self.model.scenario == "task":  # the old heads as one linear layer: one matrix product, not one per head
            heads = [network.head(k) for k in self.old_tasks]
            joined = F.linear(features, torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads]))
            return list(joined.split([h.out_features for h in heads], dim=1))
        full = network.heads["shared"](features) if logits is None else logits
        return [full[:, : self.old_width()]]

    def distillation(self, features: torch.Tensor, logits: torch.Tensor, teacher_features: torch.Tensor
                     ) -> torch.Tensor:
        """Σ (or mean) over old heads of the softened KL, teacher → student."""
        return self.distil(features, logits, self.teacher_terms(teacher_features)["log_p"])

    def distil(self, features: torch.Tensor, logits: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        """``distillation`` from the teacher's log-probabilities per old head (``teacher_terms``)."""
        T = self.params.temperature
        seen = self.model.scenario == "class" and self.params.student_classes == "seen"
        students = [logits] if seen else self.old_outputs(self.model, features, logits)
        total = sum(kl_to(s, t, T) for s, t in zip(students, targets))
        if self.params.head_reduction == "mean":
            total = total / len(students)
        return total * T * T if self.params.t_squared else total

    def terms_penalty(self, features: torch.Tensor, terms: dict[str, list[torch.Tensor]]) -> torch.Tensor | float:
        """Extra terms on the features against the teacher's (EBLL's code loss); none for LwF."""
        return 0.0

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {"teacher": None if self.teacher is None else self.teacher.state_dict(), "old_tasks": self.old_tasks}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.old_tasks = [int(k) for k in state["old_tasks"]]
        self.teacher = self._view = self._cache = None  # the cache is rebuilt from the teacher on first use
        if state["teacher"] is not None:
            teacher = self.build_network()
            teacher.load_state_dict(state["teacher"])
            self.teacher = frozen(teacher)
