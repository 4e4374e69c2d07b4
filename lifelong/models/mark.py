"""MARK's networks (Hurtado et al. 2021; docs/methods.md, section ``mark``): the shared knowledge base and the
per-task pieces.

``KnowledgeBase`` is the shared KB (also a registered backbone, ``mark-kb``: without masks it is a plain conv
net). ``TaskExtractor`` is F^t, ``MaskGenerator`` M^t; ``MarkModel`` puts the KB, every task's F^t and M^t and
the task heads C^t (those of a ``Network``) together, so one state dict holds the whole model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lifelong.errors import UserError
from lifelong.models.heads import Network


def _side_after(size: int, kernels: Sequence[int]) -> int:
    """One spatial side after unpadded convolutions, each followed by a 2×2 max-pool."""
    for k in kernels:
        size = (size - k + 1) // 2
    return size


class KnowledgeBase(nn.Module):
    """Conv → ReLU → MaxPool2 blocks (no BatchNorm), each block's output multiplied per sample and channel by a
    mask, then Flatten → Linear(latent) → ReLU → Dropout. CIFAR (32×32): kernels 4/3/2; MiniImageNet: 10/8/2."""

    def __init__(self, in_shape: tuple[int, int, int], kernels: Sequence[int] = (4, 3, 2),
                 channels: Sequence[int] = (64, 128, 256), latent: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        if len(kernels) != len(channels) or not kernels:
            raise UserError(f"the knowledge base needs one kernel size per block's channels, got kernels "
                            f"{list(kernels)} and channels {list(channels)}")
        sides = [_side_after(s, kernels) for s in in_shape[1:]]
        if min(sides) < 1:
            raise UserError(f"knowledge-base kernels {list(kernels)} leave nothing of {in_shape[1]}×{in_shape[2]} "
                            "inputs; use smaller kernels (CIFAR 32×32: [4, 3, 2]; MiniImageNet 84×84: [10, 8, 2])")
        widths = [in_shape[0], *channels]
        # Conv → MaxPool → ReLU computes exactly Conv → ReLU → MaxPool (the ReLU is monotone) on 4× fewer values
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(a, b, k), nn.MaxPool2d(2), nn.ReLU())
                                    for a, b, k in zip(widths, widths[1:], kernels))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * sides[0] * sides[1], latent), nn.ReLU(),
                                nn.Dropout(dropout))
        self.channels = list(channels)
        self.in_shape = tuple(in_shape)
        self.out_features = latent

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Features of ``x``; ``masks[l]`` (batch × channels of block l) scales block l's pooled output."""
        for index, block in enumerate(self.blocks):
            x = block(x)
            if masks is not None:
                x = x * masks[index][:, :, None, None]
        return self.fc(x)


class TaskExtractor(nn.Module):
    """F^t: Conv(→32, k4)-BN-ReLU-Pool → Conv(32→32, k3)-BN-ReLU-Pool → Linear(→features) → ReLU."""

    def __init__(self, in_shape: tuple[int, int, int], features: int = 128, width: int = 32) -> None:
        super().__init__()
        sides = [_side_after(s, (4, 3)) for s in in_shape[1:]]
        if min(sides) < 1:
            raise UserError(f"the MARK feature extractor needs inputs of at least 10×10, got {in_shape[1]}×{in_shape[2]}")
        self.net = nn.Sequential(
            nn.Conv2d(in_shape[0], width, 4), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(width * sides[0] * sides[1], features), nn.ReLU())
        self.out_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskGenerator(nn.Module):
    """M^t: one Linear(features → channels of block l) + activation per KB block; one mask per sample."""

    def __init__(self, features: int, channels: Sequence[int], activation: str = "relu") -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(features, c) for c in channels)
        self.activation = torch.sigmoid if activation == "sigmoid" else torch.relu

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [self.activation(layer(features)) for layer in self.layers]


def resnet18_extractor() -> nn.Module:
    """torchvision's ResNet-18 without its classifier (512 features); torchvision is an optional dependency."""
    try:
        import torchvision
    except ImportError:
        raise UserError("mark.backbone resnet18 needs torchvision (pip install torchvision); or use backbone conv")
    network = torchvision.models.resnet18(weights=None)
    network.fc = nn.Identity()
    network.out_features = 512
    return network


def load_pretrained(network: nn.Module, path: str) -> nn.Module:
    """``network`` with the weights of a local file (safetensors, or a torch.save'd state dict read with
    weights_only=True), frozen in eval mode. Classifier weights (``fc.*``) the network lacks are ignored."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"backbone weights file '{file}' not found; set mark.backbone_weights to a local file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise many types for unreadable files
        raise UserError(f"backbone weights file '{file}' cannot be read ({type(err).__name__}); give a safetensors "
                        "file or a state dict saved with torch.save") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = network.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"backbone weights file '{file}' does not hold a state dict")
    state = {k: v for k, v in state.items() if k in own or not k.startswith("fc.")}
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"backbone weights file '{file}' does not fit the {type(network).__name__} backbone "
                        f"({str(err).splitlines()[1].strip()[:120]})") from None
    for p in network.parameters():
        p.requires_grad_(False)
    return network.eval()


class MarkModel(nn.Module):
    """``model(x, t)`` = C^t(KB(x, M^t(F^t(x)))). The KB and the heads C^t live in ``network`` (a task-incremental
    ``Network`` around a ``KnowledgeBase``); F^t and M^t in ``extractors`` and ``mask_generators``, keyed by task.
    With a pretrained backbone one frozen ``shared_extractor`` serves every task. Extractors are always in eval
    mode here (they are trained, once, by the method before they are frozen)."""

    def __init__(self, network: Network, make_extractor: Callable[[], nn.Module], features: int,
                 mask_activation: str = "relu", use_masks: bool = True,
                 shared_extractor: nn.Module | None = None) -> None:
        super().__init__()
        if network.scenario != "task":
            raise UserError(f"mark learns one head per task: it needs the task-incremental scenario, not "
                            f"'{network.scenario}' (use --scenario task)")
        self.network = network
        self.make_extractor = make_extractor
        self.features, self.mask_activation, self.use_masks = features, mask_activation, use_masks
        self.shared_extractor = shared_extractor
        self.extractors = nn.ModuleDict()
        self.mask_generators = nn.ModuleDict()

    @property
    def kb(self) -> KnowledgeBase:
        return self.network.backbone

    def device(self) -> torch.device:
        return next(self.kb.parameters()).device

    def add_task(self, task_id: int) -> None:
        """Create task ``task_id``'s F^t (unless shared), M^t (if masks are used) and C^t."""
        if self.shared_extractor is None:
            self._create("extractors", str(task_id))
        if self.use_masks:
            self._create("mask_generators", str(task_id))
        self.network.head(task_id)

    def _create(self, kind: str, key: str) -> None:
        """A fresh F^t (frozen until the method trains it) or M^t under ``key``, unless it exists."""
        modules = getattr(self, kind)
        if key not in modules:
            new = (self.make_extractor().requires_grad_(False).eval() if kind == "extractors" else
                   MaskGenerator(self.features, self.kb.channels, self.mask_activation))
            modules[key] = new.to(self.device())

    def extractor(self, task_id: int) -> nn.Module:
        return self.shared_extractor if self.shared_extractor is not None else self.extractors[str(task_id)]

    def masks(self, x: torch.Tensor, task_id: int) -> list[torch.Tensor] | None:
        """Task ``task_id``'s masks for each KB block; None without masks or before the task has its M^t (an
        unstarted task is predicted by the unmasked KB and its untrained head). F^t is frozen, M^t is not."""
        if str(task_id) not in self.mask_generators:
            return None
        with torch.no_grad():
            features = self.extractor(task_id)(x)
        return self.mask_generators[str(task_id)](features)

    def forward(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.network.head(task_id)(self.kb(x, self.masks(x, task_id)))

    def train(self, mode: bool = True) -> MarkModel:
        super().train(mode)
        for extractor in self.extractors.values():
            extractor.eval()
        if self.shared_extractor is not None:
            self.shared_extractor.eval()
        return self

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        """Create the per-task modules the state holds before loading it."""
        for key in state:
            parts = key.split(".")
            if parts[0] in ("extractors", "mask_generators"):
                self._create(parts[0], parts[1])
            elif parts[:2] == ["network", "heads"] and parts[2].isdigit():
                self.network.head(int(parts[2]))
        return super().load_state_dict(state, strict=strict, assign=assign)


def parameter_counts(model: MarkModel, num_tasks: int, classes: int) -> dict[str, int]:
    """Parameters of MARK after ``num_tasks`` tasks of ``classes`` classes (one KB; F^t, M^t, C^t per task; a
    shared pretrained extractor once) against one network per task (a KB-sized network and its head each)."""
    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    kb = count(model.kb)
    head = model.kb.out_features * classes + classes
    extractor = count(model.make_extractor()) if model.shared_extractor is None else 0
    masks = count(MaskGenerator(model.features, model.kb.channels)) if model.use_masks else 0
    return {"mark": kb + count(model.shared_extractor) + num_tasks * (extractor + masks + head),
            "one_network_per_task": num_tasks * (kb + head)}
