"""Memory Aware Synapses (Aljundi et al., ECCV 2018): Ω = mean over the task's inputs of |∂ ‖F(x)‖₂² / ∂θ| (no
labels), summed over tasks with a single anchor; the loss adds λ Σ Ω (θ − θ*)².

Equations and the ``per_batch`` approximation: docs/methods.md, section ``mas``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from pydantic import Field
from torch import nn

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.methods.importance import QuadraticPenalty, flatten, parameter_names, relayout, summed_per_sample


class ImportanceParams(base.Params):
    """How Ω is estimated (shared by MAS and MAS-alpha)."""

    per_batch: bool = Field(False, description="approximation: |∂ mean_batch ‖F‖² / ∂θ| averaged over batches of "
                                               "train.batch_size, instead of the per-sample |∂ ‖F‖² / ∂θ|")
    samples: int | None = Field(None, gt=0, description="use at most this many training samples for Ω (evenly "
                                                        "spaced through the task's data); None = all")


class Params(ImportanceParams):
    lam: float = Field(1.0, ge=0.0, description="penalty strength λ: the loss adds λ Σ Ω (θ − θ*)²")


def _input_batches(inputs_or_batches: torch.Tensor | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(inputs_or_batches, torch.Tensor):
        for start in range(0, inputs_or_batches.shape[0], batch_size):
            yield inputs_or_batches[start : start + batch_size]
        return
    for batch in inputs_or_batches:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch  # (inputs, labels) pairs: labels ignored


def _abs_output_gradients(model: nn.Module, names: list[str], x: torch.Tensor, task_id: int) -> torch.Tensor:
    """Σ_n |∂ ‖F(x_n)‖² / ∂θ| over one batch, from per-sample gradients."""
    return summed_per_sample(model, names, x, task_id, lambda z, e: z.pow(2).sum(), torch.abs)


def _batch_mean_gradient(model: nn.Module, names: list[str], x: torch.Tensor, task_id: int) -> torch.Tensor:
    """|∂ mean_batch ‖F‖² / ∂θ| for one batch (the per-batch approximation)."""
    params = dict(model.named_parameters())
    with torch.enable_grad():
        grads = torch.autograd.grad(model(x, task_id).pow(2).sum(1).mean(), [params[n] for n in names],
                                    allow_unused=True)
    return torch.cat([(torch.zeros_like(params[n]) if g is None else g.abs()).reshape(-1)
                      for n, g in zip(names, grads)])


def mas_importance(model: nn.Module, names: list[str], inputs_or_batches: torch.Tensor | Iterable, task_id: int,
                   per_batch: bool = False, batch_size: int = 128) -> torch.Tensor:
    """Ω = mean over samples of |∂ ‖F(x)‖₂² / ∂θ| as a flat vector in ``names`` order; no labels needed.

    ``inputs_or_batches``: a tensor of inputs (cut into batches of ``batch_size``) or an iterable of input batches
    (``(inputs, labels)`` pairs are accepted, the labels ignored). ``per_batch``: the approximation
    Σ_b n_b |∂ mean_b ‖F‖² / ∂θ| / Σ_b n_b. The model is evaluated in eval mode, its mode restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        total, count = None, 0
        for x in _input_batches(inputs_or_batches, batch_size):
            if per_batch:
                part = x.shape[0] * _batch_mean_gradient(model, names, x, task_id)
            else:
                part = _abs_output_gradients(model, names, x, task_id)
            total = part if total is None else total + part
            count += x.shape[0]
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError("mas_importance needs at least one input sample")
    return total / count


class MAS(Method):
    name = "mas"
    description = "Memory Aware Synapses: penalty weighted by the output's sensitivity to each parameter (no labels)"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.names: list[str] = []  # layout of the flat vectors below
        self.omega: torch.Tensor | None = None  # Σ_t Ω_t
        self.anchor: torch.Tensor | None = None  # θ* after the latest task
        self.sums: list[float] = []  # S_t = Σ_i Ω_t,i of each finished task
        self.penalty = QuadraticPenalty()

    def task_importance(self, task: Task, train: TaskView) -> tuple[list[str], torch.Tensor]:
        """(names, Ω_task) on the task's training inputs, capped at ``samples``."""
        names = parameter_names(self.model)
        n = len(train)
        index = torch.arange(n) if self.params.samples is None or self.params.samples >= n else \
            torch.linspace(0, n - 1, self.params.samples).round().long()
        size = self.train_config.batch_size if self.params.per_batch else self.train_config.eval_batch_size
        batches = (train.inputs(index[s : s + size].to(train.images.device)) for s in range(0, len(index), size))
        omega = mas_importance(self.model, names, batches, task.id, per_batch=self.params.per_batch)
        self.sums.append(float(omega.double().sum()))
        return names, omega

    def after_task(self, task: Task, train: TaskView) -> None:
        names, omega = self.task_importance(task, train)
        self.omega = omega if self.omega is None else relayout(self.model, self.omega, self.names, names) + omega
        self.names, self.anchor = names, flatten(self.model, names).detach().clone()
        self.fold()

    def fold(self) -> None:
        terms = [] if self.omega is None else [(self.params.lam, self.omega, self.anchor)]
        self.penalty.set_terms(self.names, terms)

    def report(self) -> dict[str, Any]:
        return {"importance_sum": list(self.sums)}

    def extra_state(self) -> dict[str, Any]:
        return {"names": list(self.names), "omega": self.omega, "anchor": self.anchor, "sums": list(self.sums)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.names, self.omega, self.anchor = list(state["names"]), state["omega"], state["anchor"]
        self.sums = list(state["sums"])
        self.fold()
