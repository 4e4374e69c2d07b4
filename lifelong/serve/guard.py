"""The guard: canary samples per class, held out of training, judge each candidate against the served version."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from lifelong.serve.journal import Journal
from lifelong.serve.settings import GuardSettings


@dataclass
class Verdict:
    publish: bool
    reason: str
    served: dict[str, float] = field(default_factory=dict)  # canary accuracy per class of the served version
    candidate: dict[str, float] = field(default_factory=dict)


class Guard:
    """Reads new canaries from the journal; ``judge`` compares the accuracies of two predictors on them."""

    def __init__(self, journal: Journal, settings: GuardSettings, key: Callable[[int, int], str]):
        self.journal, self.settings, self.key = journal, settings, key
        self.after = 0  # journal position of the last canary read
        self.rows: dict[int, list[Any]] = defaultdict(list)  # task → [rows, labels] of its canaries
        self.labels: dict[int, list[int]] = defaultdict(list)
        self.last: Verdict | None = None

    def refresh(self) -> None:
        for sample in self.journal.canaries(self.after):
            self.rows[sample.task].append(sample.row)
            self.labels[sample.task].append(sample.label)
            self.after = sample.pos

    def accuracy(self, predict: Callable[[int, torch.Tensor], torch.Tensor | None]
                 ) -> tuple[dict[str, float], dict[str, int]]:
        """Canary accuracy and count per class; ``predict(task, raw rows)`` → predicted labels (None: a task the
        predictor has not reached)."""
        correct: dict[str, int] = defaultdict(int)
        count: dict[str, int] = defaultdict(int)
        for task, rows in self.rows.items():
            predicted = predict(task, torch.from_numpy(np.stack(rows)))
            if predicted is None:
                continue
            for label, guess in zip(self.labels[task], predicted.tolist()):
                k = self.key(task, label)
                count[k] += 1
                correct[k] += int(guess == label)
        return {k: correct[k] / count[k] for k in count}, dict(count)

    def counts(self) -> dict[str, int]:
        """Canary samples per class."""
        found: dict[str, int] = defaultdict(int)
        for task, labels in self.labels.items():
            for label in labels:
                found[self.key(task, label)] += 1
        return dict(found)

    def judge(self, served: Callable, candidate: Callable, known: set[str]) -> Verdict:
        """Refuse the candidate when its mean canary accuracy over the classes the served version knows falls
        by more than ``max_drop``."""
        self.refresh()
        old, counts = self.accuracy(served)
        new, _ = self.accuracy(candidate)
        judged = sorted(k for k in known if counts.get(k, 0) >= self.settings.min_canary)
        if not judged:
            verdict = Verdict(True, "no canary class known to the served version yet", old, new)
        else:
            before = sum(old[k] for k in judged) / len(judged)
            after = sum(new[k] for k in judged) / len(judged)
            drop = before - after
            ok = drop <= self.settings.max_drop
            verdict = Verdict(ok, f"canary accuracy on the {len(judged)} known classes {before:.3f} → {after:.3f} "
                                  f"({'within' if ok else 'beyond'} the allowed drop {self.settings.max_drop})",
                              old, new)
        self.last = verdict
        return verdict
