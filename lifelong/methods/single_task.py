"""Single-task references: a fresh network per task, so no task can interfere with another.

Its accuracies R[t][t] are the reference a_t against which document 003 measures forgetting."""

from __future__ import annotations

from typing import Any

import torch

from lifelong.data.scenarios import Task
from lifelong.methods.base import Method
from lifelong.models.heads import Network


class SingleTask(Method):
    name = "single-task"
    description = "a fresh network per task; reference accuracies for forgetting"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.finished: list[Network] = []  # the trained network of each finished task

    def before_task(self, task: Task) -> None:
        if task.id > 0:
            self.model = self.build_network()
            for later in range(task.id, len(self.model.class_counts)):  # the later tasks' heads (and per-task
                self.model.prepare_task(later)  # modules) exist before the optimizer is made, as in the first
                # network, so that a resume rebuilds the same optimizer (evaluation creates them anyway)
        super().before_task(task)

    def after_task(self, task: Task, train) -> None:
        self.finished.append(self.model)

    def network_for(self, task_id: int) -> Network:
        return self.finished[task_id] if task_id < len(self.finished) else self.model

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        network = self.network_for(task_id)
        network.eval()
        return network(x, task_id)

    def extra_state(self) -> dict[str, Any]:
        return {"finished": [n.state_dict() for n in self.finished]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.finished = []
        for weights in state["finished"]:
            network = self.build_network()
            network.load_state_dict(weights)
            self.finished.append(network)
