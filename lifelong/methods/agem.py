"""Averaged GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019): the incoming batch's gradient is projected
so that it does not increase the loss on a batch drawn from an episodic memory of the finished tasks' rows;
docs/methods.md, "a-gem"."""

from __future__ import annotations

from typing import Sequence

import torch

from lifelong.data.batches import Batch, TaskView
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.rehearsal import Rehearsal, with_memory


class Params(base.Params):
    """Section ``a-gem``: A-GEM has no hyperparameters of its own (the memory's are in section ``memory``)."""


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of flat gradients: g − (g·g_ref / g_ref·g_ref) g_ref where g·g_ref < 0, else g."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref)) * g_ref


def flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gradients of ``params`` as one vector; a parameter without a gradient counts as zeros."""
    return torch.cat([(p.new_zeros(p.shape) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


class AGEM(Rehearsal):
    name = "a-gem"
    description = "A-GEM: project the gradient so the loss on a batch of past tasks' rows does not increase"
    Params = Params
    Combined = with_memory(Params)

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """g of the incoming batch, projected against g_ref of a memory batch when they conflict; one step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task_loss(batch.inputs, batch.targets, batch.task_ids)
        if not len(self.memory):
            loss.backward()
            self.optimizer.step()
            return loss.detach()
        params = self.trained_parameters()
        g = torch.autograd.grad(loss, params, allow_unused=True)
        x_ref, rows = self.replay(self.params.memory.batch_size, batch.augmented)
        g_ref = torch.autograd.grad(self.task_loss(x_ref, rows.targets, rows.task_ids), params, allow_unused=True)
        g_flat, ref_flat = flat(g, params), flat(g_ref, params)
        if torch.dot(g_flat, ref_flat) >= 0:  # no conflict: g as it is, parameters it did not reach left alone
            for p, grad in zip(params, g):
                p.grad = grad
        else:  # every parameter either loss reached takes its component of the projected gradient
            parts = project(g_flat, ref_flat).split([p.numel() for p in params])
            for p, a, b, part in zip(params, g, g_ref, parts):
                p.grad = None if a is None and b is None else part.view_as(p)
        self.optimizer.step()
        return loss.detach()

    def after_task(self, task: Task, train: TaskView) -> None:
        """Offer every training row of the finished task, in a random order, to the reservoir memory."""
        super().after_task(task, train)
        self.offer_task(task, train)
