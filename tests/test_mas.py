"""MAS and MAS-alpha: importances against plain autograd loops, the α closed form, the folded penalty against the
direct sum, state round trips, kill/resume equality and real runs on the shipped quickstart data."""

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import lifelong
from conftest import make_view
from lifelong.config import TrainConfig
from lifelong.methods.importance import flatten, parameter_names, relayout, unflatten
from lifelong.methods.mas import MAS, mas_importance
from lifelong.methods.mas_alpha import MASAlpha, alpha_weights
from lifelong.models import build_backbone
from lifelong.models.heads import Network


def tiny_network(scenario="task"):
    torch.manual_seed(0)
    net = Network(build_backbone("mlp", (1, 3, 3), hidden=[5, 4]), scenario, [2, 3, 2])
    for t in range(3):
        net.start_task(t)
    return net


class ConvBackbone(nn.Module):
    """Not made of linear layers only: per-sample gradients through vmap."""

    out_features = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        return torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1)))


class TwiceBackbone(nn.Module):
    """One linear layer applied twice (shared weights): the linear closed form does not apply."""

    out_features = 9

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(9, 9)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(x.flatten(1))))


def loop_importance(net, names, x, task_id):
    """One backward pass per sample of ‖F(x)‖², |gradient|, mean: the slow, obviously correct MAS importance."""
    total = torch.zeros(sum(dict(net.named_parameters())[n].numel() for n in names))
    for i in range(x.shape[0]):
        net.zero_grad()
        net(x[i : i + 1], task_id).pow(2).sum().backward()
        params = dict(net.named_parameters())
        total += torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n]))
                            .abs().reshape(-1) for n in names])
    return total / x.shape[0]


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_importance_from_unlabeled_inputs_matches_a_per_sample_loop(scenario):
    net = tiny_network(scenario).train()  # mas_importance switches to eval mode (dropout off) and back
    names = parameter_names(net)
    x = torch.randn(11, 1, 3, 3)
    task = 1 if scenario == "task" else 2
    expected = loop_importance(net.eval(), names, x, task)
    net.train()
    fast = mas_importance(net, names, x, task, batch_size=4)  # a tensor of inputs, no labels anywhere
    assert net.training
    batched = mas_importance(net, names, [x[:3], x[3:10], x[10:]], task)  # an iterable of input batches
    assert torch.allclose(fast, expected, rtol=1e-5, atol=1e-7)
    assert torch.allclose(batched, expected, rtol=1e-5, atol=1e-7)
    assert expected.abs().sum() > 0
    if scenario == "task":  # other tasks' heads do not produce task 1's outputs
        parts = unflatten(net, names, fast)
        assert parts["heads.0.weight"].abs().sum() == 0 and parts["heads.1.weight"].abs().sum() > 0


@pytest.mark.parametrize("backbone", [ConvBackbone, TwiceBackbone])
def test_importance_of_models_beyond_plain_linear_layers(backbone):
    torch.manual_seed(0)
    net = Network(backbone(), "task", [3])
    net.start_task(0)
    names = parameter_names(net)
    x = torch.randn(6, 1, 3, 3)
    assert torch.allclose(mas_importance(net, names, x, 0), loop_importance(net.eval(), names, x, 0),
                          rtol=1e-5, atol=1e-7)


def test_per_batch_approximation_matches_its_direct_computation():
    net = tiny_network().eval()
    names = parameter_names(net)
    batches = [torch.randn(n, 1, 3, 3) for n in (4, 4, 3)]
    expected = torch.zeros(flatten(net, names).numel())
    for x in batches:  # Σ_b n_b |∂ mean_b ‖F‖² / ∂θ| / Σ_b n_b
        net.zero_grad()
        net(x, 1).pow(2).sum(1).mean().backward()
        params = dict(net.named_parameters())
        grad = torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1)
                          for n in names])
        expected += x.shape[0] * grad.abs()
    expected /= 11
    got = mas_importance(net, names, [(x, torch.zeros(len(x))) for x in batches], 1, per_batch=True)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    per_sample = mas_importance(net, names, batches, 1)
    assert (per_sample >= got - 1e-6).all()  # |mean of gradients| ≤ mean of |gradients|


def make_method(cls, **params):
    return cls(tiny_network, cls.Params(**params), TrainConfig(batch_size=4, eval_batch_size=4))


def train_a_little(method, task_id):
    """Stand-in for training: the task's head exists, the parameters move."""
    method.before_task(make_view(task_id).task)
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def run_tasks(method, count):
    views = []
    for t in range(count):
        train_a_little(method, t)
        views.append(make_view(t))
        method.after_task(views[-1].task, views[-1])
    return views


def direct_penalty(model, names, terms):
    flat = flatten(model, names)
    return sum((c * omega * (flat - anchor) ** 2).sum() for c, omega, anchor in terms)


def penalty_value_and_grad(method, fn):
    method.model.zero_grad()
    value = fn()
    value.backward()
    return value.detach(), torch.cat([p.grad.reshape(-1) for p in method.model.parameters()])


def test_mas_accumulates_importances_with_the_latest_anchor_and_penalty_matches_autograd():
    method = make_method(MAS, lam=3.0, samples=7)
    view0 = run_tasks(method, 1)[0]
    names0 = parameter_names(method.model)
    index = torch.linspace(0, 9, 7).round().long()
    omega0 = loop_importance(method.model.eval(), names0, view0.inputs(index), 0)
    assert torch.allclose(method.omega, omega0, rtol=1e-5, atol=1e-7)
    assert abs(method.penalty(method.model).item()) < 1e-6 * (1 + method.omega.sum().item())  # zero at the anchor
    train_a_little(method, 1)
    view1 = make_view(1)
    omega1 = loop_importance(method.model.eval(), names0, view1.inputs(index), 1)
    method.after_task(view1.task, view1)
    assert torch.allclose(method.omega, relayout(method.model, omega0, names0, method.names) + omega1, rtol=1e-5,
                          atol=1e-7)
    assert torch.equal(method.anchor, flatten(method.model, method.names).detach())
    assert len(method.report()["importance_sum"]) == 2
    train_a_little(method, 2)
    folded = penalty_value_and_grad(method, lambda: method.penalty(method.model))
    direct = penalty_value_and_grad(method, lambda: direct_penalty(method.model, method.names,
                                                                   [(3.0, method.omega, method.anchor)]))
    assert folded[0].item() == pytest.approx(direct[0].item(), rel=1e-5)
    assert torch.allclose(folded[1], direct[1], rtol=1e-5, atol=1e-6)
    x, y = make_view(2).inputs(slice(0, 4)), torch.tensor([0, 1, 1, 0])
    ce = torch.nn.functional.cross_entropy(method.model(x, 2), y)
    assert method.loss(x, y, 2).item() == pytest.approx(ce.item() + folded[0].item(), rel=1e-5)


def test_alpha_closed_form_equalises_alpha_times_importance_and_sums_to_lambda():
    g = torch.Generator().manual_seed(0)
    for k in range(1, 7):
        scale = 10.0 ** torch.randint(-3, 4, (k,), generator=g)
        sums = ((torch.rand(k, generator=g, dtype=torch.float64) + 0.01) * scale).tolist()
        lam = 0.5 + 3 * torch.rand((), generator=g).item()
        alphas = alpha_weights(sums, lam)
        products = [a * s for a, s in zip(alphas, sums)]
        assert sum(alphas) == pytest.approx(lam, rel=1e-12)
        assert products == pytest.approx([lam / sum(1 / s for s in sums)] * k, rel=1e-12)
    assert alpha_weights([2.0, 0.0, 6.0], 4.0) == pytest.approx([3.0, 0.0, 1.0])


def test_alpha_lambda_settings():
    P = MASAlpha.Params
    assert P().total(3) == 3.0  # default: lam_per_task = 1, Σα = N
    assert P(lam_per_task=1.5).total(4) == 6.0
    assert P(lam=2.0).total(5) == 2.0
    with pytest.raises(ValidationError, match="not both"):
        P(lam=1.0, lam_per_task=2.0)
    with pytest.raises(ValidationError):
        P(lam_per_task=-1.0)


def test_mas_alpha_folded_penalty_equals_the_direct_sum_over_tasks():
    method = make_method(MASAlpha, lam_per_task=2.0)
    run_tasks(method, 3)
    names = method.names
    sums = [o.double().sum().item() for o in method.omegas]
    assert method.sums == pytest.approx(sums)
    alphas = [2.0 * 3 / (s * sum(1 / u for u in sums)) for s in sums]
    assert method.alphas[-1] == pytest.approx(alphas, rel=1e-9)
    assert [len(a) for a in method.alphas] == [1, 2, 3] and method.lams == [2.0, 4.0, 6.0]
    assert sum(method.alphas[1]) == pytest.approx(4.0)
    assert method.report() == {"alpha": method.alphas, "lam": method.lams, "importance_sum": method.sums}
    train_a_little(method, 2)
    terms = list(zip(alphas, method.omegas, method.anchors))
    folded = penalty_value_and_grad(method, lambda: method.penalty(method.model))
    direct = penalty_value_and_grad(method, lambda: direct_penalty(method.model, names, terms))
    assert folded[0].item() == pytest.approx(direct[0].item(), rel=1e-5)
    assert torch.allclose(folded[1], direct[1], rtol=1e-5, atol=1e-6)
    # each anchor is the parameters right after its task: task 0's terms vanish at θ*_0
    with torch.no_grad():
        for name, value in unflatten(method.model, names, method.anchors[0]).items():
            dict(method.model.named_parameters())[name].copy_(value)
    only_0 = direct_penalty(method.model, names, terms[1:])
    assert method.penalty(method.model).item() == pytest.approx(only_0.item(), rel=1e-5)


@pytest.mark.parametrize("cls", [MAS, MASAlpha])
def test_state_round_trip(cls, tmp_path):
    method = make_method(cls)
    run_tasks(method, 2)
    train_a_little(method, 2)
    torch.save(method.state_dict(), tmp_path / "s.pt")
    again = make_method(cls)
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert again.penalty(again.model).item() == method.penalty(method.model).item()
    assert again.report() == method.report()
    a, b = method.extra_state(), again.extra_state()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key])
        elif key in ("omegas", "anchors"):
            assert all(torch.equal(u, v) for u, v in zip(a[key], b[key])) and len(a[key]) == len(b[key])
        else:
            assert a[key] == b[key]


def test_quickstart_mas_and_mas_alpha_forget_less_than_naive_and_report_alpha(tiny, tmp_path):
    def forgetting(results):
        R = results["acc_matrix"]
        return sum(R[i][i] - R[-1][i] for i in range(len(R) - 1)) / (len(R) - 1)

    runs = {}
    for method in ("naive", "mas", "mas-alpha"):
        run_dir, runs[method] = lifelong.run(tiny(method=method, out=str(tmp_path / method),
                                                  train={"epochs": 3, "lr": 1e-2}))
        assert json.loads((run_dir / "results.json").read_text()) == runs[method]
    assert forgetting(runs["naive"]) > 0.1
    assert forgetting(runs["mas"]) < forgetting(runs["naive"]) - 0.1
    assert forgetting(runs["mas-alpha"]) < forgetting(runs["naive"]) - 0.1
    info = runs["mas-alpha"]["method_info"]
    assert [len(a) for a in info["alpha"]] == [1, 2, 3] and info["lam"] == [1.0, 2.0, 3.0]
    for alphas, lam in zip(info["alpha"], info["lam"]):
        products = [a * s for a, s in zip(alphas, info["importance_sum"])]
        assert sum(alphas) == pytest.approx(lam) and products == pytest.approx([products[0]] * len(products))
    assert len(runs["mas"]["method_info"]["importance_sum"]) == 3
    assert all(s > 0 for s in runs["mas"]["method_info"]["importance_sum"])
