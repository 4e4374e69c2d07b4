"""Episodic meta-learning on mini-tasks drawn from one task's data: MAML, first-order MAML and Reptile.

Functional: parameters are a dict name → tensor and ``loss_fn(params, x, y)`` evaluates the model with them
(``torch.func.functional_call``), so inner-loop copies never touch the real module. ``masks`` (name → bool
tensor broadcastable to the parameter, True = may change) keep frozen entries exactly where they are in the
inner loop; the caller applies the same masks to the outer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from lifelong.data.batches import TaskView

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MiniTask:
    """A few-shot episode: samples to adapt on and samples to evaluate the adapted model on, labels 0..ways-1."""

    x_adapt: torch.Tensor
    y_adapt: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor


class MiniTaskSampler:
    """Draws ``ways``-way episodes of ``shots`` samples per class from a task's training data: half of each class's
    samples to adapt, half to evaluate. Classes and their new labels are drawn at random for every episode (from
    torch's global generator, which the loop checkpoints); a class with fewer than ``shots`` samples is sampled
    with replacement."""

    def __init__(self, view: TaskView, ways: int, shots: int):
        self.view = view
        self.by_class = [(view.targets == c).nonzero().squeeze(1).cpu() for c in view.targets.unique().tolist()]
        self.ways = min(ways, len(self.by_class))
        self.shots = shots

    def sample(self) -> MiniTask:
        picks = []
        for c in torch.randperm(len(self.by_class))[: self.ways].tolist():  # new label = position in this draw
            members = self.by_class[c]
            if len(members) >= self.shots:
                picks.append(members[torch.randperm(len(members))[: self.shots]])
            else:
                picks.append(members[torch.randint(len(members), (self.shots,))])
        index = torch.stack(picks)  # (ways, shots)
        labels = torch.arange(self.ways).unsqueeze(1).expand_as(index)
        half = self.shots // 2
        device = self.view.images.device

        def part(columns: slice) -> tuple[torch.Tensor, torch.Tensor]:
            rows = index[:, columns].reshape(-1).to(device)
            return self.view.inputs(rows), labels[:, columns].reshape(-1).to(device)

        return MiniTask(*part(slice(0, half)), *part(slice(half, None)))


def adapt(loss_fn: LossFn, params: Params, masks: dict[str, torch.Tensor | None], x: torch.Tensor,
          y: torch.Tensor, steps: int, lr: float, create_graph: bool) -> Params:
    """``steps`` plain SGD steps θ ← θ − lr·∇L(θ) on (x, y), frozen entries held; differentiable when
    ``create_graph`` (second-order MAML)."""
    names = list(params)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(params, x, y), [params[n] for n in names], create_graph=create_graph)
        params = {n: params[n] - lr * masked_update(g, masks.get(n)) for n, g in zip(names, grads)}
    return params


def masked_update(update: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``update`` with exact zeros where ``mask`` is False (frozen entries); all of it when there is no mask."""
    return update if mask is None else torch.where(mask, update, 0.0)


def meta_gradient(loss_fn: LossFn, params: Params, masks: dict[str, torch.Tensor | None], tasks: list[MiniTask],
                  algo: Literal["maml", "fomaml", "reptile"], steps: int, lr: float) -> Params:
    """Mean over ``tasks`` of the outer-loop direction g (the outer step is θ ← θ − β·g):

    - maml:    ∇_θ L_eval(θ'(θ)), differentiating through the inner steps (second order);
    - fomaml:  ∇_θ' L_eval(θ'), the inner steps treated as constants;
    - reptile: θ − θ', the inner steps taken on the whole episode (adapt and evaluation samples).
    """
    names = list(params)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for task in tasks:
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        if algo == "reptile":
            x, y = torch.cat([task.x_adapt, task.x_eval]), torch.cat([task.y_adapt, task.y_eval])
            adapted = adapt(loss_fn, leaves, masks, x, y, steps, lr, create_graph=False)
            grads = [leaves[n].detach() - adapted[n].detach() for n in names]
        elif algo == "maml":
            adapted = adapt(loss_fn, leaves, masks, task.x_adapt, task.y_adapt, steps, lr, create_graph=True)
            grads = torch.autograd.grad(loss_fn(adapted, task.x_eval, task.y_eval), [leaves[n] for n in names])
        else:
            adapted = adapt(loss_fn, leaves, masks, task.x_adapt, task.y_adapt, steps, lr, create_graph=False)
            adapted = {n: p.detach().requires_grad_() for n, p in adapted.items()}
            grads = torch.autograd.grad(loss_fn(adapted, task.x_eval, task.y_eval), [adapted[n] for n in names])
        for n, g in zip(names, grads):
            total[n] += g
    return {n: g / len(tasks) for n, g in total.items()}
