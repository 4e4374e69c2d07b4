"""The replay memory of the rehearsal methods: a fixed budget of raw training rows with their targets, task ids
and (for DER) the logits they had when stored. Policies and their cost: docs/methods.md, "The memory"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

Policy = Literal["reservoir", "balanced"]


@dataclass
class MemoryRows:
    """Rows drawn from (or written to) the memory; ``logits`` is None when the memory keeps none."""

    raw: torch.Tensor
    targets: torch.Tensor
    task_ids: torch.Tensor
    logits: torch.Tensor | None = None


class Memory:
    """``size`` rows at most, on ``device``; ``add`` follows the policy, ``sample`` draws uniformly. Storage is
    allocated at the first ``add`` (its row shape and dtype); every random draw uses the memory's own generator."""

    def __init__(self, size: int, device: torch.device, seed: int, policy: Policy = "reservoir",
                 logit_width: int | None = None):
        self.size, self.device, self.policy, self.logit_width = size, device, policy, logit_width
        self.generator = torch.Generator().manual_seed(seed)
        self.count = 0  # rows held
        self.seen = 0  # rows offered so far (the reservoir's stream position)
        self.raw: torch.Tensor | None = None
        self.targets = torch.zeros(0, dtype=torch.int64, device=device)
        self.task_ids = torch.zeros(0, dtype=torch.int64, device=device)
        self.logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.count

    # --- writing ---
    def add(self, rows: MemoryRows) -> None:
        """Offer a batch of rows; the policy decides which are kept and which stored rows they replace."""
        if self.raw is None:
            self._allocate(rows)
        if self.policy == "reservoir":
            self._add_reservoir(rows)
        else:
            self._add_balanced(rows)

    def replace(self, rows: MemoryRows) -> None:
        """Hold exactly ``rows`` (at most ``size``), e.g. exemplars chosen by herding."""
        if len(rows.targets) > self.size:
            raise ValueError(f"{len(rows.targets)} rows do not fit a memory of {self.size}")
        if self.raw is None:
            self._allocate(rows)
        self.count = 0
        self._write(torch.arange(len(rows.targets), device=self.device), rows)
        self.count = len(rows.targets)

    def _allocate(self, rows: MemoryRows) -> None:
        self.raw = torch.zeros((self.size, *rows.raw.shape[1:]), dtype=rows.raw.dtype, device=self.device)
        self.targets = torch.zeros(self.size, dtype=torch.int64, device=self.device)
        self.task_ids = torch.zeros(self.size, dtype=torch.int64, device=self.device)
        if self.logit_width is not None:
            self.logits = torch.full((self.size, self.logit_width), float("nan"), device=self.device)

    def _write(self, slots: torch.Tensor, rows: MemoryRows, pick: torch.Tensor | None = None) -> None:
        """Store rows ``pick`` of ``rows`` (all if None) in ``slots``."""
        def take(t: torch.Tensor) -> torch.Tensor:
            return t if pick is None else t.index_select(0, pick)

        self.raw.index_copy_(0, slots, take(rows.raw).to(self.device))  # slots are distinct
        self.targets.index_copy_(0, slots, take(rows.targets).to(self.device))
        self.task_ids.index_copy_(0, slots, take(rows.task_ids).to(self.device))
        if self.logits is not None:
            if rows.logits is None:
                raise ValueError("this memory keeps logits; pass the rows' logits")
            logits = take(rows.logits).detach().to(self.device, torch.float32)
            self.logits[slots] = float("nan")
            self.logits[slots, : logits.shape[1]] = logits

    def _add_reservoir(self, rows: MemoryRows) -> None:
        """Reservoir sampling (Vitter's algorithm R) over the whole stream, one batch at a time: the row at stream
        position p (0-based) takes slot p while the memory fills, then slot j ~ U{0..p} if j < size."""
        b = len(rows.targets)
        start, self.seen = self.seen, self.seen + b
        self.count = min(self.size, self.seen)
        u = torch.rand(b, generator=self.generator, dtype=torch.float64)  # one draw per row, in stream order
        if self.seen <= self.size:  # still filling: every row takes the next slot
            self._write(torch.arange(start, self.seen, device=self.device), rows)
            return
        slot = u.mul_(torch.arange(start + 1, self.seen + 1, dtype=torch.float64)).long()  # ⌊u (p + 1)⌋
        if start < self.size:  # the first rows of the batch still fill the memory
            slot[: self.size - start] = torch.arange(start, self.size)
        keep = (slot < self.size).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        slot = slot[keep]
        if keep.numel() > 1:  # two rows of one batch drawing the same slot: the later one wins, as in sequence
            slot, order = torch.sort(slot, stable=True)
            keep = keep[order]
            last = torch.ones_like(slot, dtype=torch.bool)
            last[:-1] = slot[1:] != slot[:-1]
            slot, keep = slot[last], keep[last]
        self._write(slot.to(self.device), rows, keep.to(rows.targets.device))

    def _add_balanced(self, rows: MemoryRows) -> None:
        """Greedy class balance (GDumb) decided per batch, a class being a (task, target) pair: fill free slots
        first; when full, the classes' counts become the water-filled balance of (held + offered), offered rows
        kept in their order, surplus rows of the largest classes evicted at random."""
        b = len(rows.targets)
        self.seen += b
        free = min(self.size - self.count, b)
        if free > 0:
            self._write(torch.arange(self.count, self.count + free, device=self.device), rows,
                        torch.arange(free, device=rows.targets.device))
            self.count += free
        if free == b:
            return
        targets, task_ids = rows.targets[free:].to(self.device), rows.task_ids[free:].to(self.device)
        # a class is a (task, target) pair: task- and domain-incremental targets repeat from task to task (where
        # targets are global, the pairs keep the targets' order, so class-incremental balance is unchanged)
        width = int(max(int(targets.max()), int(self.targets.max()))) + 1
        stored, offered = self.task_ids * width + self.targets, task_ids * width + targets
        classes = int(max(int(offered.max()), int(stored.max()))) + 1
        held = torch.bincount(stored, minlength=classes)
        incoming = torch.bincount(offered, minlength=classes)
        target = balanced_counts(held + incoming, self.size, self.generator)
        accept = (target - held).clamp_min(0)
        evict = (held - target).clamp_min(0)
        new_rows = (rank_within_class(offered) < accept[offered]).nonzero().squeeze(1)
        shuffled = torch.randperm(self.size, generator=self.generator).to(self.device)
        order = shuffled[torch.sort(stored[shuffled], stable=True).indices]  # by class, random within
        old_slots = order[rank_within_class(stored[order]) < evict[stored[order]]]
        self._write(old_slots, rows, (new_rows + free).to(rows.targets.device))

    # --- reading ---
    def sample(self, n: int) -> MemoryRows:
        """``n`` rows drawn uniformly without replacement (all of them when fewer are held)."""
        index = torch.randperm(self.count, generator=self.generator)[:n].to(self.device)
        return self.rows(index)

    def rows(self, index: torch.Tensor | slice = slice(None)) -> MemoryRows:
        """The held rows at ``index`` (all by default)."""
        if isinstance(index, slice):
            index = torch.arange(self.count, device=self.device)[index]
        raw, targets, task_ids = (t.index_select(0, index) for t in (self.raw, self.targets, self.task_ids))
        return MemoryRows(raw, targets, task_ids, None if self.logits is None else self.logits.index_select(0, index))

    def class_counts(self, classes: int | None = None) -> torch.Tensor:
        """Rows held per target."""
        return torch.bincount(self.targets[: self.count], minlength=classes or 0)

    # --- state ---
    def state_dict(self) -> dict[str, Any]:
        held = slice(0, self.count)
        return {"count": self.count, "seen": self.seen, "generator": self.generator.get_state(),
                "raw": None if self.raw is None else self.raw[held], "targets": self.targets[held],
                "task_ids": self.task_ids[held], "logits": None if self.logits is None else self.logits[held]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.raw, self.count = None, 0
        if state["raw"] is not None:
            rows = MemoryRows(state["raw"], state["targets"], state["task_ids"], state["logits"])
            self._allocate(rows)
            if state["count"]:
                self._write(torch.arange(state["count"], device=self.device), rows)
        self.count, self.seen = int(state["count"]), int(state["seen"])


def rank_within_class(labels: torch.Tensor) -> torch.Tensor:
    """For each entry, how many earlier entries share its label (0 for the first of each label)."""
    order = torch.sort(labels, stable=True).indices
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels)  # first position of each label in sorted order
    ranks = torch.empty_like(labels)
    ranks[order] = torch.arange(len(labels), device=labels.device) - starts
    return ranks


def balanced_counts(available: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Water-filling: per class min(available, L) for the largest level L that fits ``size``, and the remainder
    one more each for classes still above L, chosen at random. Sums to min(size, available.sum())."""
    if int(available.sum()) <= size:
        return available.clone()
    low, high = 0, int(available.max())
    while low < high:  # the largest L with Σ min(available, L) ≤ size
        mid = (low + high + 1) // 2
        if int(available.clamp_max(mid).sum()) <= size:
            low = mid
        else:
            high = mid - 1
    counts = available.clamp_max(low)
    above = (available > low).nonzero().squeeze(1)
    extra = size - int(counts.sum())
    lucky = above[torch.randperm(len(above), generator=generator)[:extra].to(above.device)]
    counts[lucky] += 1
    return counts


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's exemplar selection (Rebuffi et al. 2017, Algorithm 4) over one class's feature rows: L2-normalise
    them, then pick greedily, m times, the row x not yet picked that minimises ‖μ − (φ(x) + Σ picked) / k‖ (μ the
    mean of the normalised rows, k the pick's 1-based number). Returns min(m, rows) indices in selection order.

    With a = μ − Σ picked / k, the squared cost is ‖a‖² − 2 a·φ(x) / k + ‖φ(x)‖² / k²: one matrix-vector product
    per pick (‖a‖² is the same for every row and left out)."""
    phi = torch.nn.functional.normalize(features.detach().flatten(1).double(), dim=1)
    mu, squares = phi.mean(0), phi.pow(2).sum(1)
    picked = torch.zeros(len(phi), dtype=torch.bool, device=phi.device)
    total = torch.zeros_like(mu)
    order = []
    for k in range(1, min(m, len(phi)) + 1):
        cost = (squares / k - 2 * (phi @ (mu - total / k))) / k
        i = int(cost.masked_fill(picked, float("inf")).argmin())
        order.append(i)
        picked[i] = True
        total += phi[i]
    return torch.tensor(order, dtype=torch.int64, device=features.device)
