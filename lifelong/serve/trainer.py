"""The learner thread's learner, driven the way `lifelong run` drives it: raw rows prepared by their task's view,
tasks begun when the journal reaches them and ended with their journaled rows (what ``after_task`` consolidates)."""

from __future__ import annotations

import numpy as np
import torch

from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import Batch, TaskView
from lifelong.learner import Learner
from lifelong.serve.journal import Journal, Sample
from lifelong.serve.model import Models


class Trainer:
    """One learner that trains (never the served one)."""

    def __init__(self, learner: Learner, models: Models, journal: Journal):
        self.learner, self.models, self.journal = learner, models, journal
        self.tasks = models.benchmark.tasks
        self.mixed: list[TaskView] = []  # views a method mixes into its task's batches (iCaRL's exemplars)
        if learner.task is not None:  # restored mid-task: the benchmark's task, and the views `run` would give
            learner.task = self.tasks[learner.task.id]
            self.mixed = learner.method.training_views(learner.task, models.views[: learner.task.id + 1])[1:]

    def reached(self) -> int:
        return Models.reached(self.learner)

    def advance(self, target: int, pos: int) -> None:
        """End tasks and begin the next ones until task ``target`` is being learnt (``pos``: the journal position
        learnt so far, whose rows of the ending task it consolidates on)."""
        learner = self.learner
        while learner.task is None or learner.task.id < target:
            if learner.task is not None:
                task = learner.task
                rows, labels = self.journal.task_rows(task.id, pos)
                arrays = ImageArrays(torch.from_numpy(rows), torch.tensor(labels, dtype=torch.int64) - task.label_offset)
                # a task none of whose samples was learnt (the client skipped it) has nothing to consolidate
                learner.finish_task(TaskView(task, arrays, self.models.device), told=len(labels) > 0)
            task = self.tasks[learner.tasks_done]
            self.mixed = learner.start_task(task, self.models.views[: task.id + 1])[1:]
            learner.start_epoch(self.models.views[task.id], 0)

    def learn(self, samples: list[Sample], steps: int) -> float:
        """``steps`` optimizer steps of the method on one mini-batch (task ids: one per sample where they differ)."""
        device = self.models.device
        raw = torch.from_numpy(np.stack([s.row for s in samples])).to(device)
        tasks = [s.task for s in samples]
        x = self.models.prepare(raw, tasks)
        y = torch.tensor([s.label for s in samples], device=device)
        ids: int | torch.Tensor = tasks[0] if len(set(tasks)) == 1 else torch.tensor(tasks, device=device)
        if self.mixed:
            raw, x, y, ids = self._mix(raw, x, y, ids)
        loss = 0.0
        for _ in range(steps):
            loss = float(self.learner.learn_batch(Batch(x, y, ids, raw, None)))
        return loss

    def _mix(self, raw: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ids: int | torch.Tensor):
        """The batch plus as many rows drawn uniformly from the views the method mixes in."""
        device = x.device
        sizes = torch.tensor([len(v) for v in self.mixed])
        picks = torch.randint(int(sizes.sum()), (len(y),))
        bounds = torch.cumsum(sizes, 0)
        owner = torch.bucketize(picks, bounds, right=True)
        ids = torch.full_like(y, ids) if isinstance(ids, int) else ids
        raws, xs, ys, ts = [raw], [x], [y], [ids]
        for k in owner.unique().tolist():
            view = self.mixed[k]
            local = (picks[owner == k] - (bounds[k] - len(view))).to(device)
            raws.append(view.rows(local))
            xs.append(view.prepare(raws[-1]))
            ys.append(view.targets.index_select(0, local))
            ts.append(torch.full_like(ys[-1], view.task.id))
        return torch.cat(raws), torch.cat(xs), torch.cat(ys), torch.cat(ts)
