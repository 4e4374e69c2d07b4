"""A continual learner for your own training code: a registered method around a network, fed one batch at a time.

``lifelong run`` trains through the same object (``start_task`` / ``start_epoch`` / ``learn_batch`` /
``finish_task``), so a hand-written loop and the command cannot drift apart. docs/own-data.md shows both.
"""

from __future__ import annotations

import copy
import inspect
import io
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong import methods, store
from lifelong.config import Config, build_config, read_yaml
from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import Batch, TaskView
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError, first_line
from lifelong.methods.base import Method
from lifelong.models import NetworkFactory
from lifelong.models.heads import Network

FORMAT = "lifelong-learner/1"
TASK_FREE_HINT = "set train.boundaries given, or use a task-free method"


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cuda`` without a GPU is a UserError."""
    if isinstance(name, torch.device):
        return name
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but no CUDA GPU is available; use device cpu or auto "
                        "(--device on the command line)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def on_device(state: Any, device: torch.device) -> Any:
    """``state`` (nested dicts, lists and tuples) with every tensor moved to ``device``."""
    if torch.is_tensor(state):
        return state.to(device)
    if isinstance(state, dict):
        return {k: on_device(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_device(v, device) for v in state)
    return state


class UserBackbone(nn.Module):
    """A user's module as a backbone: its outputs (features or logits, flattened) feed the method's heads."""

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...]):
        super().__init__()
        self.module = module
        if next(module.parameters(), None) is None:
            raise UserError("the model has no parameters to learn; pass an nn.Module with trainable layers")
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()} - {"float32"})
        if dtypes:
            raise UserError(f"the model's parameters are {', '.join(dtypes)}; the learner trains float32 weights "
                            "(train.precision runs bf16/fp16 arithmetic on them): pass model.float()")
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(torch.zeros(2, *in_shape, device=device))
        except Exception as err:  # the user's module refuses the declared shape
            raise UserError(f"the model cannot take inputs of shape {tuple(in_shape)} ({type(err).__name__}: "
                            f"{first_line(err)}); pass the input_shape it "
                            "expects (without the batch dimension)") from None
        finally:
            module.train(was_training)
        if not torch.is_tensor(out) or out.dim() < 2 or out.shape[0] != 2:
            raise UserError("the model must map a batch (B, *input_shape) to one tensor (B, ...) of features or logits")
        self.out_features = int(out[0].numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).flatten(1)


@dataclass(frozen=True, eq=False)
class UserNetworkFactory(NetworkFactory):
    """Networks around the user's module: the first is the module itself, later ones (a method's fresh network
    or teacher) are copies with every layer that can reset its parameters reset."""

    module: nn.Module | None = None
    built: list[int] = field(default_factory=lambda: [0])  # networks made so far

    def __call__(self, backbone: str | None = None, **options: Any) -> Network:
        if backbone is not None:  # a network a method names (mark's KB)
            return super().__call__(backbone, **options)
        module = self.module
        if self.built[0]:
            module = copy.deepcopy(self.module)
            for layer in module.modules():
                if callable(getattr(layer, "reset_parameters", None)):
                    layer.reset_parameters()
        self.built[0] += 1
        return Network(UserBackbone(module, self.in_shape), self.scenario, self.class_counts,
                       head_seed=self.head_seed, mask_unseen=self.mask_unseen).to(self.device)


def _positive_ints(value: Any, name: str, expected: str, listed: bool = False) -> list[int]:
    """``value`` (Python numbers: see ``_plain``) as a list of positive integers (one integer alone unless
    ``listed``); anything else is refused."""
    items = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else \
        None if listed or isinstance(value, (str, bytes)) else [value]
    try:
        numbers = [operator.index(v) for v in items] if items is not None and not any(
            isinstance(v, bool) for v in items) else None
    except TypeError:
        numbers = None
    if not numbers or min(numbers) < 1:
        raise UserError(f"{name} must be {expected}, got {value!r}")
    return numbers


def _plain(value: Any) -> Any:
    """Arrays and tensors as Python numbers or lists of them; anything else as it is."""
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) else value


def _task_id(task: Any) -> int:
    """A task id the caller gave: a non-negative integer."""
    try:
        task_id = operator.index(task) if not isinstance(task, bool) else -1
    except TypeError:
        task_id = -1
    if task_id < 0:
        raise UserError(f"a task id is a non-negative integer, got {task!r}")
    return task_id


def _rows_view(task: Task, x: torch.Tensor, y: torch.Tensor) -> TaskView:
    """Rows the caller has already prepared, as a view whose ``prepare`` leaves float rows as they are."""
    return TaskView(task, _Rows(x, y), x.device)


class _Rows(ImageArrays):
    """Prepared rows of any shape and dtype (a Learner's inputs), with their labels."""

    def __post_init__(self) -> None:
        if self.labels.shape != (self.images.shape[0],):
            raise UserError(f"{self.images.shape[0]} inputs but labels of shape {tuple(self.labels.shape)}; pass "
                            "one label per input")


class Learner:
    """A registered method around a network, learning batch by batch; see docs/own-data.md.

    Build one with ``Learner.create`` (your code) or ``Learner.for_benchmark`` (what ``lifelong run`` does).
    """

    def __init__(self, method: Method, cfg: Config, scenario: str, classes: list[int] | int,
                 input_shape: tuple[int, ...], backbone: str | None):
        self.method, self.cfg, self.scenario = method, cfg, scenario
        self.classes, self.input_shape, self.backbone = classes, tuple(input_shape), backbone
        self.task: Task | None = None  # the task being learnt
        self.tasks_done = 0  # tasks finished (the next task's id)
        self.epoch = 0  # epochs of the current task already ended
        self.views: list[TaskView] = []  # how every task reached prepares its rows
        self.mixed: list[TaskView] = []  # views a method mixes into its task's batches (iCaRL's exemplars)
        self.collected: list[tuple[torch.Tensor, torch.Tensor]] = []  # the task's rows, for its end
        self.device = method.device()

    # --- construction ---
    @classmethod
    def for_benchmark(cls, cfg: Config, benchmark: Benchmark, device: torch.device) -> Learner:
        """The configured method around fresh networks for the benchmark (``lifelong run``'s learner)."""
        factory = NetworkFactory(cfg.model.name, cfg.model.options, tuple(benchmark.input_shape), benchmark.scenario,
                                 benchmark.class_counts, head_seed=cfg.seed, device=device,
                                 mask_unseen=cfg.train.unseen_outputs == "masked")
        learner = cls(cls._method(cfg, factory), cfg, benchmark.scenario, benchmark.class_counts,
                      benchmark.input_shape, cfg.model.name)
        learner.method.check_benchmark(benchmark)
        learner.check_stream()
        return learner

    @classmethod
    def create(cls, method: str | None = None, model: nn.Module | str | None = None, *,
               input_shape: Sequence[int], classes: int | Sequence[int], scenario: str = "class",
               config: Config | dict[str, Any] | str | Path | None = None, sets: Sequence[str] = (),
               device: str | torch.device | None = None) -> Learner:
        """A learner for your own loop.

        ``model``: your ``nn.Module`` (inputs → features or logits; the method adds its heads) or a registered
        backbone name (default: the config's, ``mlp``). ``classes``: the classes of each task (a list) or of
        the whole stream (an int). ``config``: a Config, a dict or a YAML file for the method's sections and
        ``train`` settings. Seeds torch's global generator with the config's seed, as ``lifelong run`` does.
        """
        if config is not None and not isinstance(config, (str, os.PathLike, Config, Mapping)):
            raise UserError(f"config must be a Config, a dict or a YAML file's path, not {type(config).__name__}")
        if model is not None and not isinstance(model, (str, nn.Module)):
            raise UserError(f"model must be an nn.Module or a backbone's name, not {type(model).__name__}")
        raw = read_yaml(config) if isinstance(config, (str, os.PathLike)) else \
            config.to_dict() if isinstance(config, Config) else dict(config or {})
        if method is not None:
            raw["method"] = method
        if device is not None:
            raw["device"] = str(device)
        if isinstance(model, str):
            raw.setdefault("model", {})
            raw["model"] = {**raw["model"], "name": model}
        cfg = build_config(raw, [sets] if isinstance(sets, str) else list(sets))
        if scenario not in ("task", "class", "domain"):
            raise UserError(f"unknown scenario {scenario!r}; use task, class or domain")
        classes = _plain(classes)
        counts = _positive_ints(classes, "classes", "a number of classes (a stream) or one per task, e.g. [2, 2]")
        classes = counts[0] if not isinstance(classes, Sequence) else counts
        if scenario == "domain" and len(set(counts)) > 1:
            raise UserError(f"a domain-incremental stream has one label space; pass one number of classes, not {counts}")
        shape = tuple(_positive_ints(_plain(input_shape), "input_shape", "one input's shape without the batch, e.g. "
                                     "(784,) or (1, 28, 28)", listed=True))
        backbone_shape = shape if len(shape) == 3 else (shape[0], 1, 1) if len(shape) == 1 else shape
        torch.manual_seed(cfg.seed)
        target = resolve_device(cfg.device)
        masked = cfg.train.unseen_outputs == "masked"
        if isinstance(model, nn.Module):
            factory: NetworkFactory = UserNetworkFactory("user", {}, shape, scenario, counts, cfg.seed, target,
                                                         masked, module=model.to(target))
            backbone = None
        else:
            if len(backbone_shape) != 3:
                raise UserError(f"backbone {cfg.model.name} takes (C, H, W) or (features,) inputs, not {shape}; "
                                "pass your own nn.Module as model")
            factory = NetworkFactory(cfg.model.name, cfg.model.options, backbone_shape, scenario, counts,
                                     head_seed=cfg.seed, device=target, mask_unseen=masked)
            backbone = cfg.model.name
        learner = cls(cls._method(cfg, factory), cfg, scenario, classes, shape, backbone)
        if scenario not in learner.method.scenarios:
            raise UserError(f"method {cfg.method} serves only {' and '.join(learner.method.scenarios)}-incremental "
                            f"scenarios, not {scenario}")
        return learner

    @staticmethod
    def _method(cfg: Config, factory: NetworkFactory) -> Method:
        method_class = methods.method_class(cfg.method, cfg.params)
        return method_class(factory, method_class.make_params(cfg), cfg.train)

    def check_stream(self) -> None:
        """Refuse hidden boundaries outside a stream or with a method that needs them, and iterations in a stream."""
        train = self.cfg.train
        if train.boundaries == "hidden" and not train.online:
            raise UserError("train.boundaries hidden applies to a stream only; set train.online true")
        if train.online and train.iterations is not None:
            raise UserError("train.iterations does not apply to a stream (train.online: each sample is seen once); "
                            "remove one of them")
        if train.boundaries == "hidden" and not self.method.task_free:
            free = ", ".join(n if m.task_free is True else f"{n} in its task-free setting"
                             for n, m in methods.METHODS.items() if m.task_free is True or isinstance(
                                 inspect.getattr_static(m, "task_free"), property))
            raise UserError(f"method {self.method.name} needs task boundaries (it acts at each task's start or end); "
                            f"{TASK_FREE_HINT} ({free})")

    @property
    def model(self) -> Network:
        return self.method.model

    # --- the pieces lifelong run drives ---
    def start_task(self, task: Task, seen: list[TaskView], told: bool = True, resumed: bool = False
                   ) -> list[TaskView]:
        """Begin ``task``: the method's ``before_task`` when ``told`` (a hidden boundary only reaches the task's
        outputs), nothing when ``resumed`` (begun before a checkpoint). Returns the views whose rows train it
        (``seen`` ends with the task's own)."""
        self.task = task
        if not resumed:
            self.epoch, self.collected = 0, []
            if told:
                self.method.before_task(task)
            else:
                self.model.start_task(task.id)
        return self.method.training_views(task, seen)

    def start_epoch(self, train: TaskView, epoch: int) -> None:
        """Before each pass over the task's data (``epoch`` passes already done)."""
        self.epoch = epoch
        self.model.train()
        self.method.before_epoch(self.task, train, epoch)

    def learn_batch(self, batch: Batch) -> torch.Tensor:
        """One step of the method on ``batch``; returns the detached loss."""
        if not self.model.training:  # an evaluation came in between
            self.model.train()
        with self.method.train_context():  # train.precision: autocast (Method.train_context)
            return self.method.train_batch(batch)

    def finish_task(self, train: TaskView, told: bool = True) -> None:
        """End the task: the method's consolidation when ``told`` (``train``: the task's training data)."""
        if told:
            self.method.after_task(self.task, train)
        self.tasks_done, self.task, self.collected, self.mixed = self.task.id + 1, None, [], []

    def scores(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """The method's class scores for inputs ``x`` of task ``task_id``, in evaluation mode."""
        self.model.eval()
        with torch.inference_mode():
            return self.method.predict(x, task_id)

    # --- your loop ---
    def begin_task(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, task: int | None = None) -> int:
        """Start the next task (``task``: its id, the next one by default); ``x, y``: its training data, for
        methods that train on it before its batches (mark). Returns the task's id."""
        task_id = self._next_task(task)  # everything is checked before the current task ends
        rows = (x, y) if x is not None and y is not None else None
        if rows is None and self.method.trains_before_task:
            raise UserError(f"method {self.method.name} trains on the whole task before its batches: call "
                            "learner.begin_task(x, y) with the task's training data first")
        if rows is None and self.method.name == "joint":
            raise UserError("joint trains on every task's data at once (a benchmark's upper bound), which a "
                            "learner fed batch by batch cannot do; use lifelong run")
        if rows is not None:
            rows = self._on_device(*rows)
            self._check_labels(rows[1], task_id)
        if self.task is not None:
            self.end_task()
        task_obj = self._task(task_id, *(rows if rows else (None, None)))
        empty = _rows_view(task_obj, *self._empty())
        self.views.append(empty)
        seen = [*self.views[:-1], _rows_view(task_obj, *rows) if rows else empty]
        training = self.start_task(task_obj, seen)
        self.mixed = training[1:]
        self.start_epoch(seen[-1], 0)
        return task_id

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None = None) -> float:
        """One step on a batch of prepared inputs ``x`` and labels ``y`` (class-incremental: labels over every
        class so far; task-incremental: the task's own labels). A new ``task`` ends the current one first."""
        x, y = self._on_device(x, y)  # before a new task ends the current one
        if self.task is None or (task is not None and _task_id(task) != self.task.id):
            self._check_labels(y, self._next_task(task))  # refused before the current task ends
            self.begin_task(task=task)
        self._check_labels(y)
        if self.epoch == 0 and not self.method.task_free:
            self.collected.append((x, y))
        inputs, targets, task_ids = x, y, self.task.id
        if self.mixed:  # iCaRL's exemplars: as many rows as the batch, drawn from the views it mixes in
            inputs, targets, task_ids = self._mix(x, y)
        try:
            return float(self.learn_batch(Batch(inputs, targets, task_ids, inputs, None)))
        except ValueError as err:  # torch's BatchNorm, before any weight moved
            if "more than 1 value per channel" not in str(err):
                raise
            raise UserError("a batch of one row cannot train the model's BatchNorm layers (one value per channel); "
                            "learn batches of 2 rows or more") from None

    def next_epoch(self) -> None:
        """Tell the method that another pass over the current task's data begins."""
        if self.task is None:
            raise UserError("no task is being learnt; call learn() first")
        self.start_epoch(self._task_view(), self.epoch + 1)

    def end_task(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """End the current task; ``x, y``: its training data for the method's consolidation (default: the rows
        ``learn`` received during the task's first pass)."""
        if self.task is None:
            raise UserError("no task is being learnt; call learn() first")
        if x is None:
            return self.finish_task(self._task_view())
        x, y = self._on_device(x, y)
        self._check_labels(y)
        self.finish_task(_rows_view(self.task, x, y))

    def predict(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        """Class scores (B, classes) for inputs ``x``; ``task``: the task id the inputs belong to (needed when each
        task has its own head; default: the latest task reached; a task not learnt yet scores with untrained
        weights, as an accuracy matrix's entries above the diagonal do)."""
        if task is None and self.scenario == "task":
            raise UserError("task-incremental learners predict per task; pass predict(x, task=ID)")
        reached = max(self.task.id if self.task is not None else self.tasks_done - 1, 0)
        task_id = reached if task is None else _task_id(task)
        if not isinstance(self.classes, int):
            known: int | None = len(self.classes)
        else:  # a stream: a head per task begun (task-incremental), else one shared head for any task id
            known = reached + 1 if self.scenario == "task" else None
        if known is not None and task_id >= known:
            raise UserError(f"task {task_id} is not one of this learner's tasks so far (0..{known - 1})")
        return self.scores(self._inputs(x), task_id)

    # --- saving ---
    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "config": self.cfg.to_dict(), "scenario": self.scenario, "classes": self.classes,
                "input_shape": list(self.input_shape), "backbone": self.backbone, "method": self.method.state_dict(),
                "task": None if self.task is None else self.task.id, "tasks_done": self.tasks_done,
                "epoch": self.epoch, "collected": [list(pair) for pair in self.collected],
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def save(self, path: str | Path) -> None:
        """Everything needed to go on learning, in one file written atomically (tensors and plain data only)."""
        if not isinstance(path, (str, os.PathLike)):
            raise UserError(f"save needs a file path, not {type(path).__name__}")
        buffer = io.BytesIO()
        torch.save(on_device(self.state_dict(), torch.device("cpu")), buffer)
        store.atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, device: str | None = None) -> Learner:
        """A learner saved by ``save``, loaded without unpickling code; ``model``: your module again, when the
        learner was built around one (its weights come from the file)."""
        if not isinstance(path, (str, os.PathLike)):
            raise UserError(f"load needs a file path, not {type(path).__name__}")
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"no saved learner at '{path}'") from None
        except Exception as err:  # torch raises many types for damaged or unsafe files
            raise UserError(f"'{path}' is not a learner that can be loaded safely ({type(err).__name__})") from None
        keys = ("config", "scenario", "classes", "input_shape", "backbone", "method", "task", "tasks_done", "epoch",
                "collected", "rng")
        if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in keys):
            raise UserError(f"'{path}' is not a saved lifelong learner ({FORMAT}); save one with learner.save(path)")
        if state["backbone"] is None and model is None:
            raise UserError(f"'{path}' was saved around your own module; pass it again: Learner.load(path, model=...)")
        if state["backbone"] is not None and model is not None:
            raise UserError(f"'{path}' holds backbone {state['backbone']!r}, not a module of yours; call "
                            "Learner.load(path) without model")
        learner = cls.create(model=model if state["backbone"] is None else state["backbone"],
                             input_shape=state["input_shape"], classes=state["classes"], scenario=state["scenario"],
                             config=state["config"], device=device)
        learner.restore(state)
        return learner

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output: the method's state, the task being learnt, its rows."""
        for task_id in range(state["tasks_done"] + (state["task"] is not None)):
            self.views.append(_rows_view(self._task(task_id), *self._empty()))
        try:
            self.method.load_state_dict(on_device(state["method"], self.device))
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"the saved state does not fit method {self.method.name} ({type(err).__name__}: "
                            f"{first_line(err)}); load it with the module, input_shape and classes it was saved "
                            "with") from None
        self.tasks_done, self.epoch = state["tasks_done"], state["epoch"]
        self.collected = [tuple(on_device(pair, self.device)) for pair in state["collected"]]
        if state["task"] is not None:
            self.task = self._task(state["task"])
            self.mixed = self.method.training_views(self.task, self.views)[1:]
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # --- helpers ---
    def _next_task(self, task: int | None) -> int:
        """The id the next task must have (``task``: the id asked for, checked against it)."""
        expected = self.task.id + 1 if self.task is not None else self.tasks_done
        task_id = expected if task is None else _task_id(task)
        if task_id != expected:
            raise UserError(f"tasks arrive in order: the next task is {expected}, not {task_id}")
        self._classes_of(task_id)  # a task without classes is refused here too
        return task_id

    def _classes_of(self, task_id: int) -> list[int]:
        """The class ids of task ``task_id`` (global ones, class-incremental)."""
        counts = [self.classes] if isinstance(self.classes, int) else self.classes
        if task_id >= len(counts) and not isinstance(self.classes, int):
            self._no_classes(task_id)
        count = counts[min(task_id, len(counts) - 1)]
        offset = sum(counts[:task_id]) if self.scenario == "class" and not isinstance(self.classes, int) else 0
        return list(range(offset, offset + count))

    def _task(self, task_id: int, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> Task:
        """Task ``task_id`` of this learner's stream: its classes and, when given, its training rows."""
        classes = self._classes_of(task_id)
        if self.scenario == "task" and isinstance(self.classes, int) and task_id >= len(self.model.class_counts):
            self.model.add_task(self.classes)  # one more head of the stream's width
        rows = _Rows(x, y) if x is not None else _Rows(*self._empty())
        return Task(task_id, f"task {task_id + 1}", classes, [str(c) for c in classes], rows, rows)  # labels as given

    def _no_classes(self, task_id: int) -> int:
        raise UserError(f"task {task_id} has no classes: the learner was created with classes for "
                        f"{len(self.classes)} tasks; pass classes for every task (or one number for a stream)")

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros((0, *self.input_shape), device=self.device),
                torch.zeros(0, dtype=torch.int64, device=self.device))

    def _on_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_tensor(y):
            raise UserError("inputs and labels must be torch tensors")
        x = self._inputs(x)
        if y.shape != (x.shape[0],) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise UserError(f"labels must be integers, one per input (got {tuple(y.shape)} {y.dtype})")
        return x, y.to(self.device, torch.int64)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of inputs checked (a tensor of input_shape rows, at least one, finite) and made float32 on the
        learner's device: one NaN would corrupt the weights, and rehearsal would keep it."""
        if not torch.is_tensor(x):
            raise UserError(f"inputs must be a torch tensor, not {type(x).__name__} (torch.as_tensor converts arrays)")
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"inputs of shape {tuple(x.shape[1:])} do not match the learner's input_shape "
                            f"{self.input_shape}")
        if x.shape[0] == 0:
            raise UserError("a batch needs at least one row")
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise UserError(f"inputs must be real numbers, not {x.dtype}")
        x = x.detach().to(self.device, torch.float32)  # no upstream graph: the memory keeps these rows
        if not torch.isfinite(x).all():
            row = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
            raise UserError(f"inputs hold NaN or infinite values (row {row} is the first); clean them before learning "
                            "or predicting")
        return x

    def _check_labels(self, y: torch.Tensor, task_id: int | None = None) -> None:
        """Labels fit task ``task_id`` (default: the current one)."""
        task_id = self.task.id if task_id is None else task_id
        classes = self._classes_of(task_id)
        width = classes[-1] + 1 if self.scenario == "class" else len(classes)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= width):
            raise UserError(f"labels of task {task_id} must lie in 0..{width - 1}, got {int(y.min())}.."
                            f"{int(y.max())}")

    def _task_view(self) -> TaskView:
        """The rows ``learn`` received during the current task's first pass."""
        if not self.collected:
            return _rows_view(self.task, *self._empty())
        xs, ys = zip(*self.collected)
        return _rows_view(self.task, torch.cat(xs), torch.cat(ys))

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch plus as many rows drawn uniformly from the views the method mixes in."""
        sizes = torch.tensor([len(v) for v in self.mixed])
        picks = torch.randint(int(sizes.sum()), (len(x),))
        bounds = torch.cumsum(sizes, 0)
        owner = torch.bucketize(picks, bounds, right=True)
        xs, ys, ts = [x], [y], [torch.full_like(y, self.task.id)]
        for k in owner.unique().tolist():
            view = self.mixed[k]
            local = (picks[owner == k] - (bounds[k] - len(view))).to(self.device)
            xs.append(view.inputs(local))
            ys.append(view.targets.index_select(0, local))
            ts.append(torch.full_like(ys[-1], view.task.id))
        return torch.cat(xs), torch.cat(ys), torch.cat(ts)
