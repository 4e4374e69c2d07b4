"""The method interface: a model plus continual-learning state, driven by ``loop.run`` through a few hooks.

A new method subclasses ``Method`` in its own file, declares its hyperparameters as a ``Params`` class and
overrides only the hooks it needs (usually ``loss`` and ``after_task``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from lifelong.data.batches import Batch, TaskView
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError
from lifelong.methods.importance import QuadraticPenalty
from lifelong.models.heads import Network

if TYPE_CHECKING:  # the config layer sits above the methods (it validates their sections)
    from lifelong.config import Config, TrainConfig


class Params(BaseModel):
    """Base of every method's hyperparameters: typed, documented, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Method:
    """Fine-tuning behaviour; subclasses change what they need."""

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    section: ClassVar[str | None] = None  # config section of the Params when not the method's name (imm-*: imm)
    variant_of: ClassVar[tuple[str, str] | None] = None  # (base method, section): runs instead of base with section
    extra_sections: ClassVar[dict[str, type[Params]]] = {}  # config sections shared with other methods (memory)
    scenarios: ClassVar[tuple[str, ...]] = ("task", "class", "domain")  # the scenarios the method can serve
    task_free: ClassVar[bool] = False  # learns a stream whose task boundaries are hidden (no hook, no task data)
    trains_before_task: ClassVar[bool] = False  # trains on the task's whole data in before_task (mark)
    task_features: ClassVar[bool] = True  # every network call names the task: task-conditioned backbones serve it
    revision: ClassVar[int] = 0  # raised when the same config gives other results than before; part of the fingerprint
    own_network: ClassVar[str | None] = None  # its network, built from its own settings (a model section: a warning)

    @classmethod
    def config_section(cls) -> str:
        return cls.section or cls.name

    @classmethod
    def make_params(cls, cfg: Config) -> Params:
        """The method's hyperparameters from the run's config (its section; defaults where the config is silent)."""
        return cls.Params(**cfg.params.get(cls.config_section(), {}))

    def __init__(self, build_network: Callable[..., Network], params: Params, train: TrainConfig):
        self.build_network = build_network
        if getattr(build_network, "scenario", None) is not None:  # before the network's own checks
            self.check_scenario(build_network.scenario)
        self.model = build_network()
        if getattr(self.model, "task_conditioned", False) and not self.task_features:  # mark: its own model
            raise UserError(f"method {self.name} computes features without naming a task, which model "
                            f"{self.model.backbone_name} (modules of each task's own) cannot give; use another "
                            "model (mlp, alexnet, resnet18-reduced)")
        self.params = params
        self.train_config = train
        self.optimizer: torch.optim.Optimizer | None = None
        self.penalty: QuadraticPenalty | None = None  # quadratic-penalty methods keep theirs here

    def check_benchmark(self, benchmark: Benchmark) -> None:
        """Refuse a benchmark the method cannot serve, before anything trains (a UserError naming the fix)."""
        self.check_scenario(benchmark.scenario)

    def check_scenario(self, scenario: str) -> None:
        """Refuse a scenario the method cannot serve (a UserError naming the fix)."""
        if scenario not in self.scenarios:
            raise UserError(f"method {self.name} serves only {' and '.join(self.scenarios)}-incremental scenarios, "
                            f"not {scenario}; set data.scenario to {self.scenarios[0]}")

    # --- hooks the loop calls, in this order for each task ---
    def training_views(self, task: Task, seen: list[TaskView]) -> list[TaskView]:
        """The training data of ``task``: views mixed into its batches (``seen`` ends with the task's own)."""
        return [seen[-1]]

    def before_task(self, task: Task) -> None:
        """Reach the task's classes and start a fresh optimizer (``train.reset_optimizer``; else the new one
        takes over the old one's state for the parameters both hold)."""
        self.model.start_task(task.id)
        previous, self.optimizer = self.optimizer, self.make_optimizer()
        if previous is not None and not self.train_config.reset_optimizer:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p in previous.state:
                        self.optimizer.state[p] = previous.state[p]

    def before_epoch(self, task: Task, train: TaskView, epoch: int) -> None:
        """Called before each training epoch (``epoch`` = epochs of ``task`` already done), e.g. for periodic
        meta-learning phases; ``train`` is the task's training data."""

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """The objective without the quadratic penalty: cross-entropy, plus what a method adds (distillation...)."""
        return F.cross_entropy(self.model(x, task_ids), y)

    def loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """The whole objective: the task loss plus the quadratic penalty, if the method keeps one."""
        loss = self.task_loss(x, y, task_ids)
        return loss + self.penalty(self.model) if self.penalty is not None and self.penalty.active else loss

    def train_batch(self, batch: Batch) -> torch.Tensor:
        """What the loop calls per batch; a replay method overrides it to store ``batch.raw`` and mix in memory."""
        return self.train_step(batch.inputs, batch.targets, batch.task_ids)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """One optimizer step on ``loss``; returns the (detached) task loss without forcing a device sync.

        The penalty's gradient is added to ``.grad`` in closed form instead of being backpropagated: the same
        gradient for about a third of the memory traffic.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task_loss(x, y, task_ids)
        scaler = getattr(self, "_scaler", None)  # train.precision fp16 (see train_context())
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)  # the penalty's closed-form gradient is added unscaled
        if self.penalty is not None and self.penalty.active:
            self.penalty.add_gradient_(self.model)
        if scaler is None:
            self.optimizer.step()
        else:
            self._scaled_step = True
            scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
            self._scaled_step = False
        return loss.detach()

    # --- train.precision and memory format (issue 17; docs/configuration.md) ---
    def train_context(self) -> contextlib.AbstractContextManager:
        """The context the loop trains each batch in: autocast to ``train.precision`` (bf16, fp16) on the model's
        device, and conv backbones in channels_last on CUDA (set on the first call); fp32 on the CPU: nothing."""
        device = self.device()
        if device.type == "cuda" and not getattr(self, "_channels_last", False):
            self._channels_last = True
            if any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules()):
                self.model.to(memory_format=torch.channels_last)
        precision = getattr(self.train_config, "precision", "fp32")
        if precision == "fp32":
            return contextlib.nullcontext()
        if precision == "fp16" and getattr(self, "_scaler", None) is None:
            self._scaler = torch.amp.GradScaler(device.type)
        if precision == "fp16" and self.optimizer is not None and getattr(self, "_hooked", None) is not self.optimizer:
            self._hooked = self.optimizer
            self.optimizer.register_step_pre_hook(self._refuse_unscaled_step)
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _refuse_unscaled_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not getattr(self, "_scaled_step", False):
            raise UserError(f"train.precision fp16 needs loss scaling, which method {self.name}'s own training step "
                            "does not do; use train.precision bf16 (no scaling needed)")

    def after_task(self, task: Task, train: TaskView) -> None:
        """Consolidate after training ``task`` (importances, anchors, merging); ``train`` is its training data."""

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Logits for a batch of task ``task_id`` (the id is ignored by shared heads)."""
        return self.model(x, task_id)

    def network_for(self, task_id: int) -> torch.nn.Module:
        """The network that predicts task ``task_id`` (probes read its features)."""
        return self.model

    def task_log(self) -> dict[str, Any]:
        """Method-specific figures added to the ``task`` record of metrics.jsonl after each task."""
        return {}

    def report(self) -> dict[str, Any]:
        """Method-specific figures for results.json (e.g. chosen coefficients)."""
        return {}

    def diagnostics(self, train: TaskView) -> dict[str, torch.Tensor]:
        """Tensors the loop saves after each task (``lifelong inspect``, docs/inspect.md): by default the quadratic
        penalty's importance per parameter; ``train`` is the task's training data. Uses no random numbers."""
        return {} if self.penalty is None else self.penalty.importance(self.model)

    # --- state ---
    def device(self) -> torch.device:
        """Where the model's parameters, and so the method's state, live."""
        return next(self.model.parameters()).device

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """What the current task's optimizer updates: every parameter that requires a gradient."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimizer over the trainable parameters; the fused kernels (one pass per parameter
        tensor) make Adam's step about 2.5× faster on the CPU than the default multi-tensor version."""
        cfg = self.train_config
        params = self.trained_parameters()
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def extra_state(self) -> dict[str, Any]:
        """The method's own CL state (tensors, numbers, lists, dicts only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "extra": self.extra_state(),
            "scaler": None if getattr(self, "_scaler", None) is None else self._scaler.state_dict(),  # fp16's scale
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_extra_state(state["extra"])
        self.model.load_state_dict(state["model"])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = self.make_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # absent from states saved before the scale was kept
            self._scaler = torch.amp.GradScaler(self.device().type)
            self._scaler.load_state_dict(state["scaler"])
