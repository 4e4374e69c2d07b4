"""Selfless Sequential Learning (Aljundi, Rohrbach & Tuytelaars, ICLR 2019): SNI, SLNI and SLNID, an inhibition
regularizer on the hidden activations added to MAS (``mas-slni``) or EWC (``ewc-slni``).

The regularizer, how it is computed in one matrix product, the authors' demo settings and the deviation from
their code: docs/methods.md, section ``mas-slni``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import TaskView, eval_batches
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import base, ewc, mas
from lifelong.models.heads import Network

if TYPE_CHECKING:
    from lifelong.config import Config


class Params(base.Params):
    """Config section ``slni``: the activation regularizer of ``mas-slni`` and ``ewc-slni``."""

    lam: float = Field(1e-3, ge=0.0, description="λ_SLNI: the loss adds λ_SLNI Σ_layers R (authors' permuted-MNIST "
                                                  "demo: 1e-3 with MAS, 2e-3 with EWC)")
    scale: float = Field(6.0, gt=0.0, description="σ = N / scale for a layer of N neurons: width of the Gaussian "
                                                  "neighbourhood in which neurons inhibit each other (slni only)")
    decay: bool = Field(True, description="SLNID: discount each pair by exp(−(α_i + α_j)), α = the neurons' "
                                          "importance for earlier tasks; false = plain SLNI (or SNI)")
    variant: Literal["slni", "sni"] = Field("slni", description="slni: pairs weighted by exp(−(i−j)²/(2σ²)) (local "
                                                                "inhibition); sni: every pair weighted 1")


class MASSLNIParams(mas.Params):
    """``mas-slni``: section ``mas`` plus section ``slni``."""

    slni: Params = Field(default_factory=Params, description="the config section slni")


class EWCSLNIParams(ewc.Params):
    """``ewc-slni``: section ``ewc`` plus section ``slni``."""

    slni: Params = Field(default_factory=Params, description="the config section slni")


def gaussian_factor(width: int, params: Params) -> torch.Tensor:
    """F (float64, N × r) with F Fᵀ = the Gaussian matrix exp(−(i−j)²/(2σ²)) (all-ones for sni) to ~1e-8: the
    Gaussian matrix is numerically low rank (≈ 20 columns at scale 6, whatever the width)."""
    if params.variant == "sni":
        return torch.ones(width, 1, dtype=torch.float64)
    index = torch.arange(width, dtype=torch.float64)
    sigma = width / params.scale
    values, vectors = torch.linalg.eigh(torch.exp(-(index[:, None] - index[None, :]) ** 2 / (2 * sigma**2)))
    keep = values > 1e-10 * values.max()  # the rest changes no weight by more than ~1e-8
    return vectors[:, keep] * values[keep].sqrt()


def discount(width: int, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """d = exp(−α) (float64; ones without decay): the pair weights are D (F Fᵀ) D − diag(d²)."""
    return torch.ones(width, dtype=torch.float64) if alpha is None else torch.exp(-alpha.detach().double().cpu())


class _StackedInhibition(torch.autograd.Function):
    """scale Σ_l R_l over layers of one width, W_l = D_l (F Fᵀ − I) D_l: U = the H_l D_l stacked, G = U F Fᵀ − U,
    value scale ⟨U, G⟩ / M, gradient 2 scale G_l D_l / M (docs/methods.md, ``mas-slni``)."""

    @staticmethod
    def forward(ctx, factor: torch.Tensor, d: torch.Tensor | None, scale: float, *hs: torch.Tensor) -> torch.Tensor:
        u = torch.stack(hs) if d is None else torch.stack(hs) * d
        flat = u.view(-1, u.shape[-1])
        g = torch.addmm(flat, flat @ factor, factor.t(), beta=-1.0)
        ctx.save_for_backward(g, d)
        ctx.coefficient, ctx.shape = 2.0 * scale / u.shape[1], u.shape
        return torch.dot(flat.view(-1), g.view(-1)) * (scale / u.shape[1])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        g, d = ctx.saved_tensors
        coefficient = grad_output * ctx.coefficient
        grad = g.view(ctx.shape) * (coefficient if d is None else d * coefficient)
        return (None, None, None, *grad.unbind(0))


def stacked_inhibition(hs: list[torch.Tensor], factor: torch.Tensor, d: torch.Tensor | None, scale: float = 1.0
                       ) -> torch.Tensor:
    """scale Σ_l R(hs[l]) with the pair weights of α_l, for layers of one width N, from F =
    ``gaussian_factor`` (N × r) and d = the ``discount`` rows (L × 1 × N; None: no decay), in one pair of thin
    products for all layers; the dtypes of ``factor`` and ``d`` must be the activations'."""
    return _StackedInhibition.apply(factor, d, scale, *hs)


def neuron_importance(model: Network, batches: Iterable[torch.Tensor], task_id: int
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(α per hidden layer, C = HᵀH / M per hidden layer) over the input batches, in eval mode (mode restored).

    α_i = mean over samples of |∂ ‖F(x)‖² / ∂ pre-activation_i|, F = the logits of ``task_id``'s head. In eval mode
    a sample's activations reach only its own outputs, so one backward pass of Σ_n ‖F(x_n)‖² per batch gives each
    sample's own gradient; the gradient at the pre-activation is the one at the post-ReLU activation where the
    unit is on (ReLU's derivative, 0 at 0 as autograd's), 0 where it is off.
    """
    was_training = model.training
    model.eval()
    alpha: list[torch.Tensor] = []
    gram: list[torch.Tensor] = []
    count = 0
    try:
        for x in batches:
            with torch.enable_grad():
                features, activations = model.backbone.forward_with_activations(x)
                objective = model.logits(features, task_id).pow(2).sum()
                grads = torch.autograd.grad(objective, activations)
            parts = [((g * (a > 0)).abs().sum(0), a.detach().t() @ a.detach()) for g, a in zip(grads, activations)]
            alpha = [p[0] for p in parts] if not alpha else [s + p[0] for s, p in zip(alpha, parts)]
            gram = [p[1] for p in parts] if not gram else [s + p[1] for s, p in zip(gram, parts)]
            count += x.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("neuron_importance needs at least one input sample")
    return [a / count for a in alpha], [c / count for c in gram]


def overlap(gram: torch.Tensor) -> float:
    """Mean over pairs i ≠ j of C_ij / √(C_ii C_jj): how much neurons fire together (0 for silent neurons)."""
    norm = gram.diagonal().sqrt()
    cosine = gram / (norm[:, None] * norm[None, :]).clamp_min(1e-12)
    n = gram.shape[0]
    return float((cosine.sum() - cosine.diagonal().sum()) / max(1, n * (n - 1)))


class SelflessMixin:
    """SNI / SLNI / SLNID on top of a quadratic-penalty method that keeps its penalty in ``self.penalty``."""

    section: ClassVar[str | None] = "slni"
    base_section: ClassVar[str]  # the base method's config section
    Combined: ClassVar[type[base.Params]]  # the hyperparameters of both sections

    @classmethod
    def make_params(cls, cfg: Config) -> base.Params:
        """The method's hyperparameters from its two config sections (defaults where the config is silent)."""
        return cls.Combined(**cfg.params.get(cls.base_section, {}), slni=cfg.params.get("slni", {}))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not hasattr(self.model.backbone, "forward_with_activations"):
            raise UserError(f"slni needs the mlp backbone (it regularizes hidden activations); set model.name: mlp "
                            f"(got {type(self.model.backbone).__name__})")
        self.alpha: list[torch.Tensor] | None = None  # Σ over finished tasks of α, per hidden layer
        self.alpha_means: list[list[float]] = []  # per finished task: mean α_t per layer (report)
        self.overlaps: list[list[float]] = []  # per finished task: activation overlap per layer (report)
        self.weights: list[tuple] | None = None  # layer_groups, rebuilt once per task

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        features, activations = self.model.backbone.forward_with_activations(x)
        loss = F.cross_entropy(self.model.logits(features, task_ids), y)
        if self.params.slni.lam > 0 and activations:
            loss = loss + self.regularizer(activations)
        return loss

    def regularizer(self, activations: list[torch.Tensor]) -> torch.Tensor:
        """λ_SLNI Σ over hidden layers of R: one ``stacked_inhibition`` per layer width."""
        if self.weights is None or self.weights[0][1].dtype != activations[0].dtype:
            self.weights = self.layer_groups(activations)
        total = None
        for layers, factor, d in self.weights:
            value = stacked_inhibition([activations[i] for i in layers], factor, d, self.params.slni.lam)
            total = value if total is None else total + value
        return total

    def layer_groups(self, activations: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
        """(layer indices, F, stacked d or None) per layer width, in the activations' dtype and device."""
        decay = self.params.slni.decay and self.alpha is not None
        widths: dict[int, list[int]] = {}
        for i, a in enumerate(activations):
            widths.setdefault(a.shape[1], []).append(i)
        like = activations[0]
        groups = []
        for width, layers in widths.items():
            factor = gaussian_factor(width, self.params.slni).to(like)
            d = torch.stack([discount(width, self.alpha[i]) for i in layers])[:, None, :].to(like) if decay else None
            groups.append((layers, factor, d))
        return groups

    def neuron_rows(self, n: int) -> torch.Tensor:
        """Which training samples α uses (all by default)."""
        return torch.arange(n)

    def after_task(self, task: Task, train: TaskView) -> None:
        super().after_task(task, train)
        rows, size = self.neuron_rows(len(train)), self.train_config.eval_batch_size
        batches = (train.inputs(rows[s : s + size].to(train.images.device)) for s in range(0, len(rows), size))
        alpha, gram = neuron_importance(self.model, batches, task.id)
        self.alpha = alpha if self.alpha is None else [s + a for s, a in zip(self.alpha, alpha)]
        self.alpha_means.append([float(a.mean()) for a in alpha])
        self.overlaps.append([overlap(c) for c in gram])
        self.weights = None

    def diagnostics(self, train: TaskView) -> dict[str, torch.Tensor]:
        """Plus ``slni/activation_sparsity``: per hidden layer, the share of zero (post-ReLU) activations on the
        task's training data in eval mode; ``slni/alpha/<layer>``: the summed neuron importance α."""
        was_training, zeros, count = self.model.training, None, 0
        self.model.eval()
        try:
            with torch.inference_mode():
                for x, _ in eval_batches(train, self.train_config.eval_batch_size):
                    _, activations = self.model.backbone.forward_with_activations(x)
                    off = torch.stack([(a <= 0).float().mean(1).sum() for a in activations])
                    zeros, count = off if zeros is None else zeros + off, count + x.shape[0]
        finally:
            self.model.train(was_training)
        out = super().diagnostics(train)
        if zeros is not None:
            out["slni/activation_sparsity"] = zeros / count
        for layer, alpha in enumerate(self.alpha or []):
            out[f"slni/alpha/{layer}"] = alpha.detach().clone()
        return out

    def report(self) -> dict[str, Any]:
        return {**super().report(), "neuron_importance_mean": self.alpha_means, "activation_overlap": self.overlaps}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(),
                "slni": {"alpha": self.alpha, "alpha_means": self.alpha_means, "overlaps": self.overlaps}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        mine = state["slni"]
        self.alpha = None if mine["alpha"] is None else list(mine["alpha"])
        self.alpha_means, self.overlaps = [list(r) for r in mine["alpha_means"]], [list(r) for r in mine["overlaps"]]
        self.weights = None


class MASSLNI(SelflessMixin, mas.MAS):
    name = "mas-slni"
    description = "MAS plus SLNI/SLNID (Selfless Sequential Learning): sparse, locally inhibited hidden activations"
    Params = Params  # the config section slni; the full hyperparameters are MASSLNIParams (make_params)
    base_section = "mas"
    variant_of = ("mas", "slni")
    Combined = MASSLNIParams

    def neuron_rows(self, n: int) -> torch.Tensor:
        """The samples MAS's Ω uses (``mas.samples``, evenly spaced), as the authors compute α alongside Ω."""
        cap = self.params.samples
        return torch.arange(n) if cap is None or cap >= n else torch.linspace(0, n - 1, cap).round().long()


class EWCSLNI(SelflessMixin, ewc.EWC):
    name = "ewc-slni"
    description = "EWC plus SLNI/SLNID (Selfless Sequential Learning): sparse, locally inhibited hidden activations"
    Params = Params  # the config section slni; the full hyperparameters are EWCSLNIParams (make_params)
    base_section = "ewc"
    variant_of = ("ewc", "slni")
    Combined = EWCSLNIParams
