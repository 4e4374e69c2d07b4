"""MAS with alpha-scaling (seed document 003): one Ω_t and anchor θ*_t per task, weighted by α_t so that α_t·S_t
(S_t = Σ_i Ω_t,i) is equal for every task and Σ_t α_t = λ.

The closed form of α, the two ways to give λ, and what per-task anchors cost: docs/methods.md, section ``mas-alpha``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.methods.importance import flatten
from lifelong.methods.importance import relayout
from lifelong.methods.mas import MAS, ImportanceParams


class Params(ImportanceParams):
    lam: float | None = Field(None, ge=0.0, description="Σ_t α_t = lam, fixed (set this or lam_per_task)")
    lam_per_task: float | None = Field(None, ge=0.0, description="Σ_t α_t = lam_per_task × tasks seen so far "
                                                                 "(document 003: 1, 1.5, 2, 3); 1 when neither is set")

    @model_validator(mode="after")
    def _one_lambda(self) -> "Params":
        if self.lam is not None and self.lam_per_task is not None:
            raise ValueError("set either lam (a fixed Σα) or lam_per_task (Σα = lam_per_task × tasks seen), not both")
        return self

    def total(self, tasks_seen: int) -> float:
        """λ = Σ_t α_t after ``tasks_seen`` tasks."""
        if self.lam is not None:
            return self.lam
        return (1.0 if self.lam_per_task is None else self.lam_per_task) * tasks_seen


def alpha_weights(sums: list[float], lam: float) -> list[float]:
    """α_t = λ / (S_t Σ_t' 1/S_t'): α_t·S_t equal for all t with S_t > 0, Σ α = λ; α_t = 0 where S_t = 0."""
    inverse = [1.0 / s if s > 0 else 0.0 for s in sums]
    total = sum(inverse)
    return [lam * i / total if total > 0 else 0.0 for i in inverse]


class MASAlpha(MAS):
    name = "mas-alpha"
    description = "MAS with one importance and anchor per task, scaled by α_t so every task weighs equally (doc 003)"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.omegas: list = []  # Ω_t per finished task, laid out as self.names
        self.anchors: list = []  # θ*_t per finished task
        self.alphas: list[list[float]] = []  # after task k: α_1..α_k
        self.lams: list[float] = []  # λ after task k

    def after_task(self, task: Task, train: TaskView) -> None:
        names, omega = self.task_importance(task, train)
        self.omegas = [relayout(self.model, o, self.names, names) for o in self.omegas] + [omega]
        anchor = flatten(self.model, names).detach().clone()
        self.anchors = [relayout(self.model, a, self.names, names) for a in self.anchors] + [anchor]
        self.names = names
        self.lams.append(self.params.total(len(self.omegas)))
        self.alphas.append(alpha_weights(self.sums, self.lams[-1]))
        self.fold()

    def fold(self) -> None:
        alphas = self.alphas[-1] if self.alphas else []
        self.penalty.set_terms(self.names, list(zip(alphas, self.omegas, self.anchors)))

    def report(self) -> dict[str, Any]:
        return {"alpha": [list(a) for a in self.alphas], "lam": list(self.lams), "importance_sum": list(self.sums)}

    def extra_state(self) -> dict[str, Any]:
        return {"names": list(self.names), "omegas": list(self.omegas), "anchors": list(self.anchors),
                "sums": list(self.sums), "alphas": [list(a) for a in self.alphas], "lams": list(self.lams)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.names, self.omegas, self.anchors = list(state["names"]), list(state["omegas"]), list(state["anchors"])
        self.sums, self.lams = list(state["sums"]), list(state["lams"])
        self.alphas = [list(a) for a in state["alphas"]]
        self.fold()
