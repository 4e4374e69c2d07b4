"""The learners of a serving directory: built for its benchmark, saved to and loaded from bytes (tensors and
plain data only), and their raw inputs prepared the way the run's tasks prepare theirs."""

from __future__ import annotations

import io
from typing import Any

import torch

from lifelong.config import Config
from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Benchmark
from lifelong.errors import UserError
from lifelong.learner import FORMAT, Learner


class Models:
    """Learners for one config and benchmark on one device."""

    def __init__(self, cfg: Config, benchmark: Benchmark, device: torch.device):
        self.cfg, self.benchmark, self.device = cfg, benchmark, device
        self.scenario = benchmark.scenario
        self.views = [TaskView(t, ImageArrays(t.train.images[:0], t.train.labels[:0]), device)
                      for t in benchmark.tasks]  # each task's normalisation and permutation, no rows

    def fresh(self) -> Learner:
        return Learner.for_benchmark(self.cfg, self.benchmark, self.device)

    @staticmethod
    def dump(learner: Learner) -> bytes:
        """The learner's whole state (what ``Learner.save`` writes), as bytes."""
        buffer = io.BytesIO()
        torch.save(learner.state_dict(), buffer)
        return buffer.getvalue()

    def load(self, data: bytes, where: str = "a version") -> Learner:
        """A new learner continuing from ``dump``'s bytes, loaded with ``weights_only``."""
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for damaged or unsafe files
            raise UserError(f"{where} cannot be loaded safely ({type(err).__name__}); roll back to another") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise UserError(f"{where} is not a saved lifelong learner")
        learner = self.fresh()
        learner.restore(state)
        return learner

    def copy(self, learner: Learner) -> Learner:
        """A new learner with a copy of ``learner``'s state (no file and no unpickling in between)."""
        copy = self.fresh()
        copy.restore(_cloned(learner.state_dict()))
        return copy

    @staticmethod
    def reached(learner: Learner) -> int:
        """The latest task the learner has begun (-1 before any)."""
        return learner.task.id if learner.task is not None else learner.tasks_done - 1

    def prepare(self, rows: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        """Raw rows (uint8 pixels or float values) → network inputs, each with its own task's preparation."""
        rows = rows.to(self.device)
        if len(set(tasks)) == 1:
            return self.views[tasks[0]].prepare(rows)
        out = torch.empty(rows.shape, dtype=torch.float32, device=self.device)
        ids = torch.tensor(tasks, device=self.device)
        for task in set(tasks):
            index = (ids == task).nonzero().squeeze(1)
            out[index] = self.views[task].prepare(rows.index_select(0, index))
        return out

    def scores(self, learner: Learner, rows: torch.Tensor, task: int | None) -> torch.Tensor:
        """Class scores of raw rows by a learner in evaluation mode (a published one, never trained again);
        ``task`` None: the learner's latest task (shared heads)."""
        reached = max(self.reached(learner), 0)
        x = self.prepare(rows, [reached if task is None else task] * len(rows))
        with torch.inference_mode():
            return learner.method.predict(x, task if self.scenario == "task" and task is not None else reached)


def _cloned(state: Any) -> Any:
    """``state`` (nested dicts, lists, tuples) with every tensor copied."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _cloned(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cloned(v) for v in state)
    return state
