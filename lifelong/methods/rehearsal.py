"""What every rehearsal method shares: the ``memory`` config section, a Memory on the run's device, turning
stored raw rows back into network inputs (each with its own task's preparation), and its state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, create_model

from lifelong.data.batches import Batch, TaskView, augment
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.methods.memory import Memory, MemoryRows, Policy

if TYPE_CHECKING:
    from lifelong.config import Config

OFFER_CHUNK = 1024  # rows of a finished task offered to the memory at once
StoreWhen = Literal["stream", "task_end"]  # when ER's and DER's rows enter the memory (``StoreChoice``)


class MemoryParams(base.Params):
    """Config section ``memory``, shared by every rehearsal method."""

    size: int = Field(500, gt=0, description="rows the memory holds in all: the budget as the papers count it")
    batch_size: int = Field(32, gt=0, description="rows of one replayed batch")
    policy: Policy | None = Field(None, description="which rows the memory keeps: reservoir (every row seen equally "
                                  "likely) or balanced (an equal share per class); None = the method's own")


def with_memory(params_class: type[base.Params]) -> type[base.Params]:
    """A method's own hyperparameters plus the section ``memory`` (what ``make_params`` builds)."""
    return create_model(f"{params_class.__name__}WithMemory", __base__=params_class,
                        memory=(MemoryParams, Field(default_factory=MemoryParams, description="the section memory")))


class Rehearsal(Method):
    """A method with a replay memory; subclasses set ``policy`` and ``keeps_logits`` and use ``store``/``replay``."""

    extra_sections: ClassVar[dict[str, type[base.Params]]] = {"memory": MemoryParams}
    policy: ClassVar[Policy] = "reservoir"
    keeps_logits: ClassVar[bool] = False  # store the logits each row had when stored (DER)
    Combined: ClassVar[type[base.Params]]  # Params plus memory: with_memory(Params)

    @classmethod
    def make_params(cls, cfg: Config) -> base.Params:
        return cls.Combined(**cfg.params.get(cls.config_section(), {}), memory=cfg.params.get("memory", {}))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        width = self.output_width() if self.keeps_logits else None
        self.memory = Memory(self.params.memory.size, self.device(), seed=int(torch.randint(2**62, ())),
                             policy=self.params.memory.policy or self.policy, logit_width=width)
        self.views: dict[int, TaskView] = {}  # how each seen task prepares its raw rows
        self.shared_preparation = False  # every seen task prepares rows alike (no permutation, same statistics)

    def output_width(self) -> int:
        """The widest output of the network: every class (class-IL), the widest head (task-IL), the shared head."""
        counts, scenario = self.model.class_counts, self.model.scenario
        return sum(counts) if scenario == "class" else max(counts) if scenario == "task" else counts[0]

    def check_benchmark(self, benchmark: Benchmark) -> None:
        super().check_benchmark(benchmark)
        rows = sum(len(t.train.labels) for t in benchmark.tasks)
        if self.params.memory.size > rows:
            raise UserError(f"memory.size {self.params.memory.size} is larger than the benchmark's training data "
                            f"({rows} rows); set memory.size to at most {rows}")

    def training_views(self, task: Task, seen: list[TaskView]) -> list[TaskView]:
        self.views = {v.task.id: v for v in seen}
        first = seen[0]
        self.shared_preparation = all(v.permutation is None and torch.equal(v.scale, first.scale)
                                      and torch.equal(v.shift, first.shift) for v in seen)
        return super().training_views(task, seen)

    # --- the memory ---
    def mixed_task_ids(self, batch: Batch, rows: MemoryRows) -> int | torch.Tensor:
        """Task ids of the incoming rows followed by replayed ones: one per row where heads differ by task, else
        the incoming task's (the latest reached, which is all a shared head needs)."""
        if self.model.scenario != "task":
            return batch.task_ids if isinstance(batch.task_ids, int) else int(batch.task_ids.max())
        return torch.cat([batch.sample_task_ids(), rows.task_ids])

    def offer_task(self, task: Task, train: TaskView) -> None:
        """Offer every training row of a finished task to the memory, in a random order, a chunk at a time; a
        memory of logits gets each row's logits from the network as the task ends (evaluation mode)."""
        device = train.targets.device
        order = torch.randperm(len(train), generator=self.memory.generator).to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            for index in order.split(OFFER_CHUNK):
                targets = train.targets.index_select(0, index)
                logits = None
                if self.keeps_logits:
                    with torch.no_grad():
                        logits = self.model.logits(self.model.features(train.inputs(index)), task.id,
                                                   all_classes=True)
                self.memory.add(MemoryRows(train.rows(index), targets, torch.full_like(targets, task.id), logits))
        finally:
            self.model.train(was_training)

    def store(self, batch: Batch, logits: torch.Tensor | None = None) -> None:
        """Offer the batch's raw (un-augmented) rows to the memory."""
        self.memory.add(MemoryRows(batch.raw, batch.targets, batch.sample_task_ids(), logits))

    def replay(self, n: int, augmented: bool) -> tuple[torch.Tensor, MemoryRows]:
        """``n`` rows drawn from the memory, as network inputs (augmented afresh when the stream augments)."""
        rows = self.memory.sample(n)
        return self.inputs(rows, augmented), rows

    def inputs(self, rows: MemoryRows, augmented: bool = False) -> torch.Tensor:
        """Stored raw rows → network inputs, each row prepared by its own task's view."""
        if self.shared_preparation:
            x = next(iter(self.views.values())).prepare(rows.raw)
        elif len(tasks := rows.task_ids.unique().tolist()) == 1:
            x = self.views[tasks[0]].prepare(rows.raw)
        else:
            x = torch.empty(rows.raw.shape, dtype=torch.float32, device=rows.raw.device)
            for t in tasks:
                mine = (rows.task_ids == t).nonzero().squeeze(1)
                x[mine] = self.views[t].prepare(rows.raw.index_select(0, mine))
        return augment(x, self.memory.generator) if augmented else x

    def local_targets(self, rows: MemoryRows) -> torch.Tensor:
        """Each held row's class within its own task (targets are global in the class-incremental scenario)."""
        if self.model.scenario != "class":
            return rows.targets
        starts = torch.tensor([0, *self.model.class_counts], device=rows.targets.device).cumsum(0)
        return rows.targets - starts[rows.task_ids]

    def diagnostics(self, train: TaskView) -> dict[str, torch.Tensor]:
        """Plus ``memory/rows``: rows held per task and class of that task (int64, tasks × widest task)."""
        held, counts = self.memory.rows(), self.model.class_counts
        rows = torch.zeros(len(counts), max(counts), dtype=torch.int64, device=self.device())
        rows.index_put_((held.task_ids, self.local_targets(held)), torch.ones_like(held.targets), accumulate=True)
        return {**super().diagnostics(train), "memory/rows": rows}

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "memory": self.memory.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.memory.load_state_dict(state["memory"])


class StoreChoice(Rehearsal):
    """A rehearsal method whose ``store`` hyperparameter says when rows enter the memory: ``stream``, each incoming
    batch after its step (the papers'; no task boundary needed), or ``task_end``, every row of a finished task at
    its end, so replay draws only earlier tasks (Avalanche's Replay and DER)."""

    @property
    def task_free(self) -> bool:  # type: ignore[override]
        """Filled as the stream goes, the method needs no boundary; filled at each task's end, it does."""
        return self.params.store == "stream"

    def after_task(self, task: Task, train: TaskView) -> None:
        super().after_task(task, train)
        if self.params.store == "task_end":
            self.offer_task(task, train)
