"""Group-sparse filter masks with calibration and meta-iteration (origin document 000): CE + a group-sparse
regularizer; filters above τ after a task become that task's and never change again; task j is evaluated with
only the filters of tasks ≤ j; meta-iteration phases on mini-tasks (``meta.py``). Free filters are redrawn at
each task's start, and a task's BatchNorm statistics are recomputed at its end.

The loss, ownership, evaluation, meta-iteration and every deviation: docs/methods.md, section ``gs-mask``.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torch.func import functional_call

from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import base, meta
from lifelong.methods.base import Method
from lifelong.methods.filter_ownership import FilterOwnership
from lifelong.models.gs_conv import FilterMaskedConvNet


class Params(base.Params):
    c: float = Field(1.0, ge=0.0, description="c: overall weight of the group-sparse regularizer R (the paper's "
                     "0.05 is for its ~40,000 SGD steps per task; 1 lets short runs free filters, docs/methods.md)")
    betas: list[float] = Field([0.1, 0.275, 0.45, 0.625], description="β_l of each conv layer (one per block): "
                               "weight of the filter-wise L2,1 term; the layer's Frobenius term has max(0.5, 1−β_l)/2")
    tau: float = Field(5e-4, gt=0.0, description="τ: filters with ‖W_f‖₂ > τ count as used (penalised, then owned)")
    meta_learn: bool = Field(True, description="run the meta-iteration phases (false = the paper's ablation)")
    meta_algo: Literal["maml", "fomaml", "reptile"] = Field(
        "maml", description="outer-loop rule: second-order MAML (authors), first-order MAML or Reptile")
    num_iterations: int = Field(50, gt=0, description="outer steps per meta-iteration phase")
    meta_every: int = Field(5, gt=0, description="a meta phase starts every meta_every epochs (never before epoch 1)")
    inner_steps: int = Field(5, gt=0, description="SGD steps of the inner loop on a mini-task's adaptation half")
    inner_lr: float = Field(0.05, gt=0.0, description="learning rate of the inner SGD steps")
    outer_lr: float = Field(3e-4, gt=0.0, description="learning rate β of the outer SGD step θ ← θ − β·g")
    meta_batch: int = Field(16, gt=0, description="mini-tasks averaged per outer step")
    ways: int = Field(5, ge=2, description="classes per mini-task (at most the task's number of classes)")
    shots: int = Field(10, ge=2, description="samples per class per mini-task: half to adapt, half to evaluate")
    proximal: bool = Field(True, description="apply the filter-wise term as a proximal step after each optimizer "
                           "step, W_f ← W_f·max(0, 1 − η_f·c·β_l/‖W_f‖) with η_f the step size (SGD: lr; Adam: "
                           "lr/√mean v̂_f), instead of its subgradient (false: the paper's step): unused filters "
                           "reach exactly 0")
    min_free_share: float = Field(0.1, ge=0.0, le=1.0, description="warn (and record `low_capacity`) when a layer "
                                  "has less than this share of its filters free after a task")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: list[float]) -> list[float]:
        if not betas or any(not 0.0 <= b <= 1.0 for b in betas):
            raise ValueError("needs one β in [0, 1] per conv layer")
        return betas


def group_sparse_penalty(weights: list[torch.Tensor], betas: list[float], c: float, tau: float,
                         filterwise: bool = True) -> torch.Tensor:
    """R = c Σ_l [max(0.5, 1−β_l)/2 · ‖W_l‖_F + β_l Σ_{f: ‖W_l,f‖₂ > τ} ‖W_l,f‖₂] over the conv weights W_l
    (without the filter-wise sum when ``filterwise`` is false: the proximal variant applies it separately)."""
    total = weights[0].new_zeros(())
    for w, beta in zip(weights, betas):
        total = total + max(0.5, 1.0 - beta) / 2 * w.norm()
        if filterwise:
            norms = w.flatten(1).norm(dim=1)
            total = total + beta * norms[norms > tau].sum()
    return c * total


@torch.no_grad()
def group_soft_threshold_(weights: list[torch.Tensor], thresholds: list[float | torch.Tensor]) -> None:
    """The proximal operator of t_l Σ_f ‖W_l,f‖₂, in place: each filter shrinks by t in norm, or to exactly 0
    (t: one number per layer, or one per filter)."""
    for w, t in zip(weights, thresholds):
        norms = w.flatten(1).norm(dim=1)
        scale = torch.where(norms > t, 1 - t / norms.clamp_min(torch.finfo(w.dtype).tiny), 0.0)
        w.mul_(scale.view(-1, *[1] * (w.dim() - 1)))


def step_sizes(optimizer: torch.optim.Optimizer, weights: list[torch.Tensor]) -> list[float | torch.Tensor]:
    """The step size the optimizer gives each filter: lr for SGD; lr/(√mean_f v̂ + eps) for Adam, v̂ its
    bias-corrected second moment averaged over the filter's entries (the metric of its step)."""
    group = optimizer.param_groups[0]
    sizes: list[float | torch.Tensor] = []
    for w in weights:
        state = optimizer.state.get(w, {})
        if "exp_avg_sq" not in state:
            sizes.append(group["lr"])
            continue
        v_hat = state["exp_avg_sq"].flatten(1).mean(1) / (1 - group["betas"][1] ** state["step"])
        sizes.append(group["lr"] / (v_hat.sqrt() + group["eps"]))
    return sizes


class GSMask(Method):
    name = "gs-mask"
    description = ("group-sparse filter masks, per-task BN and calibration, meta-iteration (document 000; its "
                   "network gs-conv is the default)")
    Params = Params
    default_model = "gs-conv"  # the model when the config names none (config.py); naming another is an error
    scenarios = ("task",)
    revision = 1  # issue 18's fixes (BN statistics, proximal step, eval mask): earlier run directories are stale

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.model.backbone, FilterMaskedConvNet):
            raise UserError("method gs-mask runs on its own network, gs-conv (its default when no model is named), "
                            f"not {type(self.model.backbone).__name__}; drop --model / model.name or set it to gs-conv")
        self.net: FilterMaskedConvNet = self.model.backbone
        if len(self.params.betas) != self.net.blocks:
            raise UserError(f"gs-mask.betas has {len(self.params.betas)} values but model gs-conv has "
                            f"{self.net.blocks} conv layers; give one β per layer")
        self.ownership = FilterOwnership(self.net.convs, self.params.tau)
        self.current: int | None = None  # the task being trained
        self.done = 0  # tasks finished
        self.log: dict[str, Any] = {}
        self.view: TaskView | None = None  # the current task's training data (for its BatchNorm statistics)
        self.stale = False  # the current task's statistics lag behind steps taken since they were computed
        self.fresh: TaskView | None = None  # the data the current task's statistics were last computed from, with
        # the weights and masks as they are now (None once anything moved): the task's end then need not redo them
        with torch.no_grad():
            self.meta_head = nn.Linear(self.net.out_features, self.params.ways).to(self.net.convs[0].weight.device)

    # --- hooks ---
    def task_parameters(self, task_id: int) -> list[nn.Parameter]:
        """Task ``task_id``'s own BN, calibrations and head."""
        return [*self.net.task_modules(task_id).parameters(), *self.model.head(task_id).parameters()]

    def freeze_task(self, task_id: int) -> None:
        for p in self.task_parameters(task_id):
            p.requires_grad_(False)

    def trained_parameters(self) -> list[nn.Parameter]:
        """The shared convs (their owned filters are restored after each step) and the current task's modules."""
        return [*self.net.convs.parameters(), *self.task_parameters(self.current)]

    def before_task(self, task: Task) -> None:
        """A fresh draw for the filters no task owns (task 0 keeps the network's own), then the base hook."""
        self.current = task.id
        if task.id > 0:
            self.net.redraw_filters_(self.ownership.free(), task.id)
        self.ownership.snapshot()
        self.fresh = None
        super().before_task(task)

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        task = int(task_ids)
        return self.masked_loss(x, y, task, self.ownership.masks(task, training=True))

    def masked_loss(self, x: torch.Tensor, y: torch.Tensor, task: int, on: list[torch.Tensor]) -> torch.Tensor:
        """Cross-entropy with only the filters ``on`` (as in evaluation) plus R (without its filter-wise sum when
        that is applied as a proximal step)."""
        p = self.params
        return F.cross_entropy(self.model.logits(self.net(x, task, on), task), y) + group_sparse_penalty(
            [c.weight for c in self.net.convs], p.betas, p.c, p.tau, filterwise=not p.proximal)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """One optimizer step, the proximal step, then owned filters restored and the filters that were off
        (free, norm ≤ τ) held at 0."""
        task = int(task_ids)
        on = self.ownership.masks(task, training=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.masked_loss(x, y, task, on)
        loss.backward()
        self.optimizer.step()
        if self.params.proximal:
            weights, p = [c.weight for c in self.net.convs], self.params
            sizes = step_sizes(self.optimizer, weights)
            group_soft_threshold_(weights, [size * p.c * beta for size, beta in zip(sizes, p.betas)])
        self.ownership.restore(on)
        self.stale, self.fresh = True, None
        return loss.detach()

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Task ``task_id``'s logits with only its filters on, in chunks of 256 rows (larger batches of 28×28×32
        maps run ~2× slower per row on the CPU)."""
        if task_id == self.current and self.stale and self.view is not None:  # validation during training
            self.recompute_statistics(task_id, self.view)
        masks = self.ownership.masks(task_id, training=task_id == self.current)
        return torch.cat([self.model.logits(self.net(chunk, task_id, masks), task_id) for chunk in x.split(256)])

    def recompute_statistics(self, task_id: int, train: TaskView, rows: int = 2048, batch_size: int = 256) -> None:
        """Task ``task_id``'s BatchNorm statistics over its training data (every k-th row, at most ``rows``), with
        its filters as they are now (none without data)."""
        if task_id == self.current:
            self.stale, self.fresh = False, train
        if len(train) == 0:
            return
        masks = self.ownership.masks(task_id, training=True)
        index = torch.arange(0, len(train), -(-len(train) // rows), device=train.images.device)
        batches = (train.inputs(index[i:i + batch_size]) for i in range(0, len(index), batch_size))
        self.net.recompute_statistics_(batches, task_id, masks)

    def before_epoch(self, task: Task, train: TaskView, epoch: int) -> None:
        """Keep the task's training data (for its statistics), then the meta phase when one is due."""
        self.view, p = train, self.params
        if not p.meta_learn or epoch == 0 or epoch % p.meta_every:
            return
        sampler = meta.MiniTaskSampler(train, p.ways, p.shots)
        params, masks = self.meta_parameters(task.id)
        buffers = {n: b.clone() for n, b in self.net.named_buffers()}  # batch statistics; running ones untouched
        ways, on = sampler.ways, self.ownership.masks(task.id, training=True)

        def loss_fn(values: meta.Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            net_values = {n: v for n, v in values.items() if not n.startswith("meta_head.")}
            features = functional_call(self.net, (net_values, buffers), (x, task.id, on))
            head = {n.removeprefix("meta_head."): v for n, v in values.items() if n.startswith("meta_head.")}
            return F.cross_entropy(functional_call(self.meta_head, head, (features,))[:, :ways], y)

        for _ in range(p.num_iterations):
            episodes = [sampler.sample() for _ in range(p.meta_batch)]
            direction = meta.meta_gradient(loss_fn, params, masks, episodes, p.meta_algo, p.inner_steps, p.inner_lr)
            with torch.no_grad():
                for n, value in params.items():
                    value.sub_(p.outer_lr * meta.masked_update(direction[n], masks[n]))
            self.ownership.restore(on)
        self.stale, self.fresh = True, None

    def meta_parameters(self, task_id: int) -> tuple[dict[str, nn.Parameter], dict[str, torch.Tensor | None]]:
        """The parameters the meta phase learns (by functional name) and their masks (True = may change)."""
        params = {f"convs.{n}": v for n, v in self.net.convs.named_parameters()}
        params |= {f"tasks.{task_id}.{n}": v for n, v in self.net.task_modules(task_id).named_parameters()}
        params |= {f"meta_head.{n}": v for n, v in self.meta_head.named_parameters()}
        masks: dict[str, torch.Tensor | None] = {n: None for n in params}
        for layer in range(self.net.blocks):
            free = ~self.ownership.owned(layer)
            masks[f"convs.{layer}.weight"], masks[f"convs.{layer}.bias"] = free.view(-1, 1, 1, 1), free
        return params, masks

    def after_task(self, task: Task, train: TaskView) -> None:
        if self.fresh is not train:  # else the validation just before computed exactly these statistics
            self.recompute_statistics(task.id, train)
        free_before = self.ownership.claim(task.id)
        self.freeze_task(task.id)
        self.current, self.done, self.optimizer = None, task.id + 1, None  # a later task makes its own optimizer
        self.view, self.stale, self.fresh = None, False, None
        self.log = self.ownership.record(task.id, free_before, self.params.min_free_share)
        if "low_capacity" in self.log:
            warnings.warn(f"gs-mask: {self.log['low_capacity']}", stacklevel=2)

    def task_log(self) -> dict[str, Any]:
        return {"gs_mask": self.log}

    def report(self) -> dict[str, Any]:
        owned = self.ownership.counts(self.done)
        total = self.net.filters * self.net.blocks
        return {"filters": self.net.filters, "filters_owned": owned,
                "share_used_per_task": [sum(layer[t] for layer in owned) / total for t in range(self.done)]}

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {"owner": self.ownership.state_dict(), "current": -1 if self.current is None else self.current,
                "done": self.done, "meta_head": self.meta_head.state_dict(), "log": self.log}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ownership.load_state_dict(state["owner"])
        self.current = None if int(state["current"]) < 0 else int(state["current"])
        self.done = int(state["done"])
        self.meta_head.load_state_dict(state["meta_head"])
        self.log = state["log"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for task_id in range(self.done):
            self.freeze_task(task_id)
        self.ownership.snapshot()
