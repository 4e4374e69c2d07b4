"""MARK (Hurtado, Raymond-Saez & Soto, NeurIPS 2021): a shared knowledge base (KB) of conv blocks whose channels
each task scales per sample with masks of its own, and a metalearning update of the KB.

The five phases of a task and the deviations and choices (Reptile direction, w_k, inner loop): docs/methods.md,
section ``mark``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lifelong.data.batches import Stream, TaskView, eval_batches
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import base
from lifelong.methods.base import Method
from lifelong.models.mark import MarkModel, TaskExtractor, load_pretrained, resnet18_extractor


MASK_OFF = 0.01  # a mask value below this counts as a channel switched off (diagnostics)


class Params(base.Params):
    use_meta: bool = Field(True, description="phase (4), the KB's metalearning update (false: the paper's ablation)")
    use_masks: bool = Field(True, description="scale the KB's channels by M^t's masks (false: every mask is 1)")
    mask_activation: Literal["relu", "sigmoid"] = Field("relu", description="activation of M^t's outputs")
    backbone: Literal["conv", "resnet18"] = Field(
        "conv", description="F^t: conv = the small conv net (trained per task unless backbone_weights is set); "
                            "resnet18 = torchvision's ResNet-18 (needs torchvision and backbone_weights)")
    backbone_weights: str | None = Field(
        None, description="local weights file (safetensors or torch.save state dict) of a pretrained backbone, "
                          "frozen and shared by every task; None = train a conv F^t per task")
    features: int = Field(128, gt=0, description="output width of the conv F^t (its Linear → ReLU)")
    extractor_channels: int = Field(32, gt=0, description="channels of the conv F^t's two conv layers")
    kb_kernels: list[int] = Field([4, 3, 2], description="kernel size of each KB conv block (MiniImageNet: 10, 8, 2)")
    kb_channels: list[int] = Field([64, 128, 256], description="output channels of each KB conv block")
    latent: int = Field(128, gt=0, description="width of the KB's FC layer, the input of C^t (MiniImageNet: 256)")
    kb_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout after the KB's FC layer")
    extractor_epochs: int = Field(50, ge=0, description="phase (1): epochs of F^t with its temporary head")
    kb_epochs: int = Field(50, ge=0, description="phase (2): epochs of KB + C^1 on the first task")
    mask_epochs: int = Field(50, ge=0, description="phase (3): epochs of M^t + C^t before the meta-update "
                                                   "(phase (5) runs train.epochs)")
    meta_epochs: int = Field(10, ge=0, description="phase (4): repetitions of the KB meta-update")
    mini_tasks: int = Field(10, gt=0, description="adapted KB copies per meta-update")
    inner_loop: int = Field(40, ge=0, description="SGD steps of each copy on its batch")
    lr_task: float = Field(0.1, gt=0.0, description="SGD learning rate of phases (1), (2), (3), (5) (MiniImageNet: 0.01)")
    lr_inner: float | None = Field(None, gt=0.0, description="SGD learning rate of the inner loop; None = lr_task")
    lr_meta: float = Field(0.01, gt=0.0, description="β, the step towards the adapted weights (MiniImageNet: 0.001)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum of phases (1), (2), (3), (5)")
    weight_decay: float = Field(0.01, ge=0.0, description="SGD weight decay of phases (1), (2), (3), (5)")
    grad_clip: float | None = Field(0.5, gt=0.0, description="gradient-norm clip of every phase and of the inner loop; "
                                                                 "None = off")


def reptile_step(parameters: list[torch.Tensor], adapted: list[list[torch.Tensor]], weights: list[float],
                 beta: float) -> None:
    """θ ← θ + β Σ_k (w_k/Σw)(θ_k − θ) in place, for every tensor of θ; equal weights when every w_k is 0."""
    total = sum(weights)
    shares = [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)
    with torch.no_grad():
        for i, theta in enumerate(parameters):
            theta.add_(sum(share * (thetas[i] - theta) for share, thetas in zip(shares, adapted)), alpha=beta)


class MARK(Method):
    name = "mark"
    trains_before_task = True
    scenarios = ("task",)  # one head and one mask set per task, chosen by the task id (docs/methods.md)
    description = "MetA Reusable Knowledge: a knowledge base masked per task, enriched by metalearning (Hurtado 2021)"
    Params = Params
    own_network = "mark-kb"  # its KB, F^t, M^t and C^t come from the mark.* settings, not from model.*

    def __init__(self, build_network: Callable[..., Any], params: Params, train: Any):
        if params.backbone == "resnet18" and params.backbone_weights is None:
            raise UserError("mark.backbone resnet18 needs mark.backbone_weights (a local ResNet-18 weights file)")

        def build_model() -> MarkModel:
            network = build_network("mark-kb", kernels=params.kb_kernels, channels=params.kb_channels,
                                    latent=params.latent, dropout=params.kb_dropout)
            in_shape = network.backbone.in_shape

            def make_extractor() -> TaskExtractor:
                return TaskExtractor(in_shape, params.features, params.extractor_channels)

            shared = None
            if params.backbone_weights is not None:
                backbone = resnet18_extractor() if params.backbone == "resnet18" else make_extractor()
                shared = load_pretrained(backbone, params.backbone_weights).to(next(network.parameters()).device)
            features = params.features if shared is None else shared.out_features
            return MarkModel(network, make_extractor, features, params.mask_activation, params.use_masks, shared)

        super().__init__(build_model, params, train)
        self.model.kb.requires_grad_(False)  # trained only in phase (2) and, as copies, in phase (4)
        self.task_id = -1  # the task being trained
        self.meta_accuracy: list[list[float]] = []  # per task: mean accuracy of the mini-tasks of each meta epoch
        self.meta_diverged: list[int] = []  # per task: adapted copies left out of the meta-update (non-finite)

    # --- the phases ---
    def before_task(self, task: Task) -> None:
        """Phases (1)-(4) on the task's training data; leaves the optimizer of phase (5) for the loop."""
        model, p = self.model, self.params
        self.task_id = task.id
        model.add_task(task.id)
        view = TaskView(task, task.train, model.device())
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        if model.shared_extractor is None:
            self.train_extractor(task, view, generator)
        model.train()
        if task.id == 0:
            head = model.network.head(0)
            model.kb.requires_grad_(True)
            self.fit(view, generator, [*model.kb.parameters(), *head.parameters()], p.kb_epochs,
                     lambda x: head(model.kb(x)))
            model.kb.requires_grad_(False)
        self.fit(view, generator, self.task_parameters(), p.mask_epochs, lambda x: model(x, task.id))
        if p.use_meta:
            self.meta_accuracy.append([])
            self.meta_diverged.append(0)
            for _ in range(p.meta_epochs):
                weights = self.meta_update(view, generator)  # one per finite copy
                self.meta_accuracy[-1].append(sum(weights) / len(weights) if weights else 0.0)
                self.meta_diverged[-1] += p.mini_tasks - len(weights)
        self.optimizer = self.make_optimizer()

    def train_extractor(self, task: Task, view: TaskView, generator: torch.Generator) -> None:
        """Phase (1): F^t and a temporary linear head, trained together; F^t is then frozen."""
        extractor = self.model.extractor(task.id).requires_grad_(True).train()
        head = nn.Linear(extractor.out_features, task.num_classes).to(self.model.device())
        self.fit(view, generator, [*extractor.parameters(), *head.parameters()], self.params.extractor_epochs,
                 lambda x: head(extractor(x)))
        extractor.requires_grad_(False).eval()

    def meta_update(self, view: TaskView, generator: torch.Generator) -> list[float]:
        """Phase (4), once: adapt mini_tasks copies of the KB, step the KB towards the finite ones (a diverged copy
        would turn the whole KB into NaN); returns the w_k of the finite copies."""
        copies = [self.adapt(view, generator) for _ in range(self.params.mini_tasks)]
        finite = [(thetas, w) for thetas, w in copies if all(torch.isfinite(q).all() for q in thetas)]
        if finite:
            reptile_step(list(self.model.kb.parameters()), [t for t, _ in finite], [w for _, w in finite],
                         self.params.lr_meta)
        return [w for _, w in finite]

    def adapt(self, view: TaskView, generator: torch.Generator) -> tuple[list[torch.Tensor], float]:
        """One mini-task: a KB copy and a fresh linear classifier take inner_loop clipped SGD steps on one random
        batch (masks of M^t applied); returns the copy's parameters θ_k and its accuracy w_k on a second batch."""
        size = min(self.train_config.batch_size, len(view))
        device = self.model.device()
        fit_rows, check_rows = (torch.randperm(len(view), generator=generator)[:size].to(device) for _ in range(2))
        x, y, x_check, y_check = (view.inputs(fit_rows), view.targets[fit_rows], view.inputs(check_rows),
                                  view.targets[check_rows])
        with torch.no_grad():
            masks, check_masks = self.model.masks(x, self.task_id), self.model.masks(x_check, self.task_id)
        learner = copy.deepcopy(self.model.kb).requires_grad_(True).train()
        classifier = nn.Linear(learner.out_features, view.task.num_classes).to(device)
        optimizer = torch.optim.SGD([*learner.parameters(), *classifier.parameters()],
                                    lr=self.params.lr_inner or self.params.lr_task)
        for _ in range(self.params.inner_loop):
            self.step(optimizer, classifier(learner(x, masks)), y)
        learner.eval()
        with torch.no_grad():
            accuracy = (classifier(learner(x_check, check_masks)).argmax(1) == y_check).float().mean().item()
        return [q.detach() for q in learner.parameters()], accuracy

    def fit(self, view: TaskView, generator: torch.Generator, parameters: list[torch.Tensor], epochs: int,
            forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``epochs`` of SGD on ``parameters`` over the task's training data."""
        optimizer = self.sgd(parameters)
        stream = Stream([view], self.train_config.batch_size, generator)
        for _ in range(epochs):
            for x, y, _ in stream.epoch():
                self.step(optimizer, forward(x), y)

    def step(self, optimizer: torch.optim.Optimizer, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, backward, gradient-norm clip (grad_clip) of the optimizer's parameters, SGD step."""
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.params.grad_clip is not None:
            nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], self.params.grad_clip)
        optimizer.step()
        return loss.detach()

    # --- hooks of the loop ---
    def train_step(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """Phase (5): one step on M^t and C^t."""
        return self.step(self.optimizer, self.model(x, task_ids), y)

    def report(self) -> dict[str, Any]:
        return {"parameters": sum(q.numel() for q in self.model.parameters()), "meta_accuracy": self.meta_accuracy,
                "meta_diverged": self.meta_diverged}

    def diagnostics(self, train: TaskView) -> dict[str, torch.Tensor]:
        """``mark/mask_sparsity`` and ``mark/mask_mean``: per KB block, the share of M^t's mask values below
        MASK_OFF and their mean, on the task's training data (M^t and F^t are frozen afterwards)."""
        key = str(self.task_id)
        if key not in self.model.mask_generators:
            return {}
        was_training, off, total, count = self.model.training, None, None, 0
        self.model.eval()
        try:
            with torch.inference_mode():
                for x, _ in eval_batches(train, self.train_config.eval_batch_size):
                    masks = self.model.masks(x, self.task_id)
                    below = torch.stack([(m < MASK_OFF).float().mean(1).sum() for m in masks])
                    sums = torch.stack([m.float().mean(1).sum() for m in masks])
                    off, total = (below, sums) if off is None else (off + below, total + sums)
                    count += x.shape[0]
        finally:
            self.model.train(was_training)
        return {} if off is None else {"mark/mask_sparsity": off / count, "mark/mask_mean": total / count}

    # --- state ---
    def task_parameters(self) -> list[torch.Tensor]:
        """The current task's M^t (if masks are used) and C^t."""
        key = str(self.task_id)
        masks = self.model.mask_generators[key] if key in self.model.mask_generators else nn.Module()
        return [*masks.parameters(), *self.model.network.head(self.task_id).parameters()]

    def sgd(self, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
        p = self.params
        return torch.optim.SGD(parameters, lr=p.lr_task, momentum=p.momentum, weight_decay=p.weight_decay)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return self.sgd(self.task_parameters())

    def extra_state(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "meta_accuracy": self.meta_accuracy, "meta_diverged": self.meta_diverged}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.task_id = int(state["task_id"])
        self.meta_accuracy = [[float(a) for a in row] for row in state["meta_accuracy"]]
        self.meta_diverged = [int(n) for n in state.get("meta_diverged", [0] * len(self.meta_accuracy))]
