"""Online EWC (Schwarz et al. 2018, "Progress & Compress", ICML, section 4): one running Fisher F ← γF + F_t and
the latest parameters as the single anchor; EWC whose list of consolidated tasks always holds one entry.

Equations and choices: docs/methods.md, section ``online-ewc``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from lifelong.data.scenarios import Task
from lifelong.methods import ewc
from lifelong.methods.ewc import EWC
from lifelong.methods.importance import relayout


class Params(ewc.Params):
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="γ: decay of the running Fisher, F ← γF + F_t "
                         "(1 = sum over tasks)")


class OnlineEWC(EWC):
    name = "online-ewc"
    description = "online EWC: one running Fisher F ← γF + F_t and the latest parameters as the single anchor"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.task_fisher_means: list[float] = []  # mean of each task's own F_t, for the report

    def consolidate(self, task: Task, names: list[str], fisher: torch.Tensor, anchor: torch.Tensor) -> None:
        """F ← γF + F_t, θ* ← θ: ``self.consolidated`` keeps exactly one entry."""
        self.task_fisher_means.append(float(fisher.mean()))
        if self.consolidated:
            old = self.consolidated[0]
            fisher = self.params.gamma * relayout(self.model, old["fisher"], old["names"], names) + fisher
        self.consolidated = [{"task": task.id, "names": names, "fisher": fisher, "anchor": anchor}]

    def report(self) -> dict[str, Any]:
        return {"tasks_consolidated": len(self.task_fisher_means), "mean_fisher": self.task_fisher_means,
                "mean_running_fisher": [float(e["fisher"].mean()) for e in self.consolidated]}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "task_fisher_means": list(self.task_fisher_means)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.task_fisher_means = list(state["task_fisher_means"])
