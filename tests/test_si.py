"""Synaptic Intelligence against a hand-stepped SGD loop, its state round trip, crash/resume, and a real run."""

import copy
import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong import store
from lifelong.config import TrainConfig
from lifelong.methods.importance import unflatten
from lifelong.methods.si import SI
from lifelong.models import build_backbone
from lifelong.models.heads import Network


def build_network(hidden=4):
    torch.manual_seed(0)
    return Network(build_backbone("mlp", (1, 3, 3), hidden=[hidden]), "task", [2, 3])


def make_si(c=1.0, xi=0.1, lr=0.1, momentum=0.0):
    return SI(build_network, SI.Params(c=c, xi=xi), TrainConfig(optimizer="sgd", lr=lr, momentum=momentum))


def batches(task_id, n_steps, seed):
    g = torch.Generator().manual_seed(seed)
    classes = [2, 3][task_id]
    return [(torch.randn(6, 1, 3, 3, generator=g), torch.randint(0, classes, (6,), generator=g))
            for _ in range(n_steps)]


def hand_si(net, tasks, lr, momentum, c, xi):
    """SI written out per parameter: SGD (with momentum) on CE + c Σ Ω (θ−θ*)², ω += −g_task · Δθ.

    Returns, per task, (ω at the task's end, Ω after it, ω had it used the full gradient)."""
    importance, anchor, out = {}, {}, []
    for task_id, data in enumerate(tasks):
        net.start_task(task_id)
        params = dict(net.named_parameters())
        start = {n: p.detach().clone() for n, p in params.items()}
        omega = {n: torch.zeros_like(p) for n, p in params.items()}
        omega_full = {n: torch.zeros_like(p) for n, p in params.items()}
        velocity = {n: torch.zeros_like(p) for n, p in params.items()}
        for x, y in data:
            names = list(params)
            grads = torch.autograd.grad(F.cross_entropy(net(x, task_id), y), [params[n] for n in names],
                                        allow_unused=True)
            task_grad = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)}
            full = dict(task_grad)
            if importance:
                penalty = sum(c * (importance[n] * (params[n] - anchor[n]) ** 2).sum() for n in importance)
                for n, g in zip(importance, torch.autograd.grad(penalty, [params[n] for n in importance])):
                    full[n] = full[n] + g
            with torch.no_grad():
                for n, p in params.items():
                    velocity[n] = momentum * velocity[n] + full[n]
                    change = (p - lr * velocity[n]) - p  # the change float arithmetic really makes
                    omega[n] -= task_grad[n] * change
                    omega_full[n] -= full[n] * change
                    p -= lr * velocity[n]
        for n, p in params.items():
            step = omega[n] / ((p.detach() - start[n]) ** 2 + xi)
            importance[n] = importance[n] + step if n in importance else step
            anchor[n] = p.detach().clone()
        out.append((omega, {n: v.clone() for n, v in importance.items()}, omega_full))
    return out


def as_dict(method, vector):
    return unflatten(method.model, method.names, vector)


def assert_close(fast, slow, names):
    assert set(names) == set(slow)
    for n in names:
        assert torch.allclose(fast[n], slow[n], rtol=1e-5, atol=1e-7), n


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_omega_and_importance_match_a_hand_stepped_sgd_loop(momentum):
    c, xi, lr = 50.0, 0.1, 0.1
    data = [batches(0, 4, seed=1), batches(1, 5, seed=2)]
    method = make_si(c=c, xi=xi, lr=lr, momentum=momentum)
    expected = hand_si(copy.deepcopy(method.model), data, lr, momentum, c, xi)
    after = []
    for task_id, task_data in enumerate(data):
        method.before_task(SimpleNamespace(id=task_id))
        for x, y in task_data:
            method.train_step(x, y, task_id)
        omega, importance, omega_full = expected[task_id]
        assert_close(as_dict(method, method.omega), omega, method.names)
        if task_id == 1:
            # the penalty really acts in task 1: ω from the full gradient would be clearly different
            flat = lambda d: torch.cat([d[n].reshape(-1) for n in method.names])  # noqa: E731
            assert (flat(omega_full) - flat(omega)).norm() > 0.05 * flat(omega).norm()
            assert "heads.1.weight" in method.names and "heads.1.weight" not in expected[0][1]
        method.after_task(SimpleNamespace(id=task_id), None)
        assert_close(as_dict(method, method.importance), importance, method.names)
        assert_close(as_dict(method, method.anchor), dict(method.model.named_parameters()), method.names)
        assert method.omega.abs().sum() == 0
        after.append({n: v.clone() for n, v in as_dict(method, method.importance).items()})
    # Ω accumulated over both tasks (the hand loop adds, the comparison above checked the sum); the first
    # task's head did not move in task 2, so it kept its Ω, while the shared layers gained importance
    assert torch.equal(after[1]["heads.0.weight"], after[0]["heads.0.weight"])
    assert all((after[1][n] - after[0][n]).abs().sum() > 0 for n in after[0] if n.startswith("backbone"))
    assert "heads.1.weight" not in after[0] and after[1]["heads.1.weight"].abs().sum() > 0  # the head that grew


def test_omega_stays_accurate_when_steps_are_millionths_of_the_weights():
    """ω accumulates g·θ_before − g·θ_after (two passes instead of three): its float32 rounding error must stay
    small against Σ −g·Δθ in float64 even when Δθ is ~3e-6 of θ (weights near 3, Adam lr 1e-5)."""
    method = SI(lambda: build_network(hidden=16), SI.Params(), TrainConfig(optimizer="adam", lr=1e-5))
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(3.0)
    method.before_task(SimpleNamespace(id=0))
    params = dict(method.model.named_parameters())
    names = list(params)
    reference = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for x, y in batches(0, 400, seed=3):
        grads = torch.autograd.grad(F.cross_entropy(method.model(x, 0), y), [params[n] for n in names],
                                    allow_unused=True)
        before = {n: p.detach().double() for n, p in params.items()}
        method.train_step(x, y, 0)
        for n, g in zip(names, grads):
            if g is not None:
                reference[n] -= g.double() * (params[n].detach().double() - before[n])
    omega = as_dict(method, method.omega)
    error = sum(float((omega[n].double() - reference[n]).norm()) ** 2 for n in method.names) ** 0.5
    size = sum(float(reference[n].norm()) ** 2 for n in method.names) ** 0.5
    assert size > 0 and error / size < 1e-4


def test_loss_adds_c_times_importance_weighted_squared_distance():
    method = make_si(c=3.0)
    train_first_task(method)
    for x, y in batches(1, 2, seed=5):
        method.train_step(x, y, 1)
    x, y = batches(1, 1, seed=6)[0]
    params = dict(method.model.named_parameters())
    omega, anchor = as_dict(method, method.importance), as_dict(method, method.anchor)
    by_hand = F.cross_entropy(method.model(x, 1), y) + sum(
        3.0 * (omega[n] * (params[n] - anchor[n]) ** 2).sum() for n in method.names)
    assert method.loss(x, y, 1).item() == pytest.approx(by_hand.item(), rel=1e-5)


def train_first_task(method, steps=3, seed=4):
    method.before_task(SimpleNamespace(id=0))
    for x, y in batches(0, steps, seed=seed):
        method.train_step(x, y, 0)
    method.after_task(SimpleNamespace(id=0), None)
    method.before_task(SimpleNamespace(id=1))


def test_step_with_analytic_penalty_gradient_equals_autograd_through_loss():
    fast, slow = make_si(c=50.0, momentum=0.9), make_si(c=50.0, momentum=0.9)
    train_first_task(fast)
    train_first_task(slow)
    for x, y in batches(1, 4, seed=9):
        fast.train_step(x, y, 1)
        slow.optimizer.zero_grad(set_to_none=True)
        slow.loss(x, y, 1).backward()  # task loss + QuadraticPenalty, all by autograd
        slow.optimizer.step()
    for (n, a), (_, b) in zip(fast.model.named_parameters(), slow.model.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), n


def test_an_old_head_stays_bit_identical_under_adam():
    """The penalty's gradient is exactly zero at θ*: Adam would turn a rounding-level gradient into full-size
    steps of the first task's head."""
    method = SI(lambda: build_network(hidden=32), SI.Params(c=1000.0), TrainConfig(optimizer="adam", lr=1e-2))
    train_first_task(method)
    head = {n: p.detach().clone() for n, p in method.model.heads["0"].named_parameters()}
    for x, y in batches(1, 5, seed=10):
        method.train_step(x, y, 1)
    assert all(torch.equal(p, head[n]) for n, p in method.model.heads["0"].named_parameters())


def roundtrip(method):
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    other = make_si(c=20.0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    return other


def test_state_round_trip_mid_task_and_at_a_boundary_continues_identically():
    method = make_si(c=20.0)
    method.before_task(SimpleNamespace(id=0))
    for x, y in batches(0, 3, seed=7):
        method.train_step(x, y, 0)
    method.after_task(SimpleNamespace(id=0), None)
    boundary = roundtrip(method)
    assert torch.equal(boundary.importance, method.importance) and torch.equal(boundary.anchor, method.anchor)
    method.before_task(SimpleNamespace(id=1))
    data = batches(1, 6, seed=8)
    for x, y in data[:3]:
        method.train_step(x, y, 1)
    other = roundtrip(method)  # mid-task: ω, θ(start) and the optimizer must come back
    for key in ("omega", "importance", "anchor", "start"):
        assert torch.equal(getattr(other, key), getattr(method, key)), key
    assert other.names == method.names and method.omega.abs().sum() > 0
    for m in (method, other):
        for x, y in data[3:]:
            m.train_step(x, y, 1)
        m.after_task(SimpleNamespace(id=1), None)
    assert torch.equal(other.importance, method.importance) and torch.equal(other.anchor, method.anchor)
    for (n, a), (_, b) in zip(method.model.named_parameters(), other.model.named_parameters()):
        assert torch.equal(a, b), n


def test_resume_after_a_crash_mid_task_or_at_a_boundary_equals_an_uninterrupted_run(tiny, tmp_path,
                                                                                    crash_and_resume):
    config = lambda out: tiny(method="si", si={"c": 100.0}, out=str(tmp_path / out))  # noqa: E731
    _, reference = lifelong.run(config("ref"))
    assert all(s > 0 for s in reference["method_info"]["importance_sum"])

    def omega_saved_mid_task(run_dir, state):
        extra = store.load_checkpoint(run_dir)["method"]["extra"]
        assert (extra["omega"].abs().sum() > 0) == (state.epoch > 0)

    # a task boundary; mid-task with the penalty active and ω half summed
    _, resumed = crash_and_resume(config("crash"), [(1, 0), (2, 1)], inspect=omega_saved_mid_task)
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert resumed["method_info"] == reference["method_info"]


def test_si_forgets_less_than_naive_on_the_quickstart(tiny, tmp_path):
    def run(method, **extra):
        cfg = tiny(method=method, out=str(tmp_path / method), data={"scenario": "domain"},
                   train={"epochs": 3}, **extra)
        return lifelong.run(cfg)[1]

    naive, si = run("naive"), run("si", si={"c": 1000.0})
    assert sum(si["forgetting"]) < sum(naive["forgetting"]) - 0.1
    assert si["acc"] > naive["acc"]
