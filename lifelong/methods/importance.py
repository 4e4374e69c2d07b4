"""Shared math of the quadratic-penalty family: flattened parameter vectors, sums of per-sample gradient
statistics (closed forms for linear, conv and BatchNorm layers, ``torch.func`` otherwise), and one quadratic
penalty that any number of (importance, anchor) pairs fold into.

Σ_k c_k Ω_k (θ − θ*_k)² = A (θ − m)² + C with A = Σ_k c_k Ω_k, m = Σ_k c_k Ω_k θ*_k / A and the constant
C = Σ_k c_k Ω_k θ*_k² − A m²: same value, same gradient, but one vector operation per step whatever the
number of tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from lifelong.models.heads import Network

PER_SAMPLE_BYTES = 256 * 2**20  # memory budget of one chunk of per-sample gradients (vmap)
CLOSED_FORM_BYTES = 2 * 2**20  # the same for one layer in closed form (chunks that stay in the CPU's cache)
CLOSED_FORM_BATCH = 64  # samples per closed-form pass on conv nets (bigger batches: slower on CPU)
ADD_EACH_SAMPLE = 2**15  # per-sample gradients this big are summed one sample at a time (no temporaries)
CHANNELS_LAST = True  # conv nets' importance passes read their inputs channels last (faster convolutions on CPU)


def parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters, in a fixed order (the layout of flattened vectors)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def flatten(model: torch.nn.Module, names: list[str]) -> torch.Tensor:
    """The named parameters as one vector that autograd can differentiate through."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].reshape(-1) for n in names])


def unflatten(model: torch.nn.Module, names: list[str], vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector back into tensors shaped like the named parameters."""
    params = dict(model.named_parameters())
    out, start = {}, 0
    for n in names:
        size = params[n].numel()
        out[n] = vector[start : start + size].view_as(params[n])
        start += size
    return out


def importance_tensors(model: torch.nn.Module, names: list[str], vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """A flat per-parameter importance as ``importance/<parameter name>`` tensors in bfloat16 (float32's range,
    three significant digits: half the disk of the run's diagnostics files, enough for their histograms)."""
    return {f"importance/{n}": t.detach().to(torch.bfloat16) for n, t in unflatten(model, names, vector).items()}


def relayout(model: torch.nn.Module, vector: torch.Tensor, old: list[str], new: list[str]) -> torch.Tensor:
    """A flat vector laid out as ``old`` names, re-laid out as ``new`` (zeros where ``old`` lacks a name)."""
    if old == new:
        return vector
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    pieces = dict(zip(old, vector.split([sizes[n] for n in old])))
    return torch.cat([pieces[n] if n in pieces else vector.new_zeros(sizes[n]) for n in new])


def with_gradient(cache: dict, params: list[torch.Tensor], *aligned: list[torch.Tensor]) -> tuple[list, ...]:
    """The ``params`` that have a ``.grad`` (those the task loss reached), and the matching items of each list in
    ``aligned``; the selection is cached in ``cache`` per pattern of reached parameters."""
    key = tuple(p.grad is not None for p in params)
    if key not in cache:
        keep = [i for i, has_grad in enumerate(key) if has_grad]
        cache[key] = tuple([items[i] for i in keep] for items in (params, *aligned))
    return cache[key]


class QuadraticPenalty:
    """Σ_k c_k Σ_i Ω_k,i (θ_i − θ*_k,i)², folded into A (θ − m)² + C.

    The value is computed as A (θ − m)² + C; the gradient as 2 (A θ − B) with B = Σ_k c_k Ω_k θ*_k, which is
    exactly zero where a single term's parameter sits at its anchor (the folded centre m can differ from θ*
    by one rounding, and Adam would turn that tiny gradient into a full step). Both run as a few
    ``torch._foreach`` operations over the parameter tensors: no flattening copy, no Python loop per tensor.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.weight: torch.Tensor | None = None  # A, flat
        self.center: torch.Tensor | None = None  # m, flat
        self.linear: torch.Tensor | None = None  # B, flat
        self.constant: torch.Tensor | None = None  # C (set with the terms, on their device)
        self._views: tuple[list[torch.Tensor], ...] | None = None  # parameters, A, m, B per tensor
        self._reached: dict[tuple[bool, ...], tuple[list[torch.Tensor], ...]] = {}  # for ``with_gradient``

    @property
    def active(self) -> bool:
        return self.weight is not None

    def set_terms(self, names: list[str], terms: Iterable[tuple[float, torch.Tensor, torch.Tensor]]) -> None:
        """Replace the penalty by Σ c Ω (θ − θ*)² over (c, Ω, θ*) triples of flat vectors laid out as ``names``."""
        weight = linear = squares = None
        for c, omega, anchor in terms:
            w = c * omega
            weight = w if weight is None else weight + w
            linear = w * anchor if linear is None else linear + w * anchor
            squares = (w * anchor * anchor).sum() if squares is None else squares + (w * anchor * anchor).sum()
        self.__init__()
        if weight is None:
            return
        self.names, self.weight, self.linear = list(names), weight, linear
        nonzero = weight != 0  # A may be negative (SI's Ω can be): m = B / A wherever A is not 0
        self.center = torch.where(nonzero, linear / torch.where(nonzero, weight, 1.0), 0.0)
        self.constant = squares - (weight * self.center * self.center).sum()

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        """The penalty's value at the model's current parameters (differentiable)."""
        tensors, *views = self._views_for(model)
        return _QuadraticFunction.apply(views, self.constant, *tensors)

    def add_gradient_(self, model: torch.nn.Module, keep_original: bool = False) -> None:
        """Add the penalty's gradient 2 (A θ − B) to the ``.grad`` of the parameters the task loss reached.

        Parameters without a ``.grad`` (another task's head) are left without one, so the optimizer skips them
        as under plain fine-tuning: no weight decay and no stale Adam step moves them. They have not moved since
        the anchors were set, so the gradient they would get is zero anyway whenever one term covers them.
        ``keep_original``: write the sums into new ``.grad`` tensors and leave the old ones untouched, so a caller
        holding them keeps the task loss's gradient without copying it (SI's path integral needs it).
        """
        params, weights, _, linears = self._views_for(model)
        params, weights, linears = with_gradient(self._reached, params, weights, linears)
        if not params:
            return
        grads = [p.grad for p in params]
        with torch.no_grad():
            if keep_original:
                grads = torch._foreach_addcmul(grads, weights, params, value=2.0)
                for p, g in zip(params, grads):
                    p.grad = g
            else:
                torch._foreach_addcmul_(grads, weights, params, value=2.0)
            torch._foreach_add_(grads, linears, alpha=-2.0)

    def _views_for(self, model: torch.nn.Module) -> tuple[list[torch.Tensor], ...]:
        """The parameters in ``names`` order, and A, m and B as tensors shaped like them (views of the flat vectors)."""
        if self._views is None:
            params = dict(model.named_parameters())
            self._views = ([params[n] for n in self.names],
                           *(list(unflatten(model, self.names, v).values())
                             for v in (self.weight, self.center, self.linear)))
        return self._views

    def importance(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A = Σ_k c_k Ω_k per parameter (what the penalty protects), for the run's diagnostics files."""
        return {} if self.weight is None else importance_tensors(model, self.names, self.weight)

    def state_dict(self) -> dict:
        return {"names": self.names, "weight": self.weight, "center": self.center, "linear": self.linear,
                "constant": self.constant}

    def load_state_dict(self, state: dict) -> None:
        self.__init__()
        self.names, self.weight, self.center = list(state["names"]), state["weight"], state["center"]
        self.linear, self.constant = state["linear"], state["constant"]


class _QuadraticFunction(torch.autograd.Function):
    """Value A (θ − m)² + C and gradient 2 (A θ − B), per parameter tensor with foreach operations."""

    @staticmethod
    def forward(ctx, views, constant, *params):
        weights, centers, linears = views
        ctx.save_for_backward(*params)
        ctx.views = (weights, linears)
        diffs = torch._foreach_sub(params, centers)
        torch._foreach_mul_(diffs, diffs)
        torch._foreach_mul_(diffs, weights)
        return torch.stack([d.sum() for d in diffs]).sum() + constant

    @staticmethod
    def backward(ctx, grad_output):
        weights, linears = ctx.views
        grads = torch._foreach_mul(ctx.saved_tensors, weights)
        torch._foreach_sub_(grads, linears)
        torch._foreach_mul_(grads, 2.0 * grad_output)
        return (None, None, *grads)


def summed_per_sample(
    model: Network,
    names: list[str],
    inputs: torch.Tensor,
    task_id: int,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    transform: Callable[[torch.Tensor], torch.Tensor],
    extra: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Σ_n transform(∂ objective(logits_n, extra_n) / ∂θ), flattened in ``names`` order.

    Per-sample gradients, never one backward pass per sample: in closed form when every parameter belongs to
    an ``nn.Linear``, ``nn.Conv2d`` or eval-mode BatchNorm and ``transform`` is ``torch.square`` or
    ``torch.abs`` (see ``_closed_form``; ``_closed_form_batch`` samples per pass), else one vmapped ``torch.func.grad``
    per chunk (chunks sized so their gradients stay within PER_SAMPLE_BYTES). The model is evaluated as it is:
    call ``model.eval()`` first. ``extra`` may be a function of a batch's (detached) logits, e.g. labels drawn
    from the model: the closed form calls it on its own forward pass, so it costs no second one.
    """
    if callable(extra):
        extra_of = extra
    else:
        fixed = torch.zeros(inputs.shape[0], device=inputs.device) if extra is None else extra
        extra_of = None
    if transform in (torch.square, torch.abs):
        total, size = None, _closed_form_batch(model, inputs.shape[0])
        for start in range(0, inputs.shape[0], size):
            part = _closed_form(model, names, inputs[start : start + size], task_id, objective,
                                transform, fixed[start : start + size] if extra_of is None else extra_of)
            if part is None:  # the first batch already says so: nothing is computed twice
                break
            total = part if total is None else total + part
        else:
            if total is not None:
                return total
    if extra_of is not None:
        with torch.no_grad():
            fixed = torch.cat([extra_of(model(inputs[start : start + CLOSED_FORM_BATCH], task_id))
                               for start in range(0, inputs.shape[0], CLOSED_FORM_BATCH)])
    return _vmapped(model, names, inputs, task_id, objective, transform, fixed)


def _closed_form_batch(model: torch.nn.Module, samples: int) -> int:
    """Samples per closed-form pass: CLOSED_FORM_BATCH for conv nets (their activations outgrow the CPU caches),
    the caller's whole batch otherwise (a linear layer's sum is one matrix product, faster on more rows)."""
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return CLOSED_FORM_BATCH
    return max(1, samples)


def _vmapped(model, names, inputs, task_id, objective, transform, extra) -> torch.Tensor:
    """The reference path: one vmapped ``torch.func.grad`` per chunk of samples, for any layer."""
    wanted = set(names)
    params = {n: p.detach() for n, p in model.named_parameters() if n in wanted}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in wanted}
    buffers = dict(model.named_buffers())

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, frozen, buffers), (x.unsqueeze(0), task_id))
        return objective(logits[0], e)

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    width = sum(params[n].numel() for n in names)
    chunk = max(1, PER_SAMPLE_BYTES // (4 * width))
    total = torch.zeros(width, device=inputs.device)
    for start in range(0, inputs.shape[0], chunk):
        g = per_sample(params, inputs[start : start + chunk], extra[start : start + chunk])
        total += torch.cat([transform(g[n]).reshape(g[n].shape[0], -1).sum(0) for n in names])
    return total


def _linear_closed_form(model, names, inputs, task_id, objective, transform, extra) -> torch.Tensor | None:
    """``_closed_form`` restricted to ``nn.Linear`` parameters (None as soon as another kind is asked for)."""
    return _closed_form(model, names, inputs, task_id, objective, transform, extra, (torch.nn.Linear,))


_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def _has_formula(module: torch.nn.Module, kinds: tuple[type, ...]) -> bool:
    """Whether ``module``'s per-sample gradients have a closed form here: linear, zero-padded 2-d convolution,
    BatchNorm normalising with its running statistics."""
    if type(module) not in kinds:
        return False
    if type(module) is torch.nn.Conv2d:
        return module.padding_mode == "zeros" and module.padding != "same"
    if type(module) in _NORMS:
        return not module.training and module.running_mean is not None
    return True


def _closed_form(model, names, inputs, task_id, objective, transform, extra,
                 kinds: tuple[type, ...] = (torch.nn.Linear, torch.nn.Conv2d, *_NORMS)) -> torch.Tensor | None:
    """The per-sample sum from one forward and one backward pass over the batch, without vmap.

    Each layer's per-sample gradient is a product of its input a_n and its output gradient δ_n (see
    ``_summed_conv`` and ``_per_sample_gradients``); square and absolute value are applied to it and summed over
    samples, in chunks of samples within CLOSED_FORM_BYTES. BatchNorms run as their affine maps during the forward
    pass (``_norms_as_affine``: a cheaper backward). A linear layer on (B, d) inputs needs no per-sample tensor:
    Σ_n f(δ_n a_nᵀ) = f(Δ)ᵀ f(A) for the multiplicative f = square or |·|. ``extra``: a per-sample tensor, or
    a function of the batch's detached logits that gives it (called once, after the checks). Returns None (use
    vmap) when a parameter belongs to another kind of layer, a layer is called twice or its tensors are changed
    in place, or a BatchNorm normalises with batch statistics (samples would interact).
    """
    if any(type(m) in _NORMS and (m.training or m.running_mean is None) for m in model.modules()):
        return None
    owners: dict[str, tuple[torch.nn.Module, str]] = {}
    for prefix, module in model.named_modules():
        if _has_formula(module, kinds):
            for kind, _ in module.named_parameters(recurse=False):
                owners[f"{prefix}.{kind}" if prefix else kind] = (module, kind)
    if any(n not in owners for n in names):
        return None
    modules = list(dict.fromkeys(owners[n][0] for n in names))
    calls: dict[torch.nn.Module, list] = {m: [] for m in modules}

    def record(m, args, out):
        calls[m].append((args[0], out, args[0]._version, out._version))

    hooks = [m.register_forward_hook(record) for m in modules]
    if CHANNELS_LAST and inputs.dim() == 4 and any(type(m) is torch.nn.Conv2d for m in modules):
        inputs = _channels_last(inputs)
    try:
        with torch.enable_grad(), _norms_as_affine(model):
            logits = model(inputs, task_id)
    finally:
        for h in hooks:
            h.remove()
    if not all(_single_batched_call(m, c, inputs.shape[0]) for m, c in calls.items()):
        return None
    if callable(extra):
        extra = extra(logits.detach())
    used = [m for m in modules if calls[m] and calls[m][0][1].requires_grad]  # e.g. other tasks' heads are unused
    per_sample_objective = vmap(objective)(logits, extra).sum()  # samples do not interact in eval mode
    deltas = torch.autograd.grad(per_sample_objective, [calls[m][0][1] for m in used], allow_unused=True)
    pieces = {}
    for m, delta in zip(used, deltas):
        if delta is not None:
            pieces[m] = _summed_layer(m, calls[m][0][0].detach(), delta, transform)
    params = dict(model.named_parameters())
    return torch.cat([
        (pieces[owners[n][0]][owners[n][1]] if owners[n][0] in pieces else torch.zeros_like(params[n])).reshape(-1)
        for n in names
    ]).detach()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) in channels-last layout. One channel: a view with channel stride 1 (the memory is the same,
    but PyTorch reads the usual strides as channel-major, and so would every layer after it)."""
    if x.shape[1] == 1:
        x = x.contiguous()
        return x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
    return x.contiguous(memory_format=torch.channels_last)


def _single_batched_call(module, calls: list, batch: int) -> bool:
    """Whether ``module`` ran at most once, on the whole batch (samples first), and nothing later changed its
    input or output in place (the recorded output would then no longer be the layer's)."""
    if not calls:
        return True
    a, out, a_version, out_version = calls[0]
    dims_ok = a.dim() == 4 if type(module) is torch.nn.Conv2d else a.dim() >= 2
    return (len(calls) == 1 and dims_ok and a.shape[0] == batch and a._version == a_version
            and out._version == out_version)


def _summed_layer(module, a, delta, transform) -> dict[str, torch.Tensor]:
    """Σ_n transform(per-sample gradient) of one layer's parameters, by name, from its input and output gradient."""
    if type(module) is torch.nn.Linear and a.dim() == 2:
        d = transform(delta)
        return {"weight": d.t() @ transform(a), "bias": d.sum(0)}
    if type(module) is torch.nn.Conv2d:
        return _summed_conv(module, a, delta, transform)
    width = sum(p.numel() for p in module.parameters(recurse=False)) + a[0].numel()
    chunk = max(1, CLOSED_FORM_BYTES // (4 * width))
    total: dict[str, torch.Tensor] = {}
    for start in range(0, a.shape[0], chunk):
        grads = _per_sample_gradients(module, a[start : start + chunk], delta[start : start + chunk])
        for kind, g in grads.items():
            total[kind] = _accumulate(total.get(kind), g, transform)
    return total


def _summed_conv(conv, a, delta, transform) -> dict[str, torch.Tensor]:
    """``_summed_layer`` of a conv: each sample's input windows against its output gradient, a chunk of samples
    (within CLOSED_FORM_BYTES) at a time, in buffers that every chunk reuses (fresh big tensors cost page faults)."""
    n, (out_channels, in_per_group, kh, kw), groups = a.shape[0], conv.weight.shape, conv.groups
    ph, pw = (0, 0) if conv.padding == "valid" else conv.padding
    shape = _window_view(conv, _padded(conv, a[:1])).shape[1:]  # (groups, rows, columns, kh, kw, C_in/groups)
    positions, size = shape[1] * shape[2], kh * kw * in_per_group
    d = delta.permute(0, 2, 3, 1).reshape(n, positions, groups, -1).permute(0, 2, 3, 1)  # a view if channels last
    per_sample = a[0].numel() + size * (out_channels + groups * positions)  # input, windows, gradient
    chunk = min(n, max(1, CLOSED_FORM_BYTES // (4 * per_sample)))
    cols, grads, total = a.new_empty(chunk, groups, positions, size), a.new_empty(chunk, *d.shape[1:3], size), None
    padded = _padded(conv, torch.zeros_like(a[:chunk]))  # its borders stay zero, chunk after chunk
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        if ph or pw:
            padded[:m, :, ph : padded.shape[2] - ph, pw : padded.shape[3] - pw].copy_(a[start : start + m])
        cols[:m].view(m, *shape).copy_(_window_view(conv, padded[:m] if ph or pw else a[start : start + m]))
        torch.matmul(d[start : start + m], cols[:m], out=grads[:m])
        total = _accumulate(total, grads[:m], transform)
    weight = total.view(out_channels, kh, kw, in_per_group).permute(0, 3, 1, 2)  # the weight's layout
    if conv.bias is None:
        return {"weight": weight}
    return {"weight": weight, "bias": _accumulate(None, delta.sum((2, 3)), transform)}


def _accumulate(total: torch.Tensor | None, g: torch.Tensor, transform) -> torch.Tensor:
    """``total`` (None: zeros) plus Σ_n transform(g_n), in place; ``g`` (samples first) is overwritten. Big
    samples are added one at a time (square: one fused multiply-add, no temporary), small ones in one sum."""
    total = torch.zeros_like(g[0]) if total is None else total
    square = transform is torch.square
    if g[0].numel() < ADD_EACH_SAMPLE:
        return total.add_(_sum_over_samples(g.square_() if square else g.abs_()))
    for sample in g:
        if square:
            total.addcmul_(sample, sample)
        else:
            total.add_(sample.abs_())
    return total


def _sum_over_samples(g: torch.Tensor) -> torch.Tensor:
    """``g.sum(0)``, read in ``g``'s memory order: a permuted view summed as it stands is several times slower."""
    order = sorted(range(1, g.dim()), key=lambda i: -g.stride(i))
    return g.permute(0, *order).sum(0).permute(*sorted(range(g.dim() - 1), key=lambda i: order[i]))


@contextmanager
def _norms_as_affine(model: torch.nn.Module):
    """Within it, each eval-mode BatchNorm of ``model`` computes y = s x + t (s = γ / √(var + ε), t = β − s μ,
    detached): BatchNorm's own output up to rounding, and its input gradient one multiply, several times
    faster than BatchNorm's backward on channels-last inputs. Its γ and β get no autograd gradient (the closed
    form computes theirs from its input and output gradient)."""
    norms = [m for m in model.modules() if type(m) in _NORMS and not m.training and m.running_mean is not None
             and "forward" not in vars(m)]
    for m in norms:
        with torch.no_grad():
            scale = torch.rsqrt(m.running_var + m.eps) * (1.0 if m.weight is None else m.weight)
            shift = -scale * m.running_mean + (0.0 if m.bias is None else m.bias)
        m.forward = partial(_affine, scale, shift)
    try:
        yield
    finally:
        for m in norms:
            del m.forward


def _affine(scale: torch.Tensor, shift: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x · scale + shift, per channel (dim 1), in one pass."""
    shape = (1, -1, *[1] * (x.dim() - 2))
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


def _per_sample_gradients(module, a, delta) -> dict[str, torch.Tensor]:
    """Each sample's gradient of ``module``'s weight and bias (leading dim = samples), given its input ``a`` and
    the gradient ``delta`` of the objective at its output."""
    n = a.shape[0]
    if type(module) is torch.nn.Linear:  # positions (any dims between samples and features) are summed
        a, delta = a.reshape(n, -1, a.shape[-1]), delta.reshape(n, -1, delta.shape[-1])
        return {"weight": torch.einsum("nto,nti->noi", delta, a), "bias": delta.sum(1)}
    # BatchNorm with running statistics: y = γ x̂ + β with x̂ = (x − μ) / σ per channel
    spatial, channels = tuple(range(2, a.dim())), (1, -1, *[1] * (a.dim() - 2))
    centred = (a - module.running_mean.view(channels)).mul_(delta)
    centred = centred.sum(spatial) if spatial else centred
    return {"weight": centred * torch.rsqrt(module.running_var + module.eps),
            "bias": delta.sum(spatial) if spatial else delta.clone()}


def _padded(conv: torch.nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """``a`` with ``conv``'s zero padding (``a`` itself when it has none)."""
    ph, pw = (0, 0) if conv.padding == "valid" else conv.padding
    return F.pad(a, (pw, pw, ph, ph)) if ph or pw else a


def _window_view(conv: torch.nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """The windows each output position of ``conv`` reads in its zero-padded input ``a`` (kernel, stride, dilation,
    groups), as a strided view: (n, groups, rows, columns, kh, kw, C_in/groups), each window ordered (kernel row,
    kernel column, channel); in a channels-last input a window row is one contiguous run."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    n, c, h, w = a.shape
    groups = conv.groups
    rows, columns = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s_n, s_c, s_h, s_w = a.stride()
    return a.as_strided((n, groups, rows, columns, kh, kw, c // groups),
                        (s_n, s_c * (c // groups), s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))
