"""Fully connected backbone for flattened images, the standard MNIST-family network in continual learning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear → ReLU (→ Dropout) per hidden width; features are the last hidden layer."""

    def __init__(
        self, in_shape: tuple[int, int, int], hidden: Sequence[int] = (400, 400), dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not isinstance(hidden, Sequence) or isinstance(hidden, str) or not hidden or any(
                not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
            raise ValueError(f"hidden must be a list of one or more positive widths, e.g. [400, 400], got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [in_shape[0] * in_shape[1] * in_shape[2], *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features: int = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = self.dropout(torch.relu(layer(h)))
        return h

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features plus each hidden layer's post-ReLU, pre-dropout activation, for activation-based regularizers."""
        h = x.flatten(1)
        activations = []
        for layer in self.layers:
            a = torch.relu(layer(h))
            activations.append(a)
            h = self.dropout(a)
        return h, activations
