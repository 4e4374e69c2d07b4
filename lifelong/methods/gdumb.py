"""GDumb (Prabhu, Torr & Dokania, ECCV 2020): the stream only feeds a greedy class-balanced memory; after each
task a network trained from scratch on the memory alone is the model; docs/methods.md, "gdumb"."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import Batch, TaskView, augment
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import base
from lifelong.methods.memory import MemoryRows
from lifelong.methods.rehearsal import Rehearsal, with_memory
from lifelong.models.heads import Network


class Params(base.Params):
    epochs: int = Field(16, gt=0, description="passes over the memory of each from-scratch fit (the paper: 128 on "
                                              "MNIST, 256 on CIFAR; 2^k ends on a cosine cycle's low point)")
    lr: float = Field(0.05, gt=0.0, description="peak SGD learning rate (the first, warm-up epoch runs at lr / 10)")
    min_lr: float = Field(0.0005, ge=0.0, description="lowest learning rate of the cosine annealing")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(1e-6, ge=0.0, description="SGD weight decay")
    clip: float | None = Field(10.0, gt=0.0, description="gradient-norm clip of every step; None = off")


def learning_rate(epoch: int, lr: float, min_lr: float) -> float:
    """The authors' schedule: lr / 10 in epoch 0, lr in epoch 1, then cosine annealing with warm restarts
    (T_0 = 1, T_mult = 2) stepped once per epoch; step s = epoch − 1 lies in the cycle [2^k − 1, 2^(k+1) − 1)."""
    if epoch == 0:
        return 0.1 * lr
    period = 1 << (epoch.bit_length() - 1)  # 2^k ≤ s + 1 = epoch < 2^(k+1)
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * (epoch - period) / period)) / 2


class GDumb(Rehearsal):
    name = "gdumb"
    task_free = True  # greedy memory on the stream, fitted at the end (a stream's end is told)
    description = "greedy class-balanced memory; after each task a network from scratch fitted on it (Prabhu 2020)"
    Params = Params
    Combined = with_memory(Params)
    policy = "balanced"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.storing = True  # only the first pass over a task offers its rows (train.epochs > 1 repeats them)
        self.augmented = False  # whether the stream augments: the fit augments memory rows likewise
        self.log: dict[str, Any] = {}

    def local_targets(self, rows: MemoryRows) -> torch.Tensor:
        """The memory holds global targets in every scenario (offsets added outside class-IL)."""
        return rows.targets - self._starts(rows.task_ids)

    def offsets(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Per row, the classes of earlier tasks: outside class-IL the memory balances (task, label) pairs."""
        if self.model.scenario == "class":
            return torch.zeros_like(task_ids)
        return self._starts(task_ids)

    def _starts(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Per row, how many classes the tasks before its own have (a stream given one class count, as a
        Learner's domain stream is, has that many in every task)."""
        counts = self.model.class_counts
        top = int(task_ids.max()) + 1 if task_ids.numel() else 0
        widths = [counts[min(t, len(counts) - 1)] for t in range(top)]
        return torch.tensor([0, *itertools.accumulate(widths)], device=task_ids.device)[task_ids]

    # --- the stream: memory only ---
    def before_task(self, task: Task) -> None:
        """Reach the task's classes; nothing trains on the stream, so no optimizer."""
        self.model.start_task(task.id)

    def before_epoch(self, task: Task, train: TaskView, epoch: int) -> None:
        self.storing = epoch == 0

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """Offer the batch's raw rows to the memory (first pass only); no step, so the returned loss is 0."""
        self.augmented = batch.augmented
        if self.storing:
            task_ids = batch.sample_task_ids()
            self.memory.add(MemoryRows(batch.raw, batch.targets + self.offsets(task_ids), task_ids))
        return torch.zeros((), device=batch.targets.device)

    # --- the dumb learner ---
    def after_task(self, task: Task, train: TaskView) -> None:
        """A fresh network over every task so far, fitted on the memory; its random numbers come from a seed
        drawn from torch's global generator (checkpointed), which advances by that one draw only."""
        start = time.perf_counter()
        seed = int(torch.randint(2**62, ()))
        device = self.device()
        cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # the fresh network's initialisation and its dropout
            network = self.build_network()
            for t in range(task.id + 1):
                network.start_task(t)
            loss = self.fit(network, task.id, torch.Generator().manual_seed(seed))
        if not math.isfinite(loss):
            raise UserError(f"gdumb's fit after task {task.id + 1} diverged (loss {loss}); lower gdumb.lr or set "
                            "gdumb.clip")
        self.model = network
        self.log = {"fit_loss": loss, "memory_counts": self.memory.class_counts().tolist(),
                    "seconds": time.perf_counter() - start}

    def fit(self, network: Network, task_id: int, generator: torch.Generator) -> float:
        """``epochs`` passes of clipped SGD over the shuffled memory in batches of memory.batch_size; returns the
        last pass's mean cross-entropy."""
        p, n = self.params, len(self.memory)
        if n == 0:
            return 0.0
        rows = self.memory.rows()
        x_all, y_all = self.inputs(rows), rows.targets - self.offsets(rows.task_ids)
        optimizer = torch.optim.SGD(network.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                                    fused=True)
        network.train()
        total = torch.zeros((), device=y_all.device)
        for epoch in range(p.epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch, p.lr, p.min_lr)
            total.zero_()
            order = torch.randperm(n, generator=generator).to(y_all.device)
            for index in order.split(p.memory.batch_size):
                x = x_all.index_select(0, index)
                x = augment(x, generator) if self.augmented else x
                task_ids = rows.task_ids.index_select(0, index) if network.scenario == "task" else task_id
                loss = F.cross_entropy(network(x, task_ids), y_all.index_select(0, index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if p.clip is not None:
                    torch.nn.utils.clip_grad_norm_(network.parameters(), p.clip)
                optimizer.step()
                total += loss.detach() * len(index)
        return float(total) / n

    def task_log(self) -> dict[str, Any]:
        return {"gdumb": self.log}

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "augmented": self.augmented, "storing": self.storing}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.augmented = bool(state["augmented"])
        self.storing = bool(state.get("storing", True))  # a Learner saved in a later pass stores nothing more
