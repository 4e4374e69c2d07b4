"""gs-mask (document 000): the group-sparse term and its gradient, ownership, bit-identical old tasks under any
optimizer and the meta steps, per-task BN and calibration, the records in metrics.jsonl, and kill/resume."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong.config import build_config
from lifelong.data.batches import TaskView
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.loop import build_method
from lifelong.methods.gs_mask import group_soft_threshold_, group_sparse_penalty

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(optimizer="sgd", **gs):
    return {
        "method": "gs-mask", "device": "cpu", "out": "unused",
        "data": {"benchmark": "quickstart", "max_tasks": 3, "train_fraction": 0.1, "validation": 0.0},
        "model": {"name": "gs-conv", "filters": 8},
        "train": {"optimizer": optimizer, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "batch_size": 20},
        "gs-mask": {"meta_every": 1, "num_iterations": 1, "meta_batch": 2, "inner_steps": 2, "ways": 2, "shots": 4,
                    "outer_lr": 0.05, "min_free_share": 0.0, **gs},
    }


def make(optimizer="sgd", **gs):
    cfg = build_config(config(optimizer, **gs))
    benchmark = build_benchmark(cfg.data, cfg.seed)
    torch.manual_seed(0)
    method = build_method(cfg, benchmark, CPU)
    return method, [TaskView(t, t.train, CPU) for t in benchmark.tasks]


def train(method, view, epochs=2, steps=3):
    """What the loop does for one task, with the meta phase at the start of every epoch after the first."""
    method.before_task(view.task)
    for epoch in range(epochs):
        method.model.train()
        method.before_epoch(view.task, view, epoch)
        for k in range(steps):
            index = torch.arange(k * 20, (k + 1) * 20) % len(view)
            method.train_step(view.inputs(index), view.targets[index], view.task.id)


@torch.no_grad()
def shrink(method, filters):
    """Scale the given filters of every layer to norm τ/2, as if the group-sparse term had emptied them."""
    for conv in method.net.convs:
        w = conv.weight[filters]
        conv.weight[filters] = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * method.params.tau / 2


@torch.no_grad()
def outputs(method, x, tasks):
    method.model.eval()
    return [method.predict(x, t).clone() for t in tasks]


# --- the group-sparse regularizer ---

def test_group_sparse_term_and_gradient_match_a_direct_computation():
    torch.manual_seed(0)
    weights = [torch.randn(3, 2, 3, 3, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)]
    weights[0][1] *= 1e-4  # below τ: in the Frobenius term only
    weights[1][2] *= 1e-4
    betas, c, tau = [0.1, 0.45], 0.05, 5e-4
    value, grads = 0.0, []
    for w, beta in zip(weights, betas):
        flat = w.reshape(w.shape[0], -1).tolist()
        frobenius = math.sqrt(sum(v * v for row in flat for v in row))
        norms = [math.sqrt(sum(v * v for v in row)) for row in flat]
        a = max(0.5, 1 - beta) / 2
        value += c * (a * frobenius + beta * sum(n for n in norms if n > tau))
        grads.append(torch.tensor([[c * (a * v / frobenius + (beta * v / n if n > tau else 0.0)) for v in row]
                                   for row, n in zip(flat, norms)], dtype=torch.float64).view_as(w))
    leaves = [w.clone().requires_grad_() for w in weights]
    penalty = group_sparse_penalty(leaves, betas, c, tau)
    penalty.backward()
    assert penalty.item() == pytest.approx(value, rel=1e-12)
    for leaf, expected in zip(leaves, grads):
        torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-15)
    assert leaves[0].grad[1].abs().max() < 1e-4 * c  # a free filter feels only the (tiny) Frobenius pull


def test_filters_below_tau_stay_free_and_later_tasks_claim_them():
    method, views = make(meta_learn=False)
    train(method, views[0])
    shrink(method, [5, 6, 7])
    method.after_task(views[0].task, views[0])
    assert all(o.tolist() == [0] * 5 + [-1] * 3 for o in method.ownership.owner)
    train(method, views[1])
    shrink(method, [7])  # task 1 moved filter 7 but left it below τ: still free
    # while task 1 trains, its validation uses the filters it would own now
    assert [m.tolist() for m in method.ownership.masks(1, training=True)] == [[True] * 7 + [False]] * 4
    method.after_task(views[1].task, views[1])
    assert all(o.tolist() == [0] * 5 + [1, 1, -1] for o in method.ownership.owner)
    record = method.task_log()["gs_mask"]
    assert record["filters_owned"] == [[5, 2]] * 4 and record["filters_free"] == [1] * 4
    assert record["sparsity"] == [pytest.approx(1 / 3)] * 4  # 1 of the 3 filters task 1 could train is unused
    assert "low_capacity" not in record
    assert [m.tolist() for m in method.ownership.masks(0)] == [[True] * 5 + [False] * 3] * 4
    assert [m.tolist() for m in method.ownership.masks(1)] == [[True] * 7 + [False]] * 4


def test_group_soft_threshold_satisfies_the_proximal_optimality_condition():
    """prox of t‖x‖ at w: x* = 0 iff ‖w‖ ≤ t, else x* − w + t x*/‖x*‖ = 0 (the subgradient condition)."""
    torch.manual_seed(0)
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    w[1] *= 0.01  # norm far below t: emptied
    w[3] = 0.0  # already empty: stays 0, no NaN
    t = 0.5
    x = w.clone()
    group_soft_threshold_([x], [t])
    for f in range(5):
        if w[f].norm() <= t:
            assert torch.equal(x[f], torch.zeros_like(x[f]))
        else:
            torch.testing.assert_close(x[f] - w[f] + t * x[f] / x[f].norm(), torch.zeros_like(w[f]), atol=1e-12, rtol=0)
    assert [f for f in range(5) if x[f].abs().sum() == 0] == [1, 3]


def test_proximal_steps_empty_unneeded_filters_for_later_tasks():
    method, views = make(meta_learn=False, proximal=True, c=5.0)
    train(method, views[0], epochs=8)
    assert any((conv.weight.flatten(1).norm(dim=1) == 0).any() for conv in method.net.convs)
    method.after_task(views[0].task, views[0])
    free = [int((o == -1).sum()) for o in method.ownership.owner]
    assert sum(free) > 0  # exact zeros are below τ, so task 1 leaves filters for later tasks
    train(method, views[1], epochs=3)
    method.after_task(views[1].task, views[1])
    assert sum(int((o == 1).sum()) for o in method.ownership.owner) > 0


# --- old tasks never change ---

@pytest.mark.parametrize("optimizer,algo,proximal", [("sgd", "maml", False), ("adam", "fomaml", False),
                                                     ("sgd", "reptile", False), ("sgd", "maml", True)])
def test_old_tasks_are_bit_identical_under_weight_decay_momentum_and_meta_steps(optimizer, algo, proximal):
    method, views = make(optimizer, meta_algo=algo, proximal=proximal)
    x = views[0].inputs(torch.arange(16))
    before = {}
    for t, view in enumerate(views):
        weights = [conv.weight.detach().clone() for conv in method.net.convs]
        train(method, view)
        if t < 2:
            shrink(method, [7] if t else [4, 5, 6, 7])  # leave free filters for the next task; one stays below τ
        method.after_task(view.task, view)
        for layer, conv in enumerate(method.net.convs):
            owned_before = (method.ownership.owner[layer] >= 0) & (method.ownership.owner[layer] < t)
            assert torch.equal(conv.weight[owned_before], weights[layer][owned_before])
            if t > 0:  # the free filters really trained (and the meta steps ran)
                assert not torch.equal(conv.weight[~owned_before], weights[layer][~owned_before])
        now = outputs(method, x, range(t + 1))
        for j, old in before.items():
            assert torch.equal(now[j], old), f"task {j}'s outputs changed while task {t} trained"
        before = dict(enumerate(now))
    assert all(o.tolist() == [0] * 4 + [1, 1, 1] + [2] for o in method.ownership.owner)


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile"])
def test_a_meta_phase_moves_free_filters_and_never_owned_ones(algo):
    method, views = make(meta_algo=algo, num_iterations=2)
    train(method, views[0], epochs=1)
    shrink(method, [6, 7])
    method.after_task(views[0].task, views[0])
    method.before_task(views[1].task)
    convs = [(c.weight.detach().clone(), c.bias.detach().clone()) for c in method.net.convs]
    head = method.meta_head.weight.detach().clone()
    method.before_epoch(views[1].task, views[1], 0)  # no meta phase before the first epoch
    assert all(torch.equal(c.weight, w) for c, (w, _) in zip(method.net.convs, convs))
    method.before_epoch(views[1].task, views[1], 1)
    for conv, (weight, bias) in zip(method.net.convs, convs):
        assert torch.equal(conv.weight[:6], weight[:6]) and torch.equal(conv.bias[:6], bias[:6])
        assert not torch.equal(conv.weight[6:], weight[6:])
    assert not torch.equal(method.meta_head.weight, head)


def test_old_task_uses_its_own_batchnorm_and_calibration():
    method, views = make(meta_learn=False)
    for t, view in enumerate(views):
        train(method, view)
        if t < 2:
            shrink(method, [4, 5, 6, 7])
        method.after_task(view.task, view)
    x = views[0].inputs(torch.arange(8))
    method.model.eval()
    with torch.no_grad():  # task 0 by hand: only its 4 filters on, its BN and calibration, its head
        h = x
        modules = method.net.tasks["0"]
        for layer, conv in enumerate(method.net.convs):
            h = conv(h)
            h[:, 4:] = 0.0
            h = F.relu(modules.norms[layer](h))
            s = torch.sigmoid(modules.calibrations[layer].excite(F.relu(modules.calibrations[layer].squeeze(
                h.mean((2, 3))))))
            h = F.max_pool2d(h * s[:, :, None, None], 2)
        expected = method.model.heads["0"](h.flatten(1))
        first = method.predict(x, 0)
        torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
        for p in method.net.tasks["2"].parameters():
            p.add_(1.0)
        assert torch.equal(method.predict(x, 0), first)
        for p in method.net.tasks["0"].calibrations.parameters():
            p.add_(1.0)
        assert not torch.equal(method.predict(x, 0), first)


def test_each_task_trains_only_its_own_modules():
    method, views = make(meta_learn=False)
    train(method, views[0])
    method.after_task(views[0].task, views[0])
    method.before_task(views[1].task)
    trained = {id(p) for group in method.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in method.net.tasks["1"].parameters())
    assert not any(id(p) in trained for p in [*method.net.tasks["0"].parameters(),
                                              *method.model.heads["0"].parameters()])
    assert not any(p.requires_grad for p in method.net.tasks["0"].parameters())


def test_wrong_model_or_betas_is_a_user_error():
    with pytest.raises(UserError, match="runs on its own network, gs-conv"):
        build_method(build_config({**config(), "model": {"name": "mlp"}}), build_benchmark(
            build_config(config()).data, 0), CPU)
    with pytest.raises(UserError, match="one β per layer"):
        make(betas=[0.1, 0.2])
    with pytest.raises(UserError, match="gs-conv needs the task id of each batch"):
        method, _ = make()
        method.net(torch.zeros(1, 1, 28, 28))


def other_method(name, scenario="task"):
    """Method ``name`` on gs-conv and the benchmark's task views (no gs-mask section: an unused one is an error)."""
    cfg = {k: v for k, v in config().items() if k != "gs-mask"}
    cfg = build_config({**cfg, "method": name, "data": {**cfg["data"], "scenario": scenario}})
    benchmark = build_benchmark(cfg.data, 0)
    torch.manual_seed(0)
    return build_method(cfg, benchmark, CPU), [TaskView(t, t.train, CPU) for t in benchmark.tasks]


def test_gs_conv_is_a_backbone_for_task_incremental_methods():
    """EWC on gs-conv: each task trains its own BatchNorm and calibration (built before its optimizer), and a
    mixed batch runs each task's rows through that task's modules."""
    method, views = other_method("ewc")
    train(method, views[0], epochs=1)
    method.after_task(views[0].task, views[0])
    method.before_task(views[1].task)
    net = method.model
    trained = {id(p) for group in method.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in net.backbone.tasks["1"].parameters())
    x, ids = views[0].inputs(torch.arange(6)), torch.tensor([0, 1, 1, 0, 1, 0])
    net.eval()
    mixed = net(x, ids)
    for t in (0, 1):
        rows = (ids == t).nonzero().squeeze(1)
        assert torch.allclose(mixed[rows], net(x[rows], t), atol=1e-6)
    assert not torch.allclose(net.features(x, 0), net.features(x, 1))  # the tasks' own modules differ
    with pytest.raises(UserError, match="its features need the task id"):
        net.features(x)
    from lifelong.methods.imm import merged_names  # IMM merges the shared weights only, as it leaves heads alone
    assert merged_names(net) and not any(n.startswith(("heads.", "backbone.tasks.")) for n in merged_names(net))
    assert method.penalty.active


def test_gs_conv_refuses_methods_and_scenarios_that_need_task_free_features():
    with pytest.raises(UserError, match="method lwf computes features without naming a task.*use another model"):
        other_method("lwf")
    with pytest.raises(UserError, match="model gs-conv needs the task-incremental scenario.*set the scenario to task"):
        other_method("ewc", scenario="class")


# --- runs through the loop ---

def test_run_records_ownership_and_warns_when_capacity_runs_out(tmp_path):
    cfg = config(meta_learn=False, min_free_share=0.1)
    cfg["out"], cfg["train"]["epochs"] = str(tmp_path), 1
    with pytest.warns(UserWarning, match="less than 10% of their filters free.*larger gs-mask.c frees more"):
        run_dir, results = lifelong.run(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tasks = [r for r in records if r["event"] == "task"]
    first = tasks[0]["gs_mask"]
    # one short epoch cannot empty a filter: task 0 owns everything and later tasks can only reuse it
    assert first["filters_owned"] == [[8]] * 4 and first["filters_free"] == [0] * 4 and "low_capacity" in first
    assert tasks[2]["gs_mask"]["filters_owned"] == [[8, 0, 0]] * 4
    assert results["bwt"] == 0.0 and results["method_info"]["share_used_per_task"] == [1.0, 0.0, 0.0]


def test_kill_and_resume_gives_the_uninterrupted_results(tmp_path, crash_and_resume):
    cfg = config(c=2.0, tau=0.1)  # a strong pull to zero and a large τ leave free filters for later tasks
    cfg["train"]["epochs"] = 2
    cfg["out"] = str(tmp_path / "straight")
    straight_dir, straight = lifelong.run(cfg)
    cfg["out"] = str(tmp_path / "crashed")
    resumed_dir, resumed = crash_and_resume(cfg, [(0, 1), (1, 0), (1, 1), (2, 1)])
    assert resumed["acc_matrix"] == straight["acc_matrix"]
    assert resumed["method_info"] == straight["method_info"]
    assert 0 < straight["method_info"]["share_used_per_task"][0] < 1 and straight["method_info"]["filters_owned"] != [[8, 0, 0]] * 4
    def task_records(run_dir):
        return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["event"] == "task"]

    assert task_records(resumed_dir) == task_records(straight_dir)
    a = torch.load(straight_dir / "checkpoint.pt", weights_only=True)["method"]
    b = torch.load(resumed_dir / "checkpoint.pt", weights_only=True)["method"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["extra"]["owner"], b["extra"]["owner"]))
    assert all(torch.equal(a["extra"]["meta_head"][k], b["extra"]["meta_head"][k]) for k in a["extra"]["meta_head"])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gs_conv_equals_its_textbook_form_in_value_and_gradient(layout):
    """Pooling before the calibration, the scale computed first and the mean as sum / count are rearrangements:
    features and every gradient equal conv → BN → ReLU → x · sigmoid(W₂ ReLU(W₁ mean(x))) → max-pool (to float
    rounding: the scale's gradient sums other terms)."""
    from lifelong.models import build_backbone

    torch.manual_seed(0)
    net = build_backbone("gs-conv", (3, 16, 16), filters=6, blocks=3, reduction=2)
    modules = net.task_modules(0)
    net.eval()  # in training, the conv biases' gradients are BatchNorm's rounding noise (their true value is 0)
    with torch.no_grad():
        for norm in modules.norms:
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 3, 16, 16).contiguous(memory_format=layout)

    def textbook(x):
        h = x
        for block, conv in enumerate(net.convs):
            h = F.relu(modules.norms[block](conv(h)))
            calibration = modules.calibrations[block]
            scale = torch.sigmoid(calibration.excite(F.relu(calibration.squeeze(h.mean((2, 3))))))
            h = F.max_pool2d(h * scale[:, :, None, None], 2)
        return h.flatten(1)

    results = []
    for forward in (lambda x: net(x, 0), textbook):
        net.zero_grad()
        inputs = x.clone().requires_grad_()
        out = forward(inputs)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        results.append([out, inputs.grad, *[p.grad for p in net.parameters() if p.grad is not None]])
    assert len(results[0]) == len(results[1]) > 2
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_equilibrium_norms_predict_where_sgd_settles_a_scale_blind_layer():
    """benchmarks/gs_mask_equilibrium.py's balance, on a simulated layer: each filter's loss gradient is noise
    orthogonal to it and scaled by 1/‖W_f‖ (as under BatchNorm); plain SGD with R's subgradient settles where
    the script's formula says, from E‖g_f‖² measured at the settled state."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gs_mask_equilibrium.py"
    spec = importlib.util.spec_from_file_location("gs_mask_equilibrium", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gen = torch.Generator().manual_seed(0)
    lr, c, beta, tau, noise = 0.01, 0.5, 0.45, 5e-4, torch.tensor([0.5, 1.0, 2.0, 4.0])
    w = torch.randn(4, 64, generator=gen, dtype=torch.float64) / 8  # near where they settle (≈ 0.6-2.4)
    norms, squares = [], []
    for step in range(6_000):
        n = w.norm(dim=1, keepdim=True)
        g = torch.randn(4, 64, generator=gen, dtype=torch.float64) * noise[:, None].double()
        g = (g - (g * w).sum(1, keepdim=True) * w / n**2) / n  # orthogonal to W_f, ∝ 1/‖W_f‖
        penalty = group_sparse_penalty([w.requires_grad_()], [beta], c, tau)
        (grad,) = torch.autograd.grad(penalty, w)
        w = (w.detach() - lr * (g + grad)).detach()
        if step >= 2_000:
            norms.append(n.squeeze(1))
            squares.append(g.square().sum(1))
    actual, mean_square = torch.stack(norms).mean(0), torch.stack(squares).mean(0)
    predicted = script.predicted_norms(mean_square, lr, c, beta, float(w.norm()))
    assert torch.allclose(predicted, actual, rtol=0.05), (predicted, actual)
    assert actual[0] < actual[-1] / 2  # the noisier a filter's gradient, the longer it settles
