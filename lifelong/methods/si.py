"""Synaptic Intelligence (Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017):
ω += −g·Δθ along the training path, Ω += ω / (Δθ_task² + ξ) at the task's end, penalty c Σ Ω (θ − θ*)².

The equations, the two-pass step (g the task loss's gradient alone), its cost, and how new parameters join:
docs/methods.md, section ``si``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pydantic import Field

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.methods.importance import QuadraticPenalty, flatten, parameter_names, unflatten, with_gradient


class _WorkViews(NamedTuple):
    """The parameters SI's step reads and their views of ω, which it updates in place."""

    params: list[torch.nn.Parameter]
    omega: list[torch.Tensor]


class Params(base.Params):
    c: float = Field(1.0, ge=0.0, description="penalty strength c of c Σ Ω (θ−θ*)²; Zenke 2017 and the "
                                              "specification: 0.1–10 is common (1.0, mid-range, by default)")
    xi: float = Field(0.1, gt=0.0, description="damping ξ in Ω += ω / (Δθ² + ξ) (the specification's default, 0.1)")


class SI(Method):
    name = "si"
    description = "Synaptic Intelligence: path-integral importance ω/(Δθ²+ξ), quadratic penalty to the last anchor"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.names: list[str] = []  # layout of every vector below
        self.omega: torch.Tensor | None = None  # running path integral of the current task
        self.importance: torch.Tensor | None = None  # Ω, summed over finished tasks
        self.anchor: torch.Tensor | None = None  # θ* after the last finished task
        self.start: torch.Tensor | None = None  # θ when the current task started
        self.importance_sums: list[float] = []  # Σ Ω after each task, for the report
        self.penalty = QuadraticPenalty()
        self._views: tuple[_WorkViews, dict] | None = None  # work buffers of train_step, rebuilt when ω is replaced

    # --- hooks ---
    def before_task(self, task: Task) -> None:
        super().before_task(task)
        names = parameter_names(self.model)
        with torch.no_grad():
            theta = flatten(self.model, names)
        if self.importance is not None and names != self.names:
            # re-lay Ω and θ* out in the new order; new parameters get Ω = 0 and θ* = their current value
            old_importance = unflatten(self.model, self.names, self.importance)
            old_anchor = unflatten(self.model, self.names, self.anchor)
            current = unflatten(self.model, names, theta)
            self.importance = torch.cat([old_importance.get(n, torch.zeros_like(current[n])).reshape(-1)
                                         for n in names])
            self.anchor = torch.cat([old_anchor.get(n, current[n]).reshape(-1) for n in names])
        self.names = names
        self.start = theta
        self.omega = torch.zeros_like(theta)
        self._views = None
        self._set_penalty()

    def train_step(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """One step on task loss + penalty; ω += −g·Δθ, g the task loss's gradient. Returns the task loss."""
        self.optimizer.zero_grad(set_to_none=True)
        task_loss = self.task_loss(x, y, task_ids)
        task_loss.backward()
        with torch.no_grad():
            params, omega = self._reached()
            grads = [p.grad for p in params]  # g; optimizers never write into .grad
            torch._foreach_addcmul_(omega, grads, params)  # ω += g·θ_before
            if self.penalty.active:  # into new .grad tensors, so ``grads`` stays the task loss's gradient
                self.penalty.add_gradient_(self.model, keep_original=True)
            self.optimizer.step()
            torch._foreach_addcmul_(omega, grads, params, value=-1.0)  # ω −= g·θ_after: ω += −g·Δθ in all
        return task_loss.detach()

    def _reached(self) -> _WorkViews:
        """The parameters that received a gradient (in ``names`` order) with their views of ω; cached per pattern
        of reached parameters until ω is replaced."""
        if self._views is None:
            named = dict(self.model.named_parameters())
            params = [named[n] for n in self.names]
            omega = [v.view_as(p) for v, p in zip(self.omega.split([p.numel() for p in params]), params)]
            self._views = (_WorkViews(params, omega), {})
        every, cache = self._views
        return _WorkViews(*with_gradient(cache, *every))

    def after_task(self, task: Task, train: TaskView) -> None:
        with torch.no_grad():
            theta = flatten(self.model, self.names)
        change = theta - self.start
        step = self.omega / (change * change + self.params.xi)
        self.importance = step if self.importance is None else self.importance + step
        self.anchor = self.start = theta
        self.omega = torch.zeros_like(theta)
        self._views = None
        self.importance_sums.append(float(self.importance.sum()))
        self._set_penalty()

    def report(self) -> dict[str, Any]:
        return {"c": self.params.c, "xi": self.params.xi, "importance_sum": list(self.importance_sums)}

    # --- state ---
    def _set_penalty(self) -> None:
        if self.importance is None:
            self.penalty.set_terms(self.names, [])
        else:
            self.penalty.set_terms(self.names, [(self.params.c, self.importance, self.anchor)])

    def extra_state(self) -> dict[str, Any]:
        return {"names": list(self.names), "omega": self.omega, "importance": self.importance,
                "anchor": self.anchor, "start": self.start, "importance_sums": list(self.importance_sums)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.names = list(state["names"])
        self.omega, self.importance, self.anchor, self.start = (state[k] for k in ("omega", "importance", "anchor",
                                                                                   "start"))
        self.importance_sums = list(state["importance_sums"])
        self._views = None
        self._set_penalty()
