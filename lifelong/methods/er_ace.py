"""ER with asymmetric cross-entropy (Caccia, Aljundi, Asadi, Tuytelaars, Pineau & Belilovsky, ICLR 2022): the
incoming batch's cross-entropy sees only the logits of the classes present in it (and of classes the stream has
not reached yet), the replayed batch's the logits of every seen class; docs/methods.md, "er-ace"."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import Batch
from lifelong.data.scenarios import Task
from lifelong.methods import base
from lifelong.methods.rehearsal import Rehearsal, with_memory


class Params(base.Params):
    task_free: bool = Field(False, description="mask and replay from the first batch on, as the authors' code "
                                               "forces (false: from the second task on, as Mammoth's default)")


def ace_mask(logits: torch.Tensor, targets: torch.Tensor, seen_max: torch.Tensor) -> torch.Tensor:
    """The outputs the incoming cross-entropy keeps: classes present in ``targets`` and every class from
    ``seen_max`` (the largest class the stream has shown so far) up."""
    keep = torch.arange(logits.shape[1], device=logits.device) >= seen_max
    return keep.index_fill(0, targets, True)


def asymmetric_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the kept outputs only (the others masked to -inf)."""
    return F.cross_entropy(logits.masked_fill(~keep, float("-inf")), targets)


class ERACE(Rehearsal):
    name = "er-ace"
    description = "ER with asymmetric cross-entropy: incoming rows compete only with the classes in their batch"
    Params = Params
    Combined = with_memory(Params)
    task_features = False  # one backbone pass over rows of several tasks
    scenarios: ClassVar[tuple[str, ...]] = ("class", "task")  # domain-IL: no new classes to shield the old from

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seen_max = torch.full((), -1, dtype=torch.int64, device=self.device())
        self.task_id = 0

    @property
    def task_free(self) -> bool:  # type: ignore[override]
        """With ``task_free`` set, ACE replays from the first step and needs no boundary (the paper's online setting)."""
        return self.params.task_free

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        self.task_id = task.id
        self.seen_max.fill_(-1)  # targets are ordered by task in class-IL, so the stream's maximum is this task's

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """One backbone pass over the incoming rows and the replayed ones; the sum of their two losses."""
        p, model = self.params, self.model
        active = p.task_free or self.task_id > 0
        self.optimizer.zero_grad(set_to_none=True)
        torch.maximum(self.seen_max, batch.targets.max(), out=self.seen_max)
        draw = self.replay(p.memory.batch_size, batch.augmented) if active and len(self.memory) else None
        inputs = batch.inputs if draw is None else torch.cat([batch.inputs, draw[0]])
        features = model.features(inputs)
        logits = model.logits(features[: len(batch.targets)], batch.task_ids)
        if active:
            loss = asymmetric_cross_entropy(logits, batch.targets, ace_mask(logits, batch.targets, self.seen_max))
        else:
            loss = F.cross_entropy(logits, batch.targets)
        if draw is not None:
            rows = draw[1]
            loss = loss + F.cross_entropy(model.logits(features[len(batch.targets):], rows.task_ids), rows.targets)
        loss.backward()
        self.optimizer.step()
        self.store(batch)
        return loss.detach()

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "seen_max": self.seen_max.clone(), "task": self.task_id}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.seen_max = state["seen_max"].clone()  # on the model's device: the loop moved the state there
        self.task_id = int(state["task"])
