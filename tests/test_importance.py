"""The shared penalty math against direct computations: a hand-written loop and plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from lifelong.methods.importance import (QuadraticPenalty, flatten, parameter_names, summed_per_sample,
                                         unflatten)
from lifelong.models import build_backbone
from lifelong.models.heads import Network


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = Network(build_backbone("mlp", (1, 3, 3), hidden=[4]), "task", [2, 3])
    n.start_task(0)
    n.start_task(1)
    return n.eval()


def loop_reference(net, names, x, task_id, loss_of, transform):
    """One backward pass per sample: the slow, obviously correct computation."""
    total = None
    for i in range(x.shape[0]):
        net.zero_grad()
        loss_of(net(x[i : i + 1], task_id), i).backward()
        params = dict(net.named_parameters())
        g = torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1)
                       for n in names])
        total = transform(g) if total is None else total + transform(g)
    return total


def test_per_sample_squared_gradients_match_a_loop(net):
    names = parameter_names(net)
    x, y = torch.randn(7, 1, 3, 3), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    fast = summed_per_sample(net, names, x, 1, lambda z, e: F.cross_entropy(z[None], e[None]), torch.square, y)
    slow = loop_reference(net, names, x, 1, lambda out, i: F.cross_entropy(out, y[i : i + 1]), torch.square)
    assert torch.allclose(fast, slow, atol=1e-6)


def test_per_sample_absolute_output_norm_gradients_match_a_loop(net):
    names = parameter_names(net)
    x = torch.randn(5, 1, 3, 3)
    fast = summed_per_sample(net, names, x, 0, lambda z, e: z.pow(2).sum(), torch.abs)
    slow = loop_reference(net, names, x, 0, lambda out, i: out.pow(2).sum(), torch.abs)
    assert torch.allclose(fast, slow, atol=1e-6)
    # the other task's head is not used by task 0's outputs: zero importance there
    sizes = {n: p.numel() for n, p in net.named_parameters()}
    head1 = unflatten(net, names, fast)["heads.1.weight"]
    assert head1.abs().sum() == 0 and sizes["heads.1.weight"] == head1.numel()


def test_chunking_does_not_change_the_result(net, monkeypatch):
    names = parameter_names(net)
    x = torch.randn(9, 1, 3, 3)
    whole = _vmapped_only(net, names, x, 0, lambda z, e: z.pow(2).sum(), torch.abs)
    monkeypatch.setattr("lifelong.methods.importance.PER_SAMPLE_BYTES", 4 * 70 * 2)  # two samples per chunk
    chunked = _vmapped_only(net, names, x, 0, lambda z, e: z.pow(2).sum(), torch.abs)
    assert torch.allclose(whole, chunked, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 0.7])  # 0.7: many importances negative (SI's Ω may be), A < 0 in places
def test_folded_penalty_equals_the_sum_of_terms_in_value_and_gradient(net, shift):
    names = parameter_names(net)
    theta = flatten(net, names).detach()
    g = torch.Generator().manual_seed(1)
    terms = [(c, torch.rand(theta.shape, generator=g) - shift, theta + torch.randn(theta.shape, generator=g))
             for c in (2.0, 0.5, 1.0)]
    penalty = QuadraticPenalty()
    penalty.set_terms(names, terms)
    value = penalty(net)
    value.backward()
    folded_grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    net.zero_grad()
    flat = flatten(net, names)
    direct = sum((c * omega * (flat - anchor) ** 2).sum() for c, omega, anchor in terms)
    direct.backward()
    direct_grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert value.item() == pytest.approx(direct.item(), rel=1e-5)
    assert torch.allclose(folded_grad, direct_grad, rtol=1e-5, atol=1e-6)


def test_penalty_is_zero_at_its_anchor_and_off_without_terms(net):
    names = parameter_names(net)
    theta = flatten(net, names).detach().clone()
    penalty = QuadraticPenalty()
    assert not penalty.active
    penalty.set_terms(names, [(1.0, torch.rand_like(theta), theta)])
    assert abs(penalty(net).item()) < 1e-6
    state = penalty.state_dict()
    again = QuadraticPenalty()
    again.load_state_dict(state)
    assert again(net).item() == penalty(net).item()


def _vmapped_only(net, names, x, task_id, objective, transform, extra=None):
    from lifelong.methods.importance import _vmapped

    extra = torch.zeros(x.shape[0]) if extra is None else extra
    return _vmapped(net, names, x, task_id, objective, transform, extra)


@pytest.mark.parametrize("transform", [torch.square, torch.abs])
def test_closed_form_for_linear_layers_equals_vmap(net, transform):
    from lifelong.methods.importance import _linear_closed_form

    names = parameter_names(net)
    x, y = torch.randn(6, 1, 3, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    objective = lambda z, e: F.cross_entropy(z[None], e[None])  # noqa: E731
    closed = _linear_closed_form(net, names, x, 1, objective, transform, y)
    assert closed is not None  # the MLP and its heads qualify, although head 0 is not used by task 1
    assert torch.allclose(closed, _vmapped_only(net, names, x, 1, objective, transform, y), atol=1e-6)


def test_conv_models_use_vmap_and_match_a_loop():
    from lifelong.methods.importance import _linear_closed_form

    torch.manual_seed(0)
    conv = Network(build_backbone("resnet18-reduced", (1, 8, 8), nf=2), "task", [2]).eval()
    conv.start_task(0)
    names = parameter_names(conv)
    x = torch.randn(3, 1, 8, 8)
    objective = lambda z, e: z.pow(2).sum()  # noqa: E731
    assert _linear_closed_form(conv, names, x, 0, objective, torch.abs, torch.zeros(3)) is None
    fast = summed_per_sample(conv, names, x, 0, objective, torch.abs)
    slow = loop_reference(conv, names, x, 0, lambda out, i: out.pow(2).sum(), torch.abs)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_gradient_is_exactly_zero_at_a_single_anchor(net):
    """A rounding-level gradient at the anchor would make Adam move parameters that should stay put."""
    names = parameter_names(net)
    theta = flatten(net, names).detach().clone()
    penalty = QuadraticPenalty()
    penalty.set_terms(names, [(3.7, torch.rand_like(theta) * 1e3, theta)])
    penalty(net).backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())


def test_add_gradient_equals_backpropagating_the_penalty(net):
    names = parameter_names(net)
    theta = flatten(net, names).detach()
    g = torch.Generator().manual_seed(3)
    terms = [(c, torch.rand(theta.shape, generator=g), theta + torch.randn(theta.shape, generator=g))
             for c in (2.0, 0.5)]
    penalty = QuadraticPenalty()
    penalty.set_terms(names, terms)
    penalty(net).backward()
    by_autograd = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():  # as if the task loss had reached every parameter with a zero gradient
        p.grad = torch.zeros_like(p)
    penalty.add_gradient_(net)
    assert all(torch.allclose(p.grad, a, rtol=1e-5, atol=1e-6) for p, a in zip(net.parameters(), by_autograd))
    single = QuadraticPenalty()
    single.set_terms(names, [(3.0, torch.rand_like(theta), theta)])
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    single.add_gradient_(net)
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())  # exactly zero at the anchor


def test_add_gradient_leaves_parameters_the_task_loss_did_not_reach_alone(net):
    """Another task's head has no .grad: it keeps none, so the optimizer skips it as under plain fine-tuning."""
    names = parameter_names(net)
    theta = flatten(net, names).detach()
    penalty = QuadraticPenalty()
    penalty.set_terms(names, [(1.0, torch.ones_like(theta), theta + 1.0)])  # pulls every parameter
    params = list(net.parameters())
    for p in params[:-1]:
        p.grad = torch.zeros_like(p)
    params[-1].grad = None
    penalty.add_gradient_(net)
    assert params[-1].grad is None
    assert all(torch.allclose(p.grad, torch.full_like(p, -2.0)) for p in params[:-1])  # 2 (θ − (θ + 1))
    for p in params:
        p.grad = None
    penalty.add_gradient_(net)  # nothing reached: nothing to do
    assert all(p.grad is None for p in params)


