"""Encoder-Based Lifelong Learning (Rannen, Aljundi, Blaschko & Tuytelaars, ICCV 2017): LwF plus, per finished
task, an under-complete autoencoder of the features whose code the later tasks must preserve.

The autoencoder and code losses, their training, and the defaults' reasons: docs/methods.md, section ``ebll``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.data.batches import TaskView, eval_batches
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods import lwf


class Params(lwf.Params):
    code_size: int = Field(100, gt=0, description="code units k of each autoencoder (paper: 100–300)")
    alpha: float = Field(0.01, ge=0.0, description="weight α of the reconstruction MSE in the autoencoder loss")
    alpha_code: float = Field(1.0, ge=0.0, description="weight of the code-preservation loss for old tasks")
    ae_epochs: int = Field(5, gt=0, description="epochs of autoencoder training after each task")
    ae_lr: float = Field(3e-3, gt=0.0, description="Adam learning rate of the autoencoder")
    ae_batch_size: int = Field(256, gt=0, description="batch size of autoencoder training")


def _linear(d_in: int, d_out: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights initialised like nn.Linear, from generator ``g``."""
    bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform(a=√5) and the bias both reduce to U(−1/√d_in, 1/√d_in)
    weight = (torch.rand(d_out, d_in, generator=g) * 2 - 1) * bound
    bias = (torch.rand(d_out, generator=g) * 2 - 1) * bound
    return weight, bias


def encode(ae: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(F.linear(features, ae["enc_weight"], ae["enc_bias"]))


class _CodeDistance(torch.autograd.Function):
    """scale Σ_j ‖σ(W f + b)_j − c*_j‖² averaged over rows, in one autograd node: the code's gradient
    2 (c − c*) c (1 − c) / M is formed in the forward pass, the backward is one product with W."""

    @staticmethod
    def forward(ctx, features, weight, bias, target, scale):
        code = torch.sigmoid(torch.addmm(bias, features, weight.t()))
        diff = code - target
        value = torch.dot(diff.reshape(-1), diff.reshape(-1)) * (scale / features.shape[0])
        ctx.save_for_backward(diff * torch.addcmul(code, code, code, value=-1.0), weight)
        ctx.coefficient = 2.0 * scale / features.shape[0]
        return value

    @staticmethod
    def backward(ctx, grad_output):
        delta, weight = ctx.saved_tensors
        return (delta * (grad_output * ctx.coefficient)) @ weight, None, None, None, None


def decode(ae: dict[str, torch.Tensor], code: torch.Tensor) -> torch.Tensor:
    return F.linear(code, ae["dec_weight"], ae["dec_bias"])


class EBLL(lwf.LwF):
    name = "ebll"
    description = "Encoder-Based Lifelong Learning: LwF plus per-task autoencoder codes of the features (Rannen 2017)"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        width = self.model.backbone.out_features
        if self.params.code_size >= width:
            raise UserError(f"ebll.code_size ({self.params.code_size}) must be smaller than the feature width "
                            f"({width}) for an under-complete autoencoder; set e.g. --set ebll.code_size={width // 2}")
        self.autoencoders: list[dict[str, torch.Tensor]] = []  # one per finished task
        self.history: list[dict[str, Any]] = []  # autoencoder losses per epoch and training time, per task
        self.stacked: dict[str, torch.Tensor] | None = None  # all encoders as one

    def after_task(self, task: Task, train: TaskView) -> None:
        super().after_task(task, train)
        start = time.perf_counter()
        ae, losses = self.train_autoencoder(task.id, train)
        self.autoencoders.append(ae)
        self.history.append({**losses, "seconds": time.perf_counter() - start})
        self._stack()

    def train_autoencoder(self, task_id: int, train: TaskView) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
        """An autoencoder of the frozen features of ``train``; returns its weights and per-epoch mean losses."""
        p, model, device = self.params, self.model, self.device()
        model.eval()
        with torch.no_grad():
            features = torch.cat([model.features(x) for x, _ in eval_batches(train, self.train_config.eval_batch_size)])
        targets = train.targets
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        d = features.shape[1]
        enc_w, enc_b = _linear(d, p.code_size, g)
        dec_w, dec_b = _linear(p.code_size, d, g)
        ae = {k: v.to(device).requires_grad_() for k, v in
              (("enc_weight", enc_w), ("enc_bias", enc_b), ("dec_weight", dec_w), ("dec_bias", dec_b))}
        weights = list(ae.values())
        optimizer = torch.optim.Adam(weights, lr=p.ae_lr)
        losses: dict[str, list] = {"ce": [], "mse": []}
        n = features.shape[0]
        for _ in range(p.ae_epochs):
            order = torch.randperm(n, generator=g).to(device)
            ce_sum = mse_sum = torch.zeros((), device=device)
            for start in range(0, n, p.ae_batch_size):
                index = order[start : start + p.ae_batch_size]
                f = features[index]
                reconstruction = decode(ae, encode(ae, f))
                ce = F.cross_entropy(model.logits(reconstruction, task_id), targets[index])
                mse = F.mse_loss(reconstruction, f)
                # gradients for the autoencoder only: the network (and its .grad) stays untouched
                grads = torch.autograd.grad(ce + p.alpha * mse, weights)
                for w, gw in zip(weights, grads):
                    w.grad = gw
                optimizer.step()
                ce_sum = ce_sum + ce.detach() * index.numel()
                mse_sum = mse_sum + mse.detach() * index.numel()
            losses["ce"].append(float(ce_sum) / n)
            losses["mse"].append(float(mse_sum) / n)
        return {k: v.detach() for k, v in ae.items()}, losses

    def _stack(self) -> None:
        """Every encoder in one (Σ k) × d matrix, so all codes come from one matrix product."""
        self.stacked = None
        if self.autoencoders:
            self.stacked = {"enc_weight": torch.cat([a["enc_weight"] for a in self.autoencoders]),
                            "enc_bias": torch.cat([a["enc_bias"] for a in self.autoencoders])}

    def code_loss(self, features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """Σ_j ‖code_j(f) − code_j(f*)‖², averaged over the batch."""
        with torch.no_grad():
            target = encode(self.stacked, teacher_features)
        return self.code_distance(features, target)

    def code_distance(self, features: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """scale × ``code_loss`` from the teacher's codes ``target`` (all old encoders stacked), one autograd node."""
        return _CodeDistance.apply(features, self.stacked["enc_weight"], self.stacked["enc_bias"], target, scale)

    def feature_penalty(self, features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor | float:
        if self.stacked is None or self.params.alpha_code == 0:
            return 0.0
        return self.params.alpha_code * self.code_loss(features, teacher_features)

    def teacher_terms(self, teacher_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """LwF's terms plus the teacher's codes under every old encoder (cached: rows × Σ k per task)."""
        terms = super().teacher_terms(teacher_features)
        if self.stacked is not None and self.params.alpha_code != 0:
            with torch.no_grad():
                terms["code"] = encode(self.stacked, teacher_features)
        return terms

    def terms_penalty(self, features: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        if "code" not in terms:
            return 0.0
        return self.code_distance(features, terms["code"], self.params.alpha_code)

    def report(self) -> dict[str, Any]:
        return {"autoencoder": [{"final_ce": h["ce"][-1], "final_mse": h["mse"][-1], "seconds": round(h["seconds"], 3)}
                                for h in self.history]}

    # --- state ---
    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "autoencoders": self.autoencoders, "history": self.history}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.autoencoders = [dict(ae) for ae in state["autoencoders"]]
        self.history = [dict(h) for h in state["history"]]
        self._stack()
