"""SLNI / SLNID (mas-slni, ewc-slni): the regularizer against a double loop over i ≠ j and autograd of the direct
formula, neuron importance against a per-sample loop, the two-section config and `--method mas --set slni.*`,
state round trip, kill/resume equality, a shared-head quickstart run and the shipped pMNIST experiment file."""

import math
from pathlib import Path

import pytest
import torch

import lifelong
from conftest import make_view
import lifelong.methods
from lifelong import compare, loop, store
from lifelong.cli import main
from lifelong.learner import Learner
from lifelong.config import TrainConfig, build_config, read_yaml
from lifelong.errors import UserError
from lifelong.methods.slni import (EWCSLNI, MASSLNI, Params, discount, gaussian_factor, neuron_importance, overlap,
                                   stacked_inhibition)
from lifelong.models import build_backbone
from lifelong.models.heads import Network

ROOT = Path(__file__).resolve().parents[1]


def pair_weights(width, params, alpha=None):
    """The dense (N×N) weights of |C_ij|: Gaussian in i − j (1 for sni), × exp(−(α_i + α_j)), zero diagonal."""
    index = torch.arange(width, dtype=torch.float64)
    if params.variant == "sni":
        weights = torch.ones(width, width, dtype=torch.float64)
    else:
        weights = torch.exp(-(index[:, None] - index[None, :]) ** 2 / (2 * (width / params.scale) ** 2))
    if alpha is not None:
        d = torch.exp(-alpha.detach().double())
        weights = weights * d[:, None] * d[None, :]
    return weights.fill_diagonal_(0.0).float()


def inhibition(h, weights):
    """The dense reference: Σ_m h_mᵀ W h_m / M = Σ_{i≠j} W_ij C_ij for post-ReLU h (autograd for the gradient)."""
    return ((h @ weights.to(h.dtype)) * h).sum() / h.shape[0]


def loop_regularizer(h, variant="slni", scale=6.0, alpha=None):
    """Σ_{i≠j} |C_ij| · w_ij with C_ij = (1/M) Σ_m h_mi h_mj, written out element by element."""
    m, n = h.shape
    sigma = n / scale
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            c = sum(float(h[k, i]) * float(h[k, j]) for k in range(m)) / m
            w = 1.0 if variant == "sni" else math.exp(-((i - j) ** 2) / (2 * sigma**2))
            if alpha is not None:
                w *= math.exp(-(float(alpha[i]) + float(alpha[j])))
            total += abs(c) * w
    return total


@pytest.mark.parametrize("variant, scale, decay", [("sni", 6.0, False), ("slni", 6.0, False), ("slni", 2.5, False),
                                                   ("slni", 6.0, True), ("sni", 6.0, True)])
def test_regularizer_matches_a_double_loop_over_pairs(variant, scale, decay):
    g = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(5, 7, generator=g, dtype=torch.float64))  # post-ReLU activations, M=5, N=7
    alpha = torch.rand(7, generator=g, dtype=torch.float64) * 2 if decay else None
    weights = pair_weights(7, Params(variant=variant, scale=scale), alpha).double()
    assert torch.equal(weights, weights.t()) and weights.diagonal().abs().sum() == 0
    value = inhibition(h, weights)
    assert value.item() == pytest.approx(loop_regularizer(h, variant, scale, alpha), rel=1e-6)


def test_gradient_matches_autograd_of_the_direct_formula():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)  # pre-activations
    alpha = torch.rand(9, generator=g, dtype=torch.float64)
    weights = pair_weights(9, Params(scale=3.0), alpha).double()
    (fast,) = torch.autograd.grad(inhibition(torch.relu(z), weights), z)
    h = torch.relu(z)
    c = h.t() @ h / h.shape[0]
    off = ~torch.eye(9, dtype=torch.bool)
    (direct,) = torch.autograd.grad((c.abs() * weights)[off].sum(), z)
    assert torch.allclose(fast, direct, rtol=1e-10, atol=1e-12) and direct.abs().sum() > 0


@pytest.mark.parametrize("variant, scale, decay, width, layers", [("slni", 6.0, False, 400, 2), ("slni", 6.0, True, 400, 2),
                                                                  ("sni", 6.0, True, 400, 1), ("slni", 2.5, True, 64, 3),
                                                                  ("slni", 6.0, True, 7, 2)])
def test_stacked_form_gives_each_layers_dense_value_and_gradient(variant, scale, decay, width, layers):
    g = torch.Generator().manual_seed(3)
    hs = [torch.relu(torch.randn(128, width, generator=g)) for _ in range(layers)]  # float32, as in training
    alphas = [torch.rand(width, generator=g) * 2 if decay else None for _ in range(layers)]
    params = Params(variant=variant, scale=scale)
    d = torch.stack([discount(width, a) for a in alphas])[:, None, :].float() if decay else None
    thin_hs = [h.clone().requires_grad_() for h in hs]
    thin = stacked_inhibition(thin_hs, gaussian_factor(width, params).float(), d, 0.7)
    thin.backward()
    dense_hs = [h.clone().requires_grad_() for h in hs]
    dense = 0.7 * sum(inhibition(h, pair_weights(width, params, a)) for h, a in zip(dense_hs, alphas))
    dense.backward()
    assert thin.item() == pytest.approx(dense.item(), rel=1e-5)
    for mine, reference in zip(thin_hs, dense_hs):
        assert torch.allclose(mine.grad, reference.grad, rtol=1e-4, atol=1e-6 * reference.grad.abs().max().item())


def test_stacked_gradient_passes_gradcheck():
    g = torch.Generator().manual_seed(4)
    hs = [(torch.rand(4, 9, generator=g, dtype=torch.float64) + 0.1).requires_grad_() for _ in range(2)]
    factor = gaussian_factor(9, Params(scale=3.0))
    d = torch.stack([discount(9, torch.rand(9, generator=g, dtype=torch.float64)) for _ in range(2)])[:, None, :]
    assert torch.autograd.gradcheck(lambda a, b: stacked_inhibition([a, b], factor, d, 0.5), tuple(hs))


def tiny_network(scenario="task", dropout=0.0):
    torch.manual_seed(0)
    net = Network(build_backbone("mlp", (1, 3, 3), hidden=[5, 4], dropout=dropout), scenario, [2, 3, 2])
    for t in range(3):
        net.start_task(t)
    return net


def loop_neuron_importance(net, x, task_id):
    """Per sample: pre-activations kept by a hand-written forward, |∂ ‖F‖² / ∂ z| by autograd, then the mean."""
    net.eval()
    totals = [torch.zeros(layer.out_features) for layer in net.backbone.layers]
    for n in range(x.shape[0]):
        h, pre = x[n : n + 1].flatten(1), []
        for layer in net.backbone.layers:
            pre.append(layer(h))
            h = torch.relu(pre[-1])
        objective = net.logits(h, task_id).pow(2).sum()
        for total, grad in zip(totals, torch.autograd.grad(objective, pre)):
            total += grad[0].abs()
    return [t / x.shape[0] for t in totals]


@pytest.mark.parametrize("scenario, task_id", [("task", 1), ("domain", 0)])
def test_neuron_importance_matches_a_per_sample_loop(scenario, task_id):
    net = tiny_network(scenario, dropout=0.5).train()  # evaluated in eval mode (no dropout), mode restored
    x = torch.randn(11, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    alpha, gram = neuron_importance(net, [x[:4], x[4:9], x[9:]], task_id)
    assert net.training
    expected = loop_neuron_importance(net, x, task_id)
    assert [a.shape for a in alpha] == [torch.Size([5]), torch.Size([4])]
    for a, e in zip(alpha, expected):
        assert torch.allclose(a, e, rtol=1e-5, atol=1e-7)
    assert sum(float(a.sum()) for a in alpha) > 0
    with torch.no_grad():
        _, activations = net.eval().backbone.forward_with_activations(x)
    for c, h in zip(gram, activations):
        assert torch.allclose(c, h.t() @ h / 11, rtol=1e-5, atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(activations[0].t()[:, None], activations[0].t()[None], dim=2)
    silent = activations[0].abs().sum(0) == 0
    cosine[silent] = 0
    cosine[:, silent] = 0
    assert overlap(gram[0]) == pytest.approx(float(cosine[~torch.eye(5, dtype=torch.bool)].mean()), abs=1e-5)


def make_method(cls, slni=None, **base):
    return cls(tiny_network, cls.Combined(**base, slni=Params(**(slni or {}))), TrainConfig(eval_batch_size=4))


def run_tasks(method, count, first=0):
    for t in range(first, first + count):
        view = make_view(t)
        method.before_task(view.task)
        with torch.no_grad():
            for p in method.model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        method.after_task(view.task, view)


@pytest.mark.parametrize("cls, decay", [(MASSLNI, True), (MASSLNI, False), (EWCSLNI, True)])
def test_loss_is_ce_plus_penalty_plus_discounted_regularizer_with_alpha_summed_over_tasks(cls, decay):
    method = make_method(cls, slni={"lam": 0.3, "decay": decay})
    alphas = []
    for t in range(2):  # α of each task at the parameters after that task, summed
        run_tasks(method, 1, first=t)
        alphas.append(neuron_importance(method.model, [make_view(t).inputs(slice(None))], t)[0])
        assert len(method.alpha_means) == t + 1
    summed = [a + b for a, b in zip(*alphas)]
    for mine, expected in zip(method.alpha, summed):
        assert torch.allclose(mine, expected, rtol=1e-5, atol=1e-7)
    x, y = make_view(2).inputs(slice(0, 6)), torch.tensor([0, 1, 1, 0, 1, 0])
    method.model.train()
    value = method.loss(x, y, 2)
    assert method.weights is not None and len(method.weights) == 2
    method.model.eval()  # tiny_network has no dropout: same activations
    _, activations = method.model.backbone.forward_with_activations(x)
    direct = sum(loop_regularizer(h.detach(), alpha=a if decay else None) for h, a in zip(activations, summed))
    ce = torch.nn.functional.cross_entropy(method.model(x, 2), y)
    assert value.item() == pytest.approx(ce.item() + method.penalty(method.model).item() + 0.3 * direct, rel=1e-5)
    assert method.penalty.active


@pytest.mark.parametrize("cls", [MASSLNI, EWCSLNI])
def test_state_round_trip(cls, tmp_path):
    method = make_method(cls, slni={"lam": 0.1})
    run_tasks(method, 2)
    x, y = make_view(2).inputs(slice(0, 6)), torch.tensor([0, 1, 1, 0, 1, 0])
    torch.save(method.state_dict(), tmp_path / "s.pt")
    again = make_method(cls, slni={"lam": 0.1})
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert len(again.alpha) == 2 and all(torch.equal(a, b) for a, b in zip(again.alpha, method.alpha))
    assert again.report() == method.report() and len(again.report()["activation_overlap"]) == 2
    assert again.loss(x, y, 2).item() == method.loss(x, y, 2).item()
    fresh = make_method(cls)
    assert fresh.alpha is None and fresh.extra_state()["slni"]["alpha"] is None


def test_two_sections_and_mas_with_a_slni_section_through_the_cli(tiny, tmp_path, monkeypatch, capsys):
    cfg = build_config(tiny(method="mas-slni", mas={"lam": 0.5}), ["slni.lam=2e-3", "slni.decay=false"])
    params = MASSLNI.make_params(cfg)
    assert params.lam == 0.5 and params.slni == Params(lam=2e-3, decay=False)
    assert EWCSLNI.make_params(build_config(tiny(method="ewc-slni"))).slni == Params()
    built = []
    real = Learner.for_benchmark.__func__

    def spy(cls, *args):
        learner = real(cls, *args)
        built.append(learner.method)
        return learner

    monkeypatch.setattr(Learner, "for_benchmark", classmethod(spy))
    argv = ["run", "--method", "mas", "--set", "slni.lam=1e-3", "--out", str(tmp_path), "--max-tasks", "2",
            "--train-fraction", "0.2", "--epochs", "1", "--set", "model.hidden=[16]", "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    assert type(built[0]) is MASSLNI and built[0].params.slni.lam == 1e-3 and built[0].params.lam == 1.0
    results = store.read_results(next(tmp_path.glob("*/results.json")).parent)
    assert len(results["method_info"]["activation_overlap"]) == 2
    assert main([*argv[:2], "naive", *argv[3:]]) == 2
    assert "slni section combines only with methods mas, ewc" in capsys.readouterr().err
    with pytest.raises(UserError, match="slni.scale"):
        build_config(tiny(method="mas-slni"), ["slni.scale=0"])
    with pytest.raises(UserError, match="slni needs the mlp backbone"):
        lifelong.run({**tiny(method="ewc-slni", data={"max_tasks": 1}), "model": {"name": "alexnet"}})


def test_shared_head_quickstart_slni_decorrelates_activations_and_lam_0_is_mas(tiny, tmp_path):
    def go(name, method, **sections):
        return lifelong.run(tiny(method=method, out=str(tmp_path / name), data={"scenario": "domain"},
                                 **sections))[1]

    plain = go("mas", "mas")
    off = go("off", "mas-slni", slni={"lam": 0.0})
    on = go("on", "mas-slni", slni={"lam": 1e-2})
    assert off["acc_matrix"] == plain["acc_matrix"]  # one forward pass for CE + activations changes nothing
    before = [layers[0] for layers in off["method_info"]["activation_overlap"]]
    after = [layers[0] for layers in on["method_info"]["activation_overlap"]]
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)
    assert min(on["acc_matrix"][i][i] for i in range(3)) > 0.8  # still learns each task (chance 0.5)
    assert all(m > 0 for layers in on["method_info"]["neuron_importance_mean"] for m in layers)


def test_shipped_pmnist_experiment_plans_and_every_run_config_builds():
    exp = compare.experiment_from_dict(read_yaml(ROOT / "configs" / "slni_pmnist.yml"))
    entries = compare.plan(exp)
    assert {e["variant"] for e in entries} == {"mas", "mas-slni", "mas-slnid", "ewc", "ewc-slnid"}
    for entry in entries:
        cfg = build_config(entry["config"])
        assert cfg.data.benchmark == "pmnist" and cfg.data.scenario == "domain" and len(cfg.model.options["hidden"]) == 2
        method = lifelong.methods.METHODS[cfg.method]
        params = method.make_params(cfg) if hasattr(method, "make_params") else cfg.method_params(cfg.method)
        if entry["variant"].startswith("mas"):
            assert params.lam == 0.1
        if entry["variant"] in ("mas-slni", "mas-slnid"):
            assert params.slni.lam == 1e-3 and params.slni.decay == (entry["variant"] == "mas-slnid")
        if entry["variant"] == "ewc-slnid":
            assert params.slni.lam == 2e-3 and params.slni.decay
