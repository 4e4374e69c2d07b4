"""Experience replay (Chaudhry et al. 2019; Riemer et al. 2019): every step trains on the incoming batch
concatenated with a batch drawn from a reservoir memory (``er.store``: filled as the stream goes, the papers', or at
each task's end, Avalanche's); docs/methods.md, "er"."""

from __future__ import annotations

import torch
from pydantic import Field

from lifelong.data.batches import Batch
from lifelong.methods import base
from lifelong.methods.rehearsal import StoreChoice, StoreWhen, with_memory


class Params(base.Params):
    """Section ``er`` (the memory's settings are in section ``memory``)."""

    store: StoreWhen = Field(
        "stream", description="when rows enter the memory: stream = each incoming batch as it is trained (the "
                              "papers'), task_end = every row of a finished task at its end, so replay draws only "
                              "earlier tasks (Avalanche's Replay)")


class ER(StoreChoice):
    name = "er"
    description = "experience replay: each step on the incoming batch plus a batch from a reservoir memory"
    Params = Params
    Combined = with_memory(Params)

    def train_batch(self, batch: Batch) -> torch.Tensor:
        x, y, task_ids = batch.inputs, batch.targets, batch.task_ids
        if len(self.memory):
            replayed, rows = self.replay(self.params.memory.batch_size, batch.augmented)
            x, y = torch.cat([x, replayed]), torch.cat([y, rows.targets])
            task_ids = self.mixed_task_ids(batch, rows)
        if self.params.store == "stream":
            self.store(batch)  # after the draw, so the incoming rows are not replayed with themselves, as in the paper
        return self.train_step(x, y, task_ids)
