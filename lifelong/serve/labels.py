"""Which labels and task ids a model takes, per scenario, and the names of its classes."""

from __future__ import annotations

from itertools import accumulate

from lifelong.data.scenarios import Benchmark
from lifelong.serve.inputs import BadInput


class LabelSpace:
    """Class-incremental: labels over every class of the stream (a new class moves on to its task);
    task-incremental: each task's own labels and its id; domain-incremental: one label set, any domain."""

    def __init__(self, benchmark: Benchmark, floor: int):
        self.scenario = benchmark.scenario
        self.counts = benchmark.class_counts
        self.names = [t.class_names for t in benchmark.tasks]
        self.offsets = [0, *accumulate(self.counts)]
        self.floor = floor  # the task the learner had reached when the service started

    def _task_id(self, task: int) -> int:
        if not 0 <= task < len(self.counts):
            raise BadInput(f"task {task} does not exist: this model has tasks 0..{len(self.counts) - 1}")
        return task

    def learn_tasks(self, labels: list[int], task: int | None, latest: int | None) -> list[int]:
        """The task of each labelled sample, after checking every label fits."""
        latest = max(self.floor, -1 if latest is None else latest)
        if self.scenario == "class":
            total = self.offsets[-1]
            bad = [y for y in labels if not 0 <= y < total]
            if bad:
                raise BadInput(f"label {bad[0]} is not a class of this model (0..{total - 1})")
            tasks = [next(t for t in range(len(self.counts)) if y < self.offsets[t + 1]) for y in labels]
            if task is not None and any(t != task for t in tasks):
                wrong = next(y for y, t in zip(labels, tasks) if t != task)
                raise BadInput(f"label {wrong} belongs to task {tasks[labels.index(wrong)]}, not task {task}")
            return tasks
        if self.scenario == "task":
            if task is None:
                raise BadInput("a task-incremental model needs the task id of its samples: pass 'task'")
            if self._task_id(task) < latest:
                raise BadInput(f"task {task} has ended (the model is learning task {latest}); a task-incremental "
                               "learner cannot go back to an earlier task", 409)
        task = max(latest, 0) if task is None else self._task_id(task)
        width = self.counts[task]
        bad = [y for y in labels if not 0 <= y < width]
        if bad:
            raise BadInput(f"label {bad[0]} is out of range for task {task} (0..{width - 1})")
        return [task] * len(labels)

    def predict_task(self, task: int | None, reached: int) -> int | None:
        """The task id to predict with (None: the served version's latest, for shared heads)."""
        if task is None:
            if self.scenario == "task":
                raise BadInput("a task-incremental model predicts per task: pass 'task'")
            return None
        if self._task_id(task) > max(reached, 0) and self.scenario == "task":
            raise BadInput(f"task {task} has not been learnt yet (the served version knows tasks 0..{max(reached, 0)})")
        return task

    def name(self, task: int, label: int) -> str:
        """The class name of output ``label`` of ``task`` (or of the whole stream, class-incremental)."""
        if self.scenario == "class":
            task = next(t for t in range(len(self.counts)) if label < self.offsets[t + 1])
            label -= self.offsets[task]
        names = self.names[task]
        return str(names[label]) if label < len(names) else str(label)

    def key(self, task: int, label: int) -> str:
        """A canary group: the class, with its task where labels repeat across tasks."""
        return str(label) if self.scenario == "class" else f"{task}:{label}"

    def all_keys(self, upto: int) -> set[str]:
        """Every class of tasks 0..upto (what a finished run has learnt)."""
        if self.scenario == "class":
            return {str(y) for y in range(self.offsets[upto + 1])}
        return {f"{t}:{y}" for t in range(upto + 1) for y in range(self.counts[t])}
