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


def _along(logits: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """⟨direction, logits⟩ for one sample: its gradient is Jᵀ·direction, J = ∂logits/∂θ."""
    return (direction * logits).sum()


def logit_fisher_factors(logits: torch.Tensor) -> torch.Tensor:
    """B (rows, K, K − 1) with B Bᵀ = diag(p) − p pᵀ, the Fisher of a softmax in logit space (p = softmax(logits)).

    That matrix has rank K − 1 (its null space is the all-ones vector), so K − 1 directions carry the whole expected
    Fisher: diag Jᵀ(diag p − p pᵀ)J = Σ_i (Jᵀ b_i)². Two classes: b = √(p₀p₁)·(1, −1); more: eigenvectors × √eigenvalues
    (in float64, the zero eigenvalue dropped)."""
    p = torch.softmax(logits.double(), -1)
    if p.shape[1] == 2:
        root = (p[:, 0] * p[:, 1]).sqrt()
        return torch.stack([root, -root], 1)[:, :, None].to(logits.dtype)
    values, vectors = torch.linalg.eigh(torch.diag_embed(p) - p[:, :, None] * p[:, None, :])
    return (vectors[:, :, 1:] * values[:, None, 1:].clamp_min(0).sqrt()).to(logits.dtype)


def _batch_fisher(model: Network, names: list[str], x: torch.Tensor, y: torch.Tensor, task_id: int,
                  mode: str) -> torch.Tensor:
    """Σ over the batch of the squared per-sample gradients of log p(y|x), y as ``mode`` says."""
    if mode == "empirical":
        return summed_per_sample(model, names, x, task_id, _nll, torch.square, y)
    if mode in ("sample", "max"):  # labels from the pass's own logits: no second forward
        labels = _sampled if mode == "sample" else _argmax
        return summed_per_sample(model, names, x, task_id, _nll, torch.square, labels)
    # expected: the exact sum over classes as K − 1 passes along logit directions, each from the pass's own logits
    with torch.no_grad():
        classes = model(x[:1], task_id).shape[1]
    total = None
    for i in range(classes - 1):
        part = summed_per_sample(model, names, x, task_id, _along, torch.square,
                                 lambda logits, i=i: logit_fisher_factors(logits)[:, :, i])
        total = part if total is None else total + part
    return total if total is not None else torch.zeros_like(flatten(model, names).detach())


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
