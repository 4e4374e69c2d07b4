"""Elastic weight consolidation (Kirkpatrick et al. 2017, PNAS): after each task, the diagonal Fisher Ω_k and the
anchor θ*_k; the loss adds (λ/2) Σ_k Ω_k (θ − θ*_k)². ``fisher_diagonal`` is shared with online EWC and mode-IMM.

Equations, the ``fisher`` modes and why ``empirical`` is the default: docs/methods.md, section ``ewc``.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import TaskView, eval_batches
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.methods.importance import QuadraticPenalty, flatten, parameter_names, relayout, summed_per_sample
from lifelong.models.heads import Network

FisherMode = Literal["empirical", "sample", "max", "expected"]


def _nll(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """−log p(label | x) for one sample (its square is what the Fisher sums)."""
    return F.cross_entropy(logits[None], label[None])


def _weighted_log_likelihood(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_c w_c log p(c | x); with w = √p(c|x)·onehot(c) its squared gradient is p(c|x)·(∂ log p(c|x)/∂θ)²."""
    return (weights * torch.log_softmax(logits, -1)).sum()


def _batch_fisher(model: Network, names: list[str], x: torch.Tensor, y: torch.Tensor, task_id: int,
                  mode: str) -> torch.Tensor:
    """Σ over the batch of the squared per-sample gradients of log p(y|x), y as ``mode`` says."""
    if mode == "empirical":
        return summed_per_sample(model, names, x, task_id, _nll, torch.square, y)
    if mode in ("sample", "max"):  # labels from the pass's own logits: no second forward
        labels = _sampled if mode == "sample" else _argmax
        return summed_per_sample(model, names, x, task_id, _nll, torch.square, labels)
    with torch.no_grad():  # expected: the exact sum over classes, one pass per class
        probs = torch.softmax(model(x, task_id), -1)
    total = None
    for c in range(probs.shape[1]):
        weights = F.one_hot(torch.full_like(y, c), probs.shape[1]) * probs[:, c : c + 1].sqrt()
        part = summed_per_sample(model, names, x, task_id, _weighted_log_likelihood, torch.square, weights)
        total = part if total is None else total + part
    return total


def _sampled(logits: torch.Tensor) -> torch.Tensor:
    """One label per row drawn from the model's softmax (torch's global generator)."""
    return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(1)


def fisher_diagonal(model: Network, names: list[str], view: TaskView, task_id: int, mode: str = "empirical",
                    max_samples: int | None = None, batch_size: int = 1024) -> torch.Tensor:
    """The diagonal Fisher of task ``task_id`` on ``view``'s samples, flat in ``names`` order (mean over samples).

    Evaluated in eval mode (no dropout; the model's mode is restored). ``max_samples`` caps the samples used: a
    uniformly random subset drawn from torch's global generator (the task's data may be ordered by class).
    """
    if mode not in get_args(FisherMode):
        raise ValueError(f"unknown Fisher mode '{mode}'; choose one of {get_args(FisherMode)}")
    was_training = model.training
    model.eval()
    try:
        if max_samples is not None and max_samples < len(view):
            pick = torch.randperm(len(view))[:max_samples].sort().values.to(view.targets.device)
            batches: Iterable = ((view.inputs(i), view.targets[i]) for i in pick.split(batch_size))
            count = max_samples
        else:
            batches, count = eval_batches(view, batch_size), len(view)
        total = None
        for x, y in batches:
            part = _batch_fisher(model, names, x, y, task_id, mode)
            total = part if total is None else total + part
        if total is None:
            return torch.zeros_like(flatten(model, names).detach())
        return total / count
    finally:
        model.train(was_training)


class Params(base.Params):
    lam: float = Field(1e4, ge=0.0, description="λ: penalty strength, loss adds (λ/2) Σ_k Ω_k (θ−θ*_k)². A model "
                       "trained to ~100 % has a tiny Fisher and needs a much larger λ (docs/methods.md, ewc)")
    fisher: FisherMode = Field("empirical", description="labels in the Fisher: empirical (true labels), sample "
                               "(drawn from the model), max (its argmax) or expected (exact sum over classes)")
    fisher_samples: int | None = Field(None, gt=0, description="cap on the training samples the Fisher uses "
                                       "(a random subset); None = all of the task's training samples")


class EWC(Method):
    name = "ewc"
    description = "elastic weight consolidation: a Fisher-weighted quadratic penalty per finished task"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.consolidated: list[dict[str, Any]] = []  # per task: task id, names, fisher Ω_k, anchor θ*_k
        self.penalty = QuadraticPenalty()

    def after_task(self, task: Task, train: TaskView) -> None:
        names = parameter_names(self.model)
        fisher = fisher_diagonal(self.model, names, train, task.id, self.params.fisher, self.params.fisher_samples,
                                 self.train_config.eval_batch_size)
        anchor = flatten(self.model, names).detach().clone()
        self.consolidate(task, names, fisher, anchor)
        self.penalty.set_terms(names, self.terms(names))

    def consolidate(self, task: Task, names: list[str], fisher: torch.Tensor, anchor: torch.Tensor) -> None:
        """Keep task ``task``'s Fisher and anchor."""
        self.consolidated.append({"task": task.id, "names": names, "fisher": fisher, "anchor": anchor})

    def terms(self, names: list[str]) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """(λ/2, Ω_k, θ*_k) for every consolidated task, laid out as ``names``."""
        return [(self.params.lam / 2, relayout(self.model, e["fisher"], e["names"], names),
                 relayout(self.model, e["anchor"], e["names"], names)) for e in self.consolidated]

    def report(self) -> dict[str, Any]:
        return {"tasks_consolidated": len(self.consolidated),
                "mean_fisher": [float(e["fisher"].mean()) for e in self.consolidated]}

    def extra_state(self) -> dict[str, Any]:
        return {"consolidated": self.consolidated, "penalty": self.penalty.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.consolidated = [dict(e) for e in state["consolidated"]]
        self.penalty = QuadraticPenalty()
        self.penalty.load_state_dict(state["penalty"])
