"""IMM (mean and mode) against independent computations: hand-written merges per tensor, the closed form of the
mode merge with its floor, autograd of the direct L2-transfer formula, the chain rule of drop-transfer; state and
kill/resume; real quickstart runs."""

import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import lifelong
from lifelong.config import TrainConfig, build_config
from lifelong.errors import UserError
from lifelong.methods import imm
from lifelong.methods.imm import MeanIMM, ModeIMM, Params, merged_names
from lifelong.models import build_backbone
from lifelong.models.heads import Network

NAMES = ("imm-mean", "imm-mode")
CLASSES = {"imm-mean": MeanIMM, "imm-mode": ModeIMM}


def make(cls, scenario="task", **params):
    def build():
        torch.manual_seed(0)
        return Network(build_backbone("mlp", (1, 3, 3), hidden=[4]), scenario, [2, 3, 2])

    return cls(build, Params(**params), TrainConfig())


def train_fake(method, task_id, seed):
    """Stand-in for training task ``task_id``: new random values for the shared weights and the task's own head."""
    method.before_task(SimpleNamespace(id=task_id))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in method.model.named_parameters():
            if n in method.names or n.startswith(f"heads.{task_id}."):
                p.copy_(torch.randn(p.shape, generator=g))
    return {n: p.detach().clone() for n, p in method.model.named_parameters()}


@pytest.mark.parametrize("alpha", [None, [1.0, 2.0, 5.0]])
def test_mean_merge_is_the_weighted_mean_and_heads_keep_their_own_task(alpha):
    method = make(MeanIMM, alpha=alpha)
    solutions = []
    for t in range(3):
        solutions.append(train_fake(method, t, seed=t))
        method.after_task(SimpleNamespace(id=t), None)
        a = [1.0] * (t + 1) if alpha is None else alpha[: t + 1]
        params = dict(method.model.named_parameters())
        for n, value in params.items():
            if n.startswith("heads."):  # each head is exactly the one its own task left
                k = int(n.split(".")[1])
                assert torch.equal(value, solutions[k][n])
            else:
                expected = sum(a[k] * solutions[k][n] for k in range(t + 1)) / sum(a)
                assert torch.allclose(value, expected, atol=1e-6)
        assert method.report()["alpha"] == pytest.approx([x / sum(a) for x in a])
    # the next task trains from the unmerged θ*_3, not from the merged model
    method.before_task(SimpleNamespace(id=2))
    for n, p in method.model.named_parameters():
        assert torch.equal(p, solutions[2][n])


def test_merged_names_exclude_task_heads_only():
    task = make(MeanIMM).model
    for t in range(3):
        task.start_task(t)
    assert merged_names(task) == ["backbone.layers.0.weight", "backbone.layers.0.bias"]
    klass = make(MeanIMM, scenario="class").model
    assert merged_names(klass)[-2:] == ["heads.shared.weight", "heads.shared.bias"]


def test_shared_head_of_class_incremental_is_merged():
    method = make(MeanIMM, scenario="class")
    solutions = [train_fake(method, t, seed=10 + t) for t in range(1)]
    method.after_task(SimpleNamespace(id=0), None)
    solutions.append(train_fake(method, 1, seed=11))
    method.after_task(SimpleNamespace(id=1), None)
    head = dict(method.model.named_parameters())["heads.shared.weight"]
    assert torch.allclose(head, (solutions[0]["heads.shared.weight"] + solutions[1]["heads.shared.weight"]) / 2)


def test_mode_merge_is_the_closed_form_with_the_floor(monkeypatch):
    method = make(ModeIMM, alpha=[1.0, 3.0, 0.5], fisher="empirical", fisher_samples=7)
    width = sum(dict(method.model.named_parameters())[n].numel() for n in method.names)
    fishers, calls = [], []

    def fake_fisher(model, names, view, task_id, mode, max_samples, batch_size):
        calls.append((names, view, task_id, mode, max_samples, torch.cat([p.detach().reshape(-1) for n, p in
                                                                          model.named_parameters() if n in names])))
        g = torch.Generator().manual_seed(100 + task_id)
        f = torch.rand(width, generator=g)
        f[: width // 3] = 0.0  # no information anywhere: the floor decides (α-weighted mean)
        f[width // 3 : width // 2] *= (torch.rand(width // 2 - width // 3, generator=g) < 0.5).float()
        fishers.append(f)
        return f

    monkeypatch.setattr(imm, "fisher_diagonal", fake_fisher)
    solutions = []
    for t in range(3):
        solutions.append(train_fake(method, t, seed=20 + t))
        method.after_task(SimpleNamespace(id=t), f"view{t}")
        names, view, task_id, mode, max_samples, theta = calls[-1]
        assert (names, view, task_id, mode, max_samples) == (method.names, f"view{t}", t, "empirical", 7)
        assert torch.equal(theta, torch.cat([solutions[t][n].reshape(-1) for n in names]))  # F at θ*_t
        alpha = [1.0, 3.0, 0.5][: t + 1]
        start = 0
        params = dict(method.model.named_parameters())
        for n in method.names:  # closed form per tensor, elementwise, floor 1e-8 on every task's Fisher
            size = params[n].numel()
            fk = [torch.clamp(fishers[k][start : start + size], min=1e-8).view_as(params[n]) for k in range(t + 1)]
            num = sum(alpha[k] * fk[k] * solutions[k][n] for k in range(t + 1))
            den = sum(alpha[k] * fk[k] for k in range(t + 1))
            assert torch.allclose(params[n], num / den, atol=1e-5)
            start += size
        for k in range(t + 1):
            assert torch.equal(params[f"heads.{k}.weight"], solutions[k][f"heads.{k}.weight"])
    flat = torch.cat([p.detach().reshape(-1) for n, p in method.model.named_parameters() if n in method.names])
    mean = sum(a * torch.cat([solutions[k][n].reshape(-1) for n in method.names])
               for k, a in enumerate([1.0, 3.0, 0.5])) / 4.5
    assert torch.allclose(flat[: width // 3], mean[: width // 3], atol=1e-6)


def test_config_section_and_alpha_checks(tiny):
    cfg = build_config(tiny(method="imm-mode"), ["imm.transfer=drop", "imm.drop_p=0.25", "imm.alpha=[1, 2, 3]"])
    assert cfg.method_params("imm") == Params(transfer="drop", drop_p=0.25, alpha=[1.0, 2.0, 3.0])
    with pytest.raises(UserError, match="imm.alpha"):
        build_config(tiny(method="imm-mean"), ["imm.alpha=[1, 0, 1]"])
    with pytest.raises(UserError, match="imm.transfer"):
        build_config(tiny(method="imm-mean"), ["imm.transfer=l1"])
    with pytest.raises(UserError, match="has 2 weights but the benchmark has 3 tasks"):
        make(MeanIMM, alpha=[1.0, 2.0])


def after_one_task(**params):
    method = make(MeanIMM, **params)
    train_fake(method, 0, seed=1)
    method.after_task(SimpleNamespace(id=0), None)
    method.before_task(SimpleNamespace(id=1))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    x, y = torch.randn(6, 1, 3, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])
    return method, x, y


def grads(model):
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


def test_l2_transfer_gradient_equals_autograd_of_the_direct_formula():
    method, x, y = after_one_task(transfer="l2", l2=0.37)
    anchor = imm.unflatten(method.model, method.names, method.anchor)
    value = method.loss(x, y, 1)
    value.backward()
    fast = grads(method.model)
    method.model.zero_grad()
    params = dict(method.model.named_parameters())
    direct = F.cross_entropy(method.model(x, 1), y) + 0.37 * sum(((params[n] - anchor[n]) ** 2).sum()
                                                                 for n in method.names)
    direct.backward()
    assert value.item() == pytest.approx(direct.item(), rel=1e-5)
    for n, g in grads(method.model).items():
        assert torch.allclose(fast[n], g, rtol=1e-5, atol=1e-6), n


def test_drop_transfer_with_p_zero_equals_no_transfer():
    losses, gradients = [], []
    for transfer in ("none", "drop"):
        method, x, y = after_one_task(transfer=transfer, drop_p=0.0)
        losses.append(method.loss(x, y, 1))
        losses[-1].backward()
        gradients.append(grads(method.model))
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-6)
    for n in gradients[0]:
        assert torch.allclose(gradients[0][n], gradients[1][n], atol=1e-6), n


def test_drop_transfer_falls_back_to_the_anchor_and_follows_the_chain_rule():
    method, x, y = after_one_task(transfer="drop", drop_p=0.4)
    torch.manual_seed(5)
    method.loss(x, y, 1).backward()
    fast = grads(method.model)
    torch.manual_seed(5)  # the same mask again
    eff = {n: t.detach().requires_grad_() for n, t in method.effective_parameters().items()}
    params = dict(method.model.named_parameters())
    anchor = imm.unflatten(method.model, method.names, method.anchor)
    F.cross_entropy(functional_call(method.model, eff, (x, 1)), y).backward()
    kept = 0
    for n in method.names:
        scaled = anchor[n] + (params[n].detach() - anchor[n]) / 0.6
        mask = torch.isclose(eff[n], scaled, atol=1e-6)
        assert torch.all(mask | (eff[n] == anchor[n]))  # each element: dropped to θ* or kept and rescaled
        assert torch.allclose(fast[n], eff[n].grad * mask / 0.6, atol=1e-6)
        kept += int(mask.sum())
    total = method.anchor.numel()
    assert 0.3 * total < kept < 0.9 * total
    head = dict(method.model.named_parameters())["heads.1.weight"]
    assert fast["heads.1.weight"].abs().sum() > 0 and head.requires_grad


@pytest.mark.parametrize("cls", [MeanIMM, ModeIMM])
def test_state_round_trip(cls, monkeypatch):
    monkeypatch.setattr(imm, "fisher_diagonal", lambda model, names, *a: torch.rand(
        sum(p.numel() for n, p in model.named_parameters() if n in names)))
    method = make(cls, transfer="l2", l2=0.1)
    for t in range(2):
        train_fake(method, t, seed=30 + t)
        method.after_task(SimpleNamespace(id=t), None)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    again = make(cls, transfer="l2", l2=0.1)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    original, loaded = method.extra_state(), again.extra_state()
    assert original["tasks_done"] == loaded["tasks_done"] == 2
    for key in ("anchor", "precision_sum", "weighted_sum"):
        assert torch.equal(original[key], loaded[key])
    for m in (method, again):
        m.before_task(SimpleNamespace(id=2))
    x, y = torch.randn(4, 1, 3, 3), torch.tensor([0, 1, 1, 0])
    assert torch.equal(method.loss(x, y, 2), again.loss(x, y, 2))
    for (n, p), (_, q) in zip(method.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n


def config(tiny, name, out, sections=None, **params):
    """The run config with the method's hyperparameters in section ``imm``."""
    return tiny(method=name, out=str(out), imm=dict(params), **(sections or {}))


@pytest.mark.parametrize("name,transfer", [("imm-mean", "drop"), ("imm-mode", "l2")])
def test_resume_after_crashes_equals_an_uninterrupted_run(tiny, tmp_path, name, transfer, crash_and_resume):
    """Crash inside task 2 (after its first epoch), resume, crash at the boundary after task 2, resume to the end."""
    params = {"transfer": transfer, "l2": 1e-2, "fisher_samples": 64}
    _, reference = lifelong.run(config(tiny, name, tmp_path / "ref", **params))
    assert reference["method_info"]["transfer"] == transfer
    _, resumed = crash_and_resume(config(tiny, name, tmp_path / "crash", **params), [(1, 1), (2, 0)])
    assert resumed["acc_matrix"] == reference["acc_matrix"]


def test_quickstart_runs_merge_and_forget_less_than_naive(tiny, tmp_path):
    """Domain-incremental quickstart (one shared head, where fine-tuning forgets): the merged models keep more."""
    setup = {"data": {"scenario": "domain"}, "train": {"epochs": 3}}
    _, naive = lifelong.run(tiny(out=str(tmp_path / "naive"), **setup))
    for name in NAMES:
        _, result = lifelong.run(config(tiny, name, tmp_path / name, setup))
        R, N = result["acc_matrix"], naive["acc_matrix"]
        assert result["method_info"]["alpha"] == pytest.approx([1 / 3] * 3)
        if name == "imm-mean":
            assert R[0] == N[0]  # one task: the merge is θ*_1 itself and training equals fine-tuning
        assert min(R[i][i] for i in range(3)) > 0.8, name
        assert sum(result["forgetting"]) < sum(naive["forgetting"]) - 0.05, name
        assert result["acc"] > naive["acc"] + 0.02, name
