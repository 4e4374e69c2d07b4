"""Which task owns each conv filter, and the guarantee that an owned filter never changes again.

``owner[l][f]`` is the task that owns filter f of conv layer l, or -1 while it is free. After a task, the free
filters whose weight norm exceeds τ become that task's. ``restore`` copies the owned filters (weights and bias)
back from a snapshot with ``torch.where``: called after every optimizer or meta step, it undoes exactly whatever
the step did to them (weight decay, momentum and Adam moments included), which masking gradients cannot. Given
the masks of the step, it also holds the free filters that were off (norm ≤ τ) at exactly 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FilterOwnership:
    """Ownership of the filters of ``convs`` (Conv2d layers with bias), with τ the norm above which a filter is used."""

    def __init__(self, convs: nn.ModuleList, tau: float):
        self.convs, self.tau = convs, tau
        self.owner = [torch.full((conv.out_channels,), -1, dtype=torch.int64) for conv in convs]
        self.anchor: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.snapshot()

    def owned(self, layer: int) -> torch.Tensor:
        """Bool per filter of ``layer``, on the layer's device."""
        return self.owner[layer].to(self.convs[layer].weight.device) >= 0

    def norms(self) -> list[torch.Tensor]:
        return [conv.weight.detach().flatten(1).norm(dim=1) for conv in self.convs]

    def snapshot(self) -> None:
        """Remember the current weights: the owned filters' values to restore."""
        self.anchor = [(conv.weight.detach().clone(), conv.bias.detach().clone()) for conv in self.convs]

    @torch.no_grad()
    def restore(self, on: list[torch.Tensor] | None = None) -> None:
        """Owned filters back to their snapshot; with ``on`` (the masks a step used), the free filters that were off
        set to exactly 0, bias included (an optimizer's momentum or normalised step would otherwise move them)."""
        for layer, (conv, (weight, bias)) in enumerate(zip(self.convs, self.anchor)):
            owned = self.owned(layer)
            off = torch.zeros_like(owned) if on is None else ~owned & ~on[layer]
            conv.weight.copy_(torch.where(owned.view(-1, 1, 1, 1), weight, conv.weight.masked_fill(
                off.view(-1, 1, 1, 1), 0.0)))
            conv.bias.copy_(torch.where(owned, bias, conv.bias.masked_fill(off, 0.0)))

    def free(self) -> list[torch.Tensor]:
        """Bool per filter of each layer: no task owns it."""
        return [~self.owned(layer) for layer in range(len(self.convs))]

    def masks(self, task_id: int, training: bool = False) -> list[torch.Tensor]:
        """Filters on when evaluating ``task_id``: those owned by tasks ≤ task_id and, while it is still
        ``training``, the free ones above τ (those it would own if it ended now)."""
        masks = []
        for layer, norms in enumerate(self.norms()):
            owner = self.owner[layer].to(norms.device)
            on = (owner >= 0) & (owner <= task_id)
            if training:
                on |= (owner < 0) & (norms > self.tau)
            masks.append(on)
        return masks

    def claim(self, task_id: int) -> list[int]:
        """Give the free filters above τ to ``task_id``; returns how many filters were free before, per layer."""
        free_before = [int((o < 0).sum()) for o in self.owner]
        for owner, norms in zip(self.owner, self.norms()):
            owner[(owner < 0) & (norms.cpu() > self.tau)] = task_id
        self.snapshot()
        return free_before

    def counts(self, tasks: int) -> list[list[int]]:
        """Per layer, the number of filters owned by each of the first ``tasks`` tasks."""
        return [[int((o == t).sum()) for t in range(tasks)] for o in self.owner]

    def record(self, task_id: int, free_before: list[int], min_free_share: float) -> dict[str, Any]:
        """What metrics.jsonl records after ``task_id``: per layer, the filters owned by each task so far, the free
        filters and their share, the share of the filters the task could train that it left unused (its group
        sparsity), and ``low_capacity`` when a layer has less than ``min_free_share`` of its filters free."""
        owned = self.counts(task_id + 1)
        free = [int((o < 0).sum()) for o in self.owner]
        share = [f / len(o) for f, o in zip(free, self.owner)]
        record: dict[str, Any] = {
            "filters_owned": owned, "filters_free": free, "free_share": share,
            "sparsity": [1.0 - owned[k][task_id] / n if n else 1.0 for k, n in enumerate(free_before)]}
        low = [k for k, s in enumerate(share) if s < min_free_share]
        if low:
            record["low_capacity"] = (f"layers {low} have less than {min_free_share:.0%} of their filters free after "
                                      f"task {task_id}; later tasks can only reuse frozen filters (a larger "
                                      "gs-mask.c frees more, up to a point where the network empties: "
                                      "docs/methods.md, gs-mask)")
        return record

    def state_dict(self) -> list[torch.Tensor]:
        return [o.clone() for o in self.owner]

    def load_state_dict(self, owner: list[torch.Tensor]) -> None:
        """Ownership from a checkpoint; call ``snapshot`` once the weights are loaded too."""
        self.owner = [o.clone().to(torch.int64) for o in owner]
