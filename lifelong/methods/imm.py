"""Incremental Moment Matching (Lee, Kim, Jun, Ha & Zhang, NeurIPS 2017): mean-IMM (``imm-mean``) and mode-IMM
(``imm-mode``) merge the per-task solutions θ*_k, each task trained from the previous unmerged θ*_{t−1}.

The merges, L2- and drop-transfer, and how this file reads the paper and the authors' code: docs/methods.md,
section ``imm-mean``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch.func import functional_call

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import base
from lifelong.methods.ewc import FisherMode, fisher_diagonal
from lifelong.methods.importance import QuadraticPenalty, flatten, importance_tensors, parameter_names, unflatten
from lifelong.models.heads import Network

FISHER_FLOOR = 1e-8


class Params(base.Params):
    """Hyperparameters of both IMM variants (config section ``imm``)."""

    transfer: Literal["none", "l2", "drop"] = Field(
        "none", description="extra transfer while training task t from θ*_{t-1}: none (weight-transfer only), "
                            "l2 (l2·‖θ − θ*_{t-1}‖²) or drop (dropout on θ − θ*_{t-1})")
    l2: float = Field(1e-4, ge=0.0, description="λ of L2-transfer, λ‖θ − θ*_{t-1}‖² (authors' code default)")
    drop_p: float = Field(0.5, ge=0.0, lt=1.0, description="drop-transfer: probability that a parameter "
                                                             "element falls back to θ*_{t-1} at a step")
    alpha: list[float] | None = Field(None, description="merge weight of each task (positive; the first t are "
                                                          "renormalised after task t); None = equal")
    fisher: FisherMode = Field("sample", description="imm-mode: labels in the Fisher, as EWC's option: sample "
                               "(drawn from the model, the authors' code), empirical, max or expected")
    fisher_samples: int | None = Field(None, gt=0, description="imm-mode: cap on the training samples each "
                                       "Fisher uses (a random subset); None = all")

    @field_validator("alpha")
    @classmethod
    def _positive(cls, alpha: list[float] | None) -> list[float] | None:
        if alpha is not None and (not alpha or min(alpha) <= 0):
            raise ValueError("alpha needs one positive weight per task")
        return alpha


def merged_names(model: Network) -> list[str]:
    """Trainable parameters that IMM merges: all but each task's own (its head, gs-conv's per-task modules)."""
    return [n for n in parameter_names(model) if not model.per_task(n)]


class MeanIMM(base.Method):
    name = "imm-mean"
    description = "incremental moment matching: α-weighted mean of the per-task solutions (Lee 2017)"
    Params = Params
    section: ClassVar[str] = "imm"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.names = merged_names(self.model)
        tasks = len(self.model.class_counts)
        if self.params.alpha is not None and len(self.params.alpha) < tasks:
            raise UserError(f"imm.alpha has {len(self.params.alpha)} weights but the benchmark has {tasks} tasks; "
                            "give one weight per task or leave alpha unset for equal weights")
        self.penalty = QuadraticPenalty()
        self.tasks_done = 0
        self.anchor: torch.Tensor | None = None  # θ*_{t-1}: the unmerged solution of the last finished task
        self.precision_sum: torch.Tensor | None = None  # P = Σ α_k F_k
        self.weighted_sum: torch.Tensor | None = None  # Q = Σ α_k F_k θ*_k

    def precision(self, task: Task, train: TaskView) -> torch.Tensor:
        """F_k of mean-IMM: every task counts the same for every parameter."""
        return torch.ones((), device=self.anchor.device)

    def alpha(self, k: int) -> float:
        return 1.0 if self.params.alpha is None else float(self.params.alpha[k])

    # --- hooks ---
    def before_task(self, task: Task) -> None:
        if self.anchor is not None:
            self._write(self.anchor)  # train from θ*_{t-1}, not from the merged model
        super().before_task(task)
        self._set_penalty()

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        if self.params.transfer == "drop" and self.anchor is not None:
            logits = functional_call(self.model, self.effective_parameters(), (x, task_ids))
        else:
            logits = self.model(x, task_ids)
        return F.cross_entropy(logits, y)

    def effective_parameters(self) -> dict[str, torch.Tensor]:
        """Drop-transfer: θ*_{t-1} + m ⊙ (θ − θ*_{t-1}) / (1 − p) with a fresh mask m, differentiable in θ."""
        theta = flatten(self.model, self.names)
        keep = 1.0 - self.params.drop_p
        mask = torch.rand_like(theta, requires_grad=False).lt_(keep)  # 0/1 floats; 3× faster than bernoulli_
        return unflatten(self.model, self.names, torch.addcmul(self.anchor, mask, theta - self.anchor, value=1 / keep))

    def after_task(self, task: Task, train: TaskView) -> None:
        self.anchor = flatten(self.model, self.names).detach().clone()
        a = self.alpha(self.tasks_done)
        f = self.precision(task, train)
        p, q = a * f, a * f * self.anchor
        self.precision_sum = p if self.precision_sum is None else self.precision_sum + p
        self.weighted_sum = q if self.weighted_sum is None else self.weighted_sum + q
        self.tasks_done += 1
        self._write(self.merged())

    def merged(self) -> torch.Tensor:
        """The IMM solution over the finished tasks, as a flat vector in ``names`` order."""
        return self.weighted_sum / self.precision_sum

    def report(self) -> dict[str, Any]:
        used = [self.alpha(k) for k in range(self.tasks_done)]
        return {"alpha": [a / sum(used) for a in used], "transfer": self.params.transfer}

    def diagnostics(self, train: TaskView) -> dict[str, torch.Tensor]:
        """IMM's precision P = Σ α_k F_k per merged parameter (imm-mode; mean-IMM's is one number: none)."""
        if self.precision_sum is None or self.precision_sum.dim() == 0:
            return {}
        return importance_tensors(self.model, self.names, self.precision_sum)

    # --- helpers and state ---
    def _write(self, vector: torch.Tensor) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, value in unflatten(self.model, self.names, vector).items():
                params[n].copy_(value)

    def _set_penalty(self) -> None:
        if self.params.transfer == "l2" and self.anchor is not None and self.params.l2 > 0:
            self.penalty.set_terms(self.names, [(self.params.l2, torch.ones_like(self.anchor), self.anchor)])
        else:
            self.penalty = QuadraticPenalty()

    def extra_state(self) -> dict[str, Any]:
        return {"tasks_done": self.tasks_done, "anchor": self.anchor, "precision_sum": self.precision_sum,
                "weighted_sum": self.weighted_sum}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.tasks_done = int(state["tasks_done"])
        self.anchor, self.precision_sum, self.weighted_sum = (state[k] for k in ("anchor", "precision_sum",
                                                                                 "weighted_sum"))
        self._set_penalty()  # a resume inside a task skips before_task


class ModeIMM(MeanIMM):
    name = "imm-mode"
    description = "incremental moment matching: Fisher-weighted mode of the per-task solutions (Lee 2017)"

    def precision(self, task: Task, train: TaskView) -> torch.Tensor:
        """F_k: the diagonal Fisher at θ*_k on task k's training data, floored at 1e-8."""
        p = self.params
        fisher = fisher_diagonal(self.model, self.names, train, task.id, p.fisher, p.fisher_samples,
                                 self.train_config.eval_batch_size)
        return fisher.clamp_min(FISHER_FLOOR)
