"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017): CE on the current head plus λ Σ over old
heads of KL(softmax(teacher/T) ‖ softmax(student/T)) on the current task's inputs, the teacher a frozen copy.

The objective, the choices (KL, sum over heads, no T², the scenarios, the teacher's outputs computed once per
task) and van de Ven et al.'s weighting: docs/methods.md, section ``lwf``.
"""

from __future__ import annotations

import copy
import itertools
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


def segment_log_softmax(z: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """log_softmax over each run of ``widths`` consecutive columns of ``z`` (one op when the runs are equal)."""
    if len(widths) == 1:
        return F.log_softmax(z, dim=1)
    if all(w == widths[0] for w in widths):
        return F.log_softmax(z.reshape(z.shape[0], -1, widths[0]), dim=2).reshape(z.shape[0], -1)
    return torch.cat([F.log_softmax(part, dim=1) for part in z.split(widths, dim=1)], dim=1)


def heads_kl(z: torch.Tensor, log_p: torch.Tensor, widths: list[int], temperature: float,
             scale: float = 1.0) -> torch.Tensor:
    """scale Σ over heads of the mean over rows of KL(p ‖ softmax(z/T)): head h owns widths[h] consecutive columns
    of ``z`` and of the teacher's ``log_p`` (joined over heads). One head may be wider in ``z`` than in ``log_p``
    (class-IL, every seen class): its extra outputs get target 0. Few Python-level calls: their cost, not the
    arithmetic, is what a step pays."""
    log_q = segment_log_softmax(z / temperature, widths if len(widths) > 1 else [z.shape[1]])
    if log_q.shape[1] != log_p.shape[1]:  # one student head wider than its teacher's
        log_q = log_q[:, : log_p.shape[1]]
    return F.kl_div(log_q, log_p, reduction="sum", log_target=True) * (scale / z.shape[0])


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
    task_features = False  # the teacher's old heads read the new data's task-free features

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher: Network | None = None  # the model as it was before the current task
        self.old_tasks: list[int] = []  # tasks the teacher was trained on
        self._view: TaskView | None = None  # the current task's training data
        self._cache: tuple[torch.Tensor, dict[str, slice]] | None = None  # teacher_cache of _view
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
            matrix, layout = self._cache
            picked = matrix.index_select(0, self._rows)
            terms = {k: picked[:, columns] for k, columns in layout.items()}
        if self.params.lam > 0:
            lam = self.params.lam * (len(self.old_tasks) if self.params.lam_by_tasks else 1)
            loss = loss + self.distil(features, logits, terms, lam)
        penalty = self.terms_penalty(features, terms)
        return loss + penalty if isinstance(penalty, torch.Tensor) else loss

    # --- the teacher's side, per batch or once per task ---
    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher.features(x)

    def teacher_terms(self, teacher_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the losses need from the teacher, per input row: its log-probabilities at T, every old head's side
        by side."""
        T = self.params.temperature
        with torch.no_grad():
            log_p = segment_log_softmax(self.old_logits(self.teacher, teacher_features) / T, self.old_widths())
            return {"log_p": log_p}

    def teacher_cache(self, view: TaskView) -> tuple[torch.Tensor, dict[str, slice]]:
        """``teacher_terms`` of every row of ``view``, in one pass in evaluation batches, side by side in one matrix
        (one row gather per step) with each term's columns: O(rows × old outputs)."""
        parts = [self.teacher_terms(self.teacher_features(x))
                 for x, _ in eval_batches(view, self.train_config.eval_batch_size)]
        keys = list(parts[0])
        bounds = [0, *itertools.accumulate(parts[0][k].shape[1] for k in keys)]
        layout = {k: slice(a, b) for k, a, b in zip(keys, bounds, bounds[1:])}
        return torch.cat([torch.cat([part[k] for k in keys], dim=1) for part in parts]), layout

    # --- the distillation term ---
    def old_width(self) -> int:
        """Outputs of the shared head that the teacher knew (class: classes of earlier tasks; domain: all)."""
        counts = self.model.class_counts
        return sum(counts[: len(self.old_tasks)]) if self.model.scenario == "class" else counts[0]

    def old_widths(self) -> list[int]:
        """The teacher's outputs per old head (one entry for a shared head)."""
        if self.model.scenario == "task":
            return [self.model.class_counts[k] for k in self.old_tasks]
        return [self.old_width()]

    def old_logits(self, network: Network, features: torch.Tensor, logits: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """``network``'s logits of every old head side by side (task: one linear layer of the old heads, one matrix
        product; shared head: its first ``old_width`` outputs, from ``logits`` when given)."""
        if self.model.scenario == "task":
            heads = [network.head(k) for k in self.old_tasks]
            return F.linear(features, torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads]))
        full = network.heads["shared"](features) if logits is None else logits
        return full[:, : self.old_width()]

    def distillation(self, features: torch.Tensor, logits: torch.Tensor, teacher_features: torch.Tensor
                     ) -> torch.Tensor:
        """Σ (or mean) over old heads of the softened KL, teacher → student."""
        return self.distil(features, logits, self.teacher_terms(teacher_features))

    def distil(self, features: torch.Tensor, logits: torch.Tensor, terms: dict[str, torch.Tensor],
               scale: float = 1.0) -> torch.Tensor:
        """scale × ``distillation`` from the teacher's ``teacher_terms`` (``heads_kl``)."""
        T, widths = self.params.temperature, self.old_widths()
        seen = self.model.scenario == "class" and self.params.student_classes == "seen"
        z = logits if seen else self.old_logits(self.model, features, logits)
        scale = scale / (len(widths) if self.params.head_reduction == "mean" else 1)
        scale = scale * (T * T if self.params.t_squared else 1.0)
        return heads_kl(z, terms["log_p"], widths, T, scale)

    def terms_penalty(self, features: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
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
