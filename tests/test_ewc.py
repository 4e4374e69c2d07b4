"""EWC and online EWC: the Fisher of every mode against one backward pass per sample, the penalty against
autograd of the direct per-task sum, online accumulation, state round trips, crash/resume, and less forgetting
than naive fine-tuning on the quickstart."""

import io

import pytest
import torch

import lifelong
from lifelong.config import TrainConfig
from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.methods.ewc import EWC, fisher_diagonal, logit_fisher_factors
from lifelong.methods.importance import flatten, parameter_names, relayout
from lifelong.methods.online_ewc import OnlineEWC
from lifelong.models import build_backbone
from lifelong.models.heads import Network


def build_network():
    torch.manual_seed(0)
    net = Network(build_backbone("mlp", (1, 3, 3), hidden=[4], dropout=0.5), "task", [2, 3])
    net.start_task(0)
    net.start_task(1)
    return net


def make_view(task_id, n=9, classes=3):
    g = torch.Generator().manual_seed(10 + task_id)
    arrays = ImageArrays(torch.randint(0, 256, (n, 1, 3, 3), dtype=torch.uint8, generator=g),
                         torch.randint(0, classes, (n,), generator=g))
    task = Task(id=task_id, name=f"t{task_id}", classes=list(range(classes)), class_names=["c"] * classes,
                train=arrays, test=arrays, mean=(0.5,), std=(0.25,))
    return TaskView(task, arrays, torch.device("cpu"))


def grad_of_log_prob(net, names, x, task_id, c):
    """∂ log p(c|x)/∂θ for one sample by plain autograd, flat in ``names`` order."""
    net.zero_grad()
    torch.log_softmax(net(x, task_id), -1)[0, c].backward()
    params = dict(net.named_parameters())
    return torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1)
                      for n in names])


@pytest.mark.parametrize("mode, task_id", [("empirical", 1), ("sample", 1), ("max", 1), ("expected", 1),
                                           ("expected", 0)])
def test_fisher_of_every_mode_matches_a_per_sample_loop(mode, task_id):
    net, view = build_network(), make_view(task_id, classes=(2, 3)[task_id])
    names = parameter_names(net)
    net.train()  # the Fisher must switch dropout off, then restore the mode
    torch.manual_seed(3)
    fast = fisher_diagonal(net, names, view, task_id, mode, batch_size=64)
    assert net.training

    net.eval()
    x = view.inputs(slice(None))
    with torch.no_grad():
        probs = torch.softmax(net(x, task_id), -1)
    torch.manual_seed(3)
    labels = {"empirical": view.targets, "max": probs.argmax(1),
              "sample": torch.multinomial(probs, 1).squeeze(1)}.get(mode)
    slow = torch.zeros_like(fast)
    for i in range(len(view)):
        if mode == "expected":
            for c in range(probs.shape[1]):
                slow += probs[i, c] * grad_of_log_prob(net, names, x[i : i + 1], task_id, c) ** 2
        else:
            slow += grad_of_log_prob(net, names, x[i : i + 1], task_id, int(labels[i])) ** 2
    slow /= len(view)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-7)
    assert fast.sum() > 0


@pytest.mark.parametrize("classes", [1, 2, 3, 7])
def test_logit_fisher_factors_rebuild_the_softmax_fisher(classes):
    """B Bᵀ = diag(p) − p pᵀ, with K − 1 columns (the expected Fisher in K − 1 backward passes instead of K)."""
    logits = torch.randn(5, classes, generator=torch.Generator().manual_seed(classes)) * 3
    factors = logit_fisher_factors(logits)
    p = torch.softmax(logits.double(), -1)
    assert factors.shape == (5, classes, classes - 1)
    rebuilt = (factors.double() @ factors.double().transpose(1, 2))
    assert torch.allclose(rebuilt, torch.diag_embed(p) - p[:, :, None] * p[:, None, :], atol=1e-6)


def test_fisher_sample_cap_uses_a_random_subset_of_that_size():
    net, view = build_network().eval(), make_view(1, n=20)
    names = parameter_names(net)
    torch.manual_seed(5)
    capped = fisher_diagonal(net, names, view, 1, "empirical", max_samples=6, batch_size=4)
    torch.manual_seed(5)
    pick = torch.randperm(20)[:6]
    x = view.inputs(pick)
    slow = sum(grad_of_log_prob(net, names, x[i : i + 1], 1, int(view.targets[pick[i]])) ** 2 for i in range(6)) / 6
    assert torch.allclose(capped, slow, rtol=1e-4, atol=1e-7)


def test_relayout_moves_each_tensor_and_fills_missing_ones_with_zeros():
    net = build_network()
    names = parameter_names(net)
    old = [n for n in reversed(names) if not n.startswith("heads.1")]  # another order, one head missing
    vector = flatten(net, old).detach()
    moved = relayout(net, vector, old, names)
    params = dict(net.named_parameters())
    expected = torch.cat([params[n].detach().reshape(-1) if n in old else torch.zeros(params[n].numel())
                          for n in names])
    assert torch.equal(moved, expected)
    assert relayout(net, vector, old, old) is vector


def shift_parameters(net, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def direct_penalty(net, names, lam, pairs):
    theta = flatten(net, names)
    return sum(lam / 2 * (omega * (theta - anchor) ** 2).sum() for omega, anchor in pairs)


def penalty_value_and_grad(method, x, y, task_id):
    """Loss minus cross-entropy, and the gradient of that difference."""
    method.model.zero_grad()
    net = method.model
    extra = method.loss(x, y, task_id) - torch.nn.functional.cross_entropy(net(x, task_id), y)
    extra.backward()
    return extra.detach(), torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def test_ewc_penalty_is_zero_at_the_anchor_and_its_gradient_is_the_direct_sum():
    lam = 30.0
    method = EWC(build_network, EWC.Params(lam=lam), TrainConfig())
    method.model.eval()  # no dropout, so loss − CE is exactly the penalty
    names = parameter_names(method.model)
    views = [make_view(0, classes=2), make_view(1)]
    x, y = views[1].inputs(slice(None)), views[1].targets
    method.after_task(views[0].task, views[0])
    value, grad = penalty_value_and_grad(method, x, y, 1)
    assert abs(value.item()) < 1e-5 and grad.abs().max() < 1e-5

    pairs = [(fisher_diagonal(method.model, names, views[0], 0), flatten(method.model, names).detach().clone())]
    shift_parameters(method.model, 0.3, seed=1)
    pairs.append((fisher_diagonal(method.model, names, views[1], 1), flatten(method.model, names).detach().clone()))
    method.after_task(views[1].task, views[1])
    assert len(method.consolidated) == 2
    assert all(torch.equal(e["fisher"], f) and torch.equal(e["anchor"], a)
               for e, (f, a) in zip(method.consolidated, pairs))
    shift_parameters(method.model, 0.2, seed=2)
    value, grad = penalty_value_and_grad(method, x, y, 1)
    method.model.zero_grad()
    direct = direct_penalty(method.model, names, lam, pairs)
    direct.backward()
    direct_grad = torch.cat([p.grad.reshape(-1) for p in method.model.parameters()])
    assert value.item() == pytest.approx(direct.item(), rel=1e-4)
    assert torch.allclose(grad, direct_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_a_new_task_leaves_the_old_head_exactly_where_it_was(optimizer):
    """The penalty's gradient goes only where the task loss reached: with weight decay and momentum on, task 0's
    head gets no .grad during task 1, so the optimizer does not touch it (as under naive fine-tuning)."""
    method = EWC(build_network, EWC.Params(lam=30.0),
                 TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.0 if optimizer == "adam" else 0.9,
                             weight_decay=0.1))
    views = [make_view(0, classes=2), make_view(1)]
    method.before_task(views[0].task)
    for _ in range(3):
        method.train_step(views[0].inputs(slice(None)), views[0].targets, 0)
    method.after_task(views[0].task, views[0])
    head = {n: p.detach().clone() for n, p in method.model.head(0).named_parameters()}
    backbone = flatten(method.model.backbone, parameter_names(method.model.backbone)).clone()
    method.before_task(views[1].task)
    for _ in range(3):
        method.train_step(views[1].inputs(slice(None)), views[1].targets, 1)
    assert all(torch.equal(p, head[n]) for n, p in method.model.head(0).named_parameters())
    assert not torch.equal(flatten(method.model.backbone, parameter_names(method.model.backbone)), backbone)


def test_online_fisher_decays_with_gamma_and_the_anchor_is_the_latest_parameters():
    lam, gamma = 8.0, 0.5
    method = OnlineEWC(build_network, OnlineEWC.Params(lam=lam, gamma=gamma), TrainConfig())
    method.model.eval()
    names = parameter_names(method.model)
    views = [make_view(0, classes=2), make_view(1)]
    f1 = fisher_diagonal(method.model, names, views[0], 0)
    method.after_task(views[0].task, views[0])
    shift_parameters(method.model, 0.3, seed=1)
    f2 = fisher_diagonal(method.model, names, views[1], 1)
    theta2 = flatten(method.model, names).detach().clone()
    method.after_task(views[1].task, views[1])
    (entry,) = method.consolidated
    assert torch.allclose(entry["fisher"], gamma * f1 + f2, rtol=1e-6, atol=1e-9)
    assert torch.equal(entry["anchor"], theta2)
    shift_parameters(method.model, 0.2, seed=2)
    x, y = views[1].inputs(slice(None)), views[1].targets
    value, grad = penalty_value_and_grad(method, x, y, 1)
    method.model.zero_grad()
    direct = direct_penalty(method.model, names, lam, [(gamma * f1 + f2, theta2)])
    direct.backward()
    assert value.item() == pytest.approx(direct.item(), rel=1e-4)
    assert torch.allclose(grad, torch.cat([p.grad.reshape(-1) for p in method.model.parameters()]), rtol=1e-4,
                          atol=1e-6)
    report = method.report()
    assert report["tasks_consolidated"] == 2 and len(report["mean_fisher"]) == 2


@pytest.mark.parametrize("cls", [EWC, OnlineEWC])
def test_state_round_trip_restores_every_task_and_the_penalty(cls):
    method = cls(build_network, cls.Params(lam=5.0, fisher="sample"), TrainConfig())
    method.model.eval()
    views = [make_view(0, classes=2), make_view(1)]
    for view in views:
        method.before_task(view.task)
        method.after_task(view.task, view)
        shift_parameters(method.model, 0.2, seed=view.task.id)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = cls(build_network, cls.Params(lam=5.0, fisher="sample"), TrainConfig())
    other.load_state_dict(state)
    other.model.eval()
    assert len(other.consolidated) == len(method.consolidated)
    for a, b in zip(method.consolidated, other.consolidated):
        assert a["task"] == b["task"] and a["names"] == b["names"]
        assert torch.equal(a["fisher"], b["fisher"]) and torch.equal(a["anchor"], b["anchor"])
    x, y = views[1].inputs(slice(None)), views[1].targets
    assert torch.equal(method.loss(x, y, 1), other.loss(x, y, 1))
    assert other.report() == method.report()


def quickstart(tiny, method, out, **sections):
    """Three quickstart tasks, trained hard enough (3 epochs, lr 3e-3) that naive fine-tuning clearly forgets."""
    return tiny(method=method, out=str(out), checkpoint="epoch", train={"epochs": 3, "lr": 3e-3}, **sections)


# A strong λ; the non-default Fisher modes, so that the sampled labels and the random sample cap go through
# crash/resume (the runs are shared between the two tests below through one output folder).
STRONG = {"ewc": {"lam": 1e5, "fisher": "sample", "fisher_samples": 100},
          "online-ewc": {"lam": 1e5, "gamma": 0.7, "fisher": "expected"}}


def test_strong_ewc_forgets_less_than_naive_on_the_quickstart(tiny, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "ewc-runs"
    _, naive = lifelong.run(quickstart(tiny, "naive", out))
    assert naive["bwt"] < -0.1  # seed 0 forgets clearly (seeds 0-4: -0.19 to -0.02; EWC ≥ naive on all five)
    for name, section in STRONG.items():
        _, result = lifelong.run(quickstart(tiny, name, out, **{name: section}))
        assert result["bwt"] > naive["bwt"] + 0.05, (name, result["bwt"], naive["bwt"])
        info = result["method_info"]
        assert info["tasks_consolidated"] == 3 and all(m > 0 for m in info["mean_fisher"])


