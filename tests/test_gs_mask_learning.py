"""gs-mask learns every task of a short run (issue 18): a task's BatchNorm statistics are those of its final
filters, a free filter at norm ≤ τ is off in training as in evaluation, free filters start each task afresh,
and the proximal step follows the optimizer's step size, so later tasks get filters of their own."""

import pytest
import torch
from test_gs_mask import make, shrink, train

import lifelong
from lifelong.methods.gs_mask import step_sizes

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@torch.no_grad()
def batchnorm_inputs(method, view, task):
    """Per layer, the inputs of task ``task``'s BatchNorms over all of ``view`` (evaluation mode, its masks)."""
    seen = {}
    hooks = [bn.register_forward_hook(lambda _m, args, _o, k=k: seen.__setitem__(k, args[0]))
             for k, bn in enumerate(method.net.tasks[str(task)].norms)]
    method.model.eval()
    method.predict(view.inputs(torch.arange(len(view))), task)
    for hook in hooks:
        hook.remove()
    return [seen[k].transpose(0, 1).flatten(1) for k in range(len(seen))]


def test_a_task_is_evaluated_with_the_batchnorm_statistics_of_its_final_filters():
    """The failure of issue 18: running averages taken while the filters shrank (and the initial variance 1 not yet
    forgotten) normalised the features wrongly at evaluation (variance off by up to 12× on split MNIST)."""
    method, views = make("adam", meta_learn=False, proximal=False)
    train(method, views[0], epochs=2, steps=3)
    method.after_task(views[0].task, views[0])
    for bn, h in zip(method.net.tasks["0"].norms, batchnorm_inputs(method, views[0], 0)):
        on = h.var(1) > 0
        torch.testing.assert_close(bn.running_mean, h.mean(1), rtol=0.05, atol=1e-3)
        ratio = bn.running_var[on] / h.var(1)[on]
        assert 0.8 < float(ratio.median()) < 1.25


def test_a_free_filter_below_tau_is_off_in_training_as_in_evaluation():
    method, views = make("adam", meta_learn=False, proximal=False)
    train(method, views[0], epochs=1)
    shrink(method, [6, 7])
    method.after_task(views[0].task, views[0])
    method.before_task(views[1].task)
    shrink(method, [7])  # task 1 left filter 7 at norm τ/2: it is off
    x, y = views[1].inputs(torch.arange(20)), views[1].targets[:20]
    method.model.train()
    method.optimizer.zero_grad(set_to_none=True)
    method.task_loss(x, y, 1).backward()
    p = method.params
    for conv, beta in zip(method.net.convs, p.betas):  # filter 7 feels only the Frobenius term's pull
        frobenius = p.c * max(0.5, 1 - beta) / 2 * conv.weight[7] / conv.weight.norm()
        torch.testing.assert_close(conv.weight.grad[7], frobenius.detach(), rtol=1e-5, atol=1e-12)
        assert conv.bias.grad[7] == 0
        assert conv.weight.grad[6].abs().max() > 1e-3  # filter 6 (redrawn, above τ) trains
    method.train_step(x, y, 1)  # Adam's normalised step would move it above τ: it stays off, at exactly 0
    assert all(conv.weight[7].abs().sum() == 0 and conv.bias[7] == 0 for conv in method.net.convs)


def test_free_filters_are_redrawn_when_a_task_starts_and_owned_ones_are_not():
    method, views = make(meta_learn=False)
    twin, _ = make(meta_learn=False)
    for m in (method, twin):
        train(m, views[0], epochs=1)
        shrink(m, [6, 7])
        m.after_task(views[0].task, views[0])
    owned = [conv.weight[:6].clone() for conv in method.net.convs]
    method.before_task(views[1].task)
    twin.before_task(views[1].task)
    for conv, conv_twin, before in zip(method.net.convs, twin.net.convs, owned):
        assert torch.equal(conv.weight[:6], before)
        norms = conv.weight[6:].flatten(1).norm(dim=1)
        assert (norms > 100 * method.params.tau).all()  # a fresh draw, not the τ/2 the task left them at
        assert torch.equal(conv.weight, conv_twin.weight) and torch.equal(conv.bias, conv_twin.bias)


def test_the_proximal_threshold_follows_the_step_size_of_sgd_and_adam():
    w = torch.nn.Parameter(torch.ones(2, 1, 2, 2))
    sgd = torch.optim.SGD([w], lr=0.1)
    assert step_sizes(sgd, [w]) == [0.1]
    adam = torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    grads = [torch.arange(8.0).view(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)]
    for g in grads:
        w.grad = g.clone()
        adam.step()
    v = 0.01 * (0.99 * grads[0] ** 2 + grads[1] ** 2)  # exp_avg_sq after two steps
    v_hat = v.flatten(1).mean(1) / (1 - 0.99 ** 2)
    torch.testing.assert_close(step_sizes(adam, [w])[0], 0.01 / (v_hat.sqrt() + 1e-8))


def test_a_short_run_learns_every_task_with_filters_of_its_own(tmp_path):
    """Issue 18 on a tiny case: with the defaults (Adam, the proximal step) the first task leaves filters free and
    every later task trains some of its own, instead of only its BatchNorm, calibration and head on frozen ones."""
    cfg = {"method": "gs-mask", "device": "cpu", "out": str(tmp_path),
           "data": {"benchmark": "quickstart", "max_tasks": 3, "validation": 0.0},
           "model": {"filters": 16}, "train": {"epochs": 3, "batch_size": 32},
           "gs-mask": {"meta_learn": False}}
    _, results = lifelong.run(cfg)
    owned = results["method_info"]["filters_owned"]
    assert sum(layer[0] for layer in owned) < 64  # task 0 owns a part of the 4 × 16 filters
    assert sum(layer[1] + layer[2] for layer in owned) > 0  # and later tasks own some
    diagonal = [results["acc_matrix"][t][t] for t in range(3)]
    assert min(diagonal) > 0.8, diagonal
    assert results["bwt"] == 0.0


def test_validation_during_a_task_uses_fresh_statistics_and_leaves_the_results_alone():
    method, views = make("adam", meta_learn=False)
    twin, _ = make("adam", meta_learn=False)
    x = views[0].inputs(torch.arange(40))
    for m in (method, twin):
        m.before_task(views[0].task)
        m.model.train()
        m.before_epoch(views[0].task, views[0], 0)
        for k in range(3):
            index = torch.arange(k * 20, (k + 1) * 20)
            m.train_step(views[0].inputs(index), views[0].targets[index], 0)
    method.model.eval()
    with torch.no_grad():
        seen = method.predict(x, 0)  # what the loop's validation sees mid-task
    reference, _ = make("adam", meta_learn=False)
    reference.model.load_state_dict(twin.model.state_dict())
    reference.ownership.load_state_dict(twin.ownership.state_dict())
    reference.current = 0
    reference.recompute_statistics(0, views[0])
    reference.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(seen, reference.predict(x, 0))
    for m in (method, twin):
        m.after_task(views[0].task, views[0])
    assert all(torch.equal(a, b) for a, b in zip(method.model.state_dict().values(), twin.model.state_dict().values()))


def test_the_task_end_reuses_statistics_that_validation_just_computed(monkeypatch):
    """The loop validates right before the task ends: the end recomputes the statistics only when a step (or a meta
    phase) moved the weights since (the twin test above shows the two give bit-identical states)."""
    method, views = make("adam", meta_learn=False)
    calls = []
    recompute = method.recompute_statistics
    monkeypatch.setattr(method, "recompute_statistics", lambda *a, **k: (calls.append(a[0]), recompute(*a, **k)))
    for view, validate_last in zip(views, (True, False)):
        method.before_task(view.task)
        method.model.train()
        method.before_epoch(view.task, view, 0)
        x, y = view.inputs(torch.arange(20)), view.targets[:20]
        method.train_step(x, y, view.task.id)
        method.model.eval()
        with torch.no_grad():
            method.predict(x, view.task.id)  # validation: statistics recomputed (stale)
        if not validate_last:
            method.model.train()
            method.train_step(x, y, view.task.id)  # moved after the validation: the end recomputes
        calls.clear()
        method.after_task(view.task, view)
        assert calls == ([] if validate_last else [view.task.id])
