"""Experience replay (Chaudhry et al. 2019; Riemer et al. 2019): every step trains on the incoming batch
concatenated with a batch drawn from a reservoir memory; docs/methods.md, "er"."""

from __future__ import annotations

import torch

from lifelong.data.batches import Batch
from lifelong.methods import base
from lifelong.methods.rehearsal import Rehearsal, with_memory


class Params(base.Params):
    """Section ``er``: ER has no hyperparameters of its own (the memory's are in section ``memory``)."""


class ER(Rehearsal):
    name = "er"
    task_free = True  # reservoir memory: no boundary needed (Chaudhry et al. 2019 run it online)
    description = "experience replay: each step on the incoming batch plus a batch from a reservoir memory"
    Params = Params
    Combined = with_memory(Params)

    def train_batch(self, batch: Batch) -> torch.Tensor:
        x, y, task_ids = batch.inputs, batch.targets, batch.task_ids
        if len(self.memory):
            replayed, rows = self.replay(self.params.memory.batch_size, batch.augmented)
            x, y = torch.cat([x, replayed]), torch.cat([y, rows.targets])
            task_ids = self.mixed_task_ids(batch, rows)
        self.store(batch)  # after the draw, so the incoming rows are not replayed with themselves, as in the paper
        return self.train_step(x, y, task_ids)
