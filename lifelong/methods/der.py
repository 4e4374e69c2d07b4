"""Dark Experience Replay (Buzzega et al., NeurIPS 2020): a reservoir memory of rows with the logits they had
when stored; replayed rows are pulled towards those logits (MSE), and DER++ adds their cross-entropy;
docs/methods.md, "der / der++"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import Batch
from lifelong.methods import base
from lifelong.methods.rehearsal import StoreChoice, StoreWhen, with_memory


class Params(base.Params):
    alpha: float = Field(0.3, ge=0.0, description="α: weight of the logit-matching MSE on replayed rows")
    beta: float = Field(0.0, ge=0.0, description="β: weight of the cross-entropy on a second replayed batch "
                                                 "(0 = DER; der++ defaults to 0.5)")
    store: StoreWhen = Field(
        "stream", description="when rows and their logits enter the memory: stream = each incoming batch with the "
                              "logits of its step (the paper's), task_end = every row of a finished task with the "
                              "network's logits at its end, evaluation mode (Avalanche's DER)")


class PlusParams(Params):
    beta: float = Field(0.5, ge=0.0, description="β: weight of the cross-entropy on a second replayed batch")


def logit_matching(outputs: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the entries both hold (task-incremental heads narrower than the widest are
    padded: -inf in the outputs, NaN in the stored logits)."""
    stored = stored[:, : outputs.shape[1]]
    valid = stored.isfinite() & outputs.isfinite()
    squares = (outputs - stored).where(valid, 0.0).pow(2)  # no boolean indexing: no device sync per step
    return squares.sum() / valid.sum()


class DER(StoreChoice):
    name = "der"
    description = "dark experience replay: replayed rows keep the logits they had when stored (Buzzega 2020)"
    Params = Params
    Combined = with_memory(Params)
    keeps_logits = True
    task_features = False  # one backbone pass over rows of several tasks

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """One backbone pass over the incoming rows and the replayed ones (a second draw for DER++'s β term)."""
        p, model = self.params, self.model
        self.optimizer.zero_grad(set_to_none=True)
        draws = [self.replay(p.memory.batch_size, batch.augmented) for _ in range(1 + (p.beta > 0))] \
            if len(self.memory) else []
        features = model.features(torch.cat([batch.inputs, *(x for x, _ in draws)])).split(
            [len(batch.targets), *(len(rows.targets) for _, rows in draws)])
        loss = F.cross_entropy(model.logits(features[0], batch.task_ids), batch.targets)
        if p.store == "stream":  # stored after the step with the logits the rows had before it, unseen classes too
            outputs = model.logits(features[0], batch.task_ids, all_classes=True).detach()
        if draws:
            rows = draws[0][1]
            loss = loss + p.alpha * logit_matching(model.logits(features[1], rows.task_ids, all_classes=True),
                                                   rows.logits)
        if len(draws) > 1:
            rows = draws[1][1]
            loss = loss + p.beta * F.cross_entropy(model.logits(features[2], rows.task_ids), rows.targets)
        loss.backward()
        self.optimizer.step()
        if p.store == "stream":
            self.store(batch, logits=outputs)
        return loss.detach()


class DERPlusPlus(DER):
    name = "der++"
    description = "DER plus the cross-entropy of a second replayed batch on its stored labels (Buzzega 2020)"
    section = "der++"
    Params = PlusParams
    Combined = with_memory(PlusParams)
