"""LwF and EBLL: the distillation and code losses against hand computations, the frozen teacher, the
autoencoders, state round trips, kill/resume equality and real quickstart runs."""

import copy
import dataclasses
import io
import math
from types import SimpleNamespace

import pytest
import torch

import lifelong
from lifelong.config import DataConfig, TrainConfig
from lifelong.data.batches import Stream, TaskView, eval_batches
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.methods.ebll import EBLL
from lifelong.methods.lwf import LwF
from lifelong.models import build_backbone
from lifelong.models.heads import Network


def task(k):
    return SimpleNamespace(id=k)


def make(cls, scenario="task", counts=(2, 3, 2), in_shape=(1, 2, 2), hidden=6, **params):
    torch.manual_seed(0)

    def build():
        return Network(build_backbone("mlp", in_shape, hidden=[hidden]), scenario, list(counts))

    return cls(build, cls.Params(**params), TrainConfig())


def perturb(model, scale=0.5):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


def softmax(z, T=1.0):
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


# --- LwF: the math ---

@pytest.mark.parametrize("scenario,counts,params,old_heads", [
    ("task", (2, 3, 2), {"lam": 0.7}, [0, 1]),
    ("task", (2, 3, 2), {"head_reduction": "mean", "t_squared": True, "temperature": 3.0}, [0, 1]),
    ("task", (2, 3, 2), {"lam_by_tasks": True, "t_squared": True, "head_reduction": "mean"}, [0, 1]),  # van de Ven
    ("class", (2, 2, 2), {}, ["old classes"]),
    ("class", (2, 2, 2), {"lam_by_tasks": True, "t_squared": True}, ["old classes"]),
    ("class", (2, 2, 2), {"lam_by_tasks": True, "t_squared": True, "student_classes": "seen"},  # van de Ven 2019
     ["seen classes"]),
    ("domain", (2, 2, 2), {"lam": 0.5}, ["shared"]),
])
def test_lwf_loss_matches_a_hand_computation(scenario, counts, params, old_heads):
    m = make(LwF, scenario, counts, **params)
    for k in range(3):
        perturb(m.model)
        m.before_task(task(k))
    perturb(m.model)  # the student now differs from the teacher
    m.model.eval()
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 1, 0]) + (4 if scenario == "class" else 0)
    with torch.no_grad():
        new = m.model(x, 2).tolist()
        if scenario == "task":
            pairs = [(m.model(x, k).tolist(), m.teacher(x, k).tolist()) for k in old_heads]
        elif scenario == "class":  # the teacher knew the first 4 classes of the shared head
            seen = old_heads == ["seen classes"]  # the student's softmax over all 6; target 0 on classes 5, 6
            pairs = [(m.model(x, 2)[:, : 6 if seen else 4].tolist(), m.teacher(x, 1).tolist())]
            assert len(pairs[0][1][0]) == 4 and len(pairs[0][0][0]) == (6 if seen else 4)
        else:
            pairs = [(m.model(x, 0).tolist(), m.teacher(x, 0).tolist())]
    T, lam = m.params.temperature, m.params.lam
    ce = sum(-math.log(softmax(new[n])[int(y[n])]) for n in range(4)) / 4
    terms = []
    for student, teacher in pairs:
        kl = 0.0
        for n in range(4):
            p, q = softmax(teacher[n], T), softmax(student[n], T)
            kl += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))  # q may be longer than p
        terms.append(kl / 4)
    distill = sum(terms) / (len(terms) if m.params.head_reduction == "mean" else 1)
    distill *= T * T if m.params.t_squared else 1.0
    lam *= 2 if m.params.lam_by_tasks else 1  # two old tasks
    assert m.loss(x, y, 2).item() == pytest.approx(ce + lam * distill, rel=1e-5)


@pytest.mark.parametrize("scenario,counts,params", [
    ("task", (2, 3, 2), {"lam": 0.7}),  # old heads of different widths
    ("task", (2, 2, 2), {"head_reduction": "mean", "t_squared": True, "temperature": 3.0}),  # equal widths
    ("class", (2, 2, 2), {"lam_by_tasks": True}),
    ("class", (2, 2, 2), {"student_classes": "seen", "t_squared": True}),
    ("domain", (2, 2, 2), {"lam": 0.5}),
])
def test_lwf_gradient_matches_autograd_of_the_direct_formula(scenario, counts, params):
    m = make(LwF, scenario, counts, **params)
    for k in range(3):
        perturb(m.model)
        m.before_task(task(k))
    perturb(m.model)
    m.model.eval()
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 1, 0, 1]) + (4 if scenario == "class" else 0)
    named = dict(m.model.named_parameters())
    m.model.zero_grad()
    fast = m.loss(x, y, 2)
    fast.backward()
    fast_grads = {n: p.grad.clone() for n, p in named.items() if p.grad is not None}
    m.model.zero_grad()
    T = m.params.temperature
    with torch.no_grad():
        teachers = [m.teacher(x, k) for k in range(2)] if scenario == "task" else [m.teacher(x, 1)]
    if scenario == "task":
        students = [m.model(x, k) for k in range(2)]
    else:  # the shared head: the teacher knew its first 4 outputs (class) or all of them (domain)
        students = [m.model(x, 2)[:, : 6 if m.params.student_classes == "seen" else teachers[0].shape[1]]]
    terms = []
    for student, teacher in zip(students, teachers):
        p, log_p = torch.softmax(teacher / T, 1), torch.log_softmax(teacher / T, 1)
        log_q = torch.log_softmax(student / T, 1)[:, : teacher.shape[1]]
        terms.append((p * (log_p - log_q)).sum(1).mean())
    distill = sum(terms) / (len(terms) if m.params.head_reduction == "mean" else 1) * (T * T if m.params.t_squared else 1)
    lam = m.params.lam * (2 if m.params.lam_by_tasks else 1)
    direct = torch.nn.functional.cross_entropy(m.model(x, 2), y) + lam * distill
    direct.backward()
    assert fast.item() == pytest.approx(direct.item(), rel=1e-6)
    assert fast_grads.keys() == {n for n, p in named.items() if p.grad is not None}
    for n, g in fast_grads.items():
        assert torch.allclose(g, named[n].grad, rtol=1e-5, atol=1e-7), n


def test_distillation_gradient_vanishes_when_the_student_equals_the_teacher():
    m = make(LwF)
    m.before_task(task(0))
    perturb(m.model)
    m.before_task(task(1))
    m.model.eval()
    x = torch.randn(5, 1, 2, 2)

    def distillation():
        m.model.zero_grad()
        features = m.model.features(x)
        with torch.no_grad():
            teacher_features = m.teacher.features(x)
        d = m.distillation(features, m.model.logits(features, 1), teacher_features)
        d.backward()
        return d, torch.cat([p.grad.reshape(-1) for p in m.model.parameters() if p.grad is not None])

    value, grad = distillation()
    assert abs(value.item()) < 1e-6 and grad.abs().max() < 1e-6
    perturb(m.model, 0.1)
    value, grad = distillation()
    assert value.item() > 1e-6 and grad.abs().max() > 1e-4
    # the KL and Li & Hoiem's cross-entropy −Σ p* log q differ by a constant: same gradient
    m.model.zero_grad()
    T = m.params.temperature
    p = torch.softmax(m.teacher(x, 0) / T, 1)
    (-(p * torch.log_softmax(m.model(x, 0) / T, 1)).sum(1).mean()).backward()
    ce_grad = torch.cat([p.grad.reshape(-1) for p in m.model.parameters() if p.grad is not None])
    assert torch.allclose(grad, ce_grad, atol=1e-6)


def test_the_teacher_is_frozen_and_does_not_change_during_the_task():
    m = make(LwF)
    m.before_task(task(0))
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 2, (16,))
    for _ in range(3):
        m.train_step(x, y, 0)
    assert m.teacher is None  # nothing to distil on the first task
    m.before_task(task(1))
    snapshot = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in m.model.state_dict().items()}
    assert not m.teacher.training and not any(p.requires_grad for p in m.teacher.parameters())
    optimized = {id(p) for group in m.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in m.teacher.parameters()}
    m.model.train()
    y1 = torch.randint(0, 3, (16,))
    for _ in range(5):
        m.train_step(x, y1, 1)
    assert all(torch.equal(v, snapshot[k]) for k, v in m.teacher.state_dict().items())
    assert not m.teacher.training
    assert not torch.equal(m.model.state_dict()["backbone.layers.0.weight"], student["backbone.layers.0.weight"])
    m.after_task(task(1), None)
    assert m.teacher is None


# --- EBLL ---

@pytest.fixture(scope="module")
def quick():
    benchmark = build_benchmark(DataConfig(max_tasks=3, train_fraction=0.3), 0)
    return benchmark, [TaskView(t, t.train, torch.device("cpu")) for t in benchmark.tasks]


def ebll(quick, tasks_done=2, **params):
    """EBLL on the quickstart's first tasks, briefly trained, with an autoencoder for each finished task and
    the next task started (so its teacher is the model as it was)."""
    benchmark, views = quick
    params = {"code_size": 8, "ae_epochs": 3, **params}
    m = make(EBLL, benchmark.scenario, benchmark.class_counts, benchmark.input_shape, hidden=16, **params)
    for k in range(tasks_done):
        m.before_task(views[k].task)
        m.model.train()
        for x, y in eval_batches(views[k], 32):
            m.train_step(x, y, k)
        m.after_task(views[k].task, views[k])
    m.before_task(views[tasks_done].task)
    return m


def test_autoencoder_losses_decrease_and_leave_the_network_alone(quick):
    m = ebll(quick, tasks_done=1)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in m.model.parameters()]
    m.after_task(quick[1][1].task, quick[1][1])
    assert all(torch.equal(v, before[k]) for k, v in m.model.state_dict().items())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, m.model.parameters()))
    for h in m.history:
        assert len(h["ce"]) == 3 and h["ce"][-1] < h["ce"][0] and h["mse"][-1] < h["mse"][0]
    assert m.autoencoders[0]["enc_weight"].shape == (8, 16) and m.autoencoders[0]["dec_weight"].shape == (16, 8)
    assert [r["final_ce"] for r in m.report()["autoencoder"]] == [h["ce"][-1] for h in m.history]


def test_code_loss_is_zero_at_the_teacher_and_matches_the_direct_formula(quick):
    m = ebll(quick, alpha_code=2.5)
    assert len(m.autoencoders) == 2
    m.model.eval()
    x, y = next(eval_batches(quick[1][2], 12))
    f = m.model.features(x)
    with torch.no_grad():
        f_star = m.teacher.features(x)
    assert m.code_loss(f, f_star).item() == 0.0
    perturb(m.model, 0.05)

    m.model.zero_grad()
    fast = m.feature_penalty(m.model.features(x), f_star)
    fast.backward()
    fast_grad = [p.grad.clone() for p in m.model.backbone.parameters()]

    m.model.zero_grad()
    direct = 0.0
    for ae in m.autoencoders:  # one autoencoder at a time, explicit sigmoid
        code = 1 / (1 + torch.exp(-(m.model.features(x) @ ae["enc_weight"].T + ae["enc_bias"])))
        target = 1 / (1 + torch.exp(-(f_star @ ae["enc_weight"].T + ae["enc_bias"])))
        direct = direct + ((code - target) ** 2).sum(1).mean()
    direct = 2.5 * direct
    direct.backward()
    assert fast.item() == pytest.approx(direct.item(), rel=1e-5) and fast.item() > 0
    for a, b in zip(fast_grad, [p.grad for p in m.model.backbone.parameters()]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # the training loss is LwF's loss plus this term
    with torch.no_grad():
        total = m.loss(x, y, 2).item()
        m.params.alpha_code = 0.0
        assert total == pytest.approx(m.loss(x, y, 2).item() + direct.item(), rel=1e-5)


def test_code_size_must_be_under_complete():
    with pytest.raises(UserError, match="under-complete"):
        make(EBLL, hidden=6, code_size=6)


@pytest.mark.parametrize("method", ["lwf", "ebll"])
def test_state_round_trip(quick, method):
    m = ebll(quick) if method == "ebll" else make(LwF)
    if method == "lwf":
        for k in range(3):
            m.before_task(task(k))
            m.train_step(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)), k)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = ebll(quick, tasks_done=0) if method == "ebll" else make(LwF)
    fresh.load_state_dict(state)
    assert fresh.old_tasks == m.old_tasks == [0, 1]
    assert fresh.teacher.state_dict().keys() == m.teacher.state_dict().keys()
    assert all(torch.equal(v, fresh.teacher.state_dict()[k]) for k, v in m.teacher.state_dict().items())
    assert not fresh.teacher.training and not any(p.requires_grad for p in fresh.teacher.parameters())
    if method == "ebll":
        assert fresh.history == m.history and len(fresh.autoencoders) == 2
        for a, b in zip(m.autoencoders, fresh.autoencoders):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        x, y = next(eval_batches(quick[1][2], 32))
    else:
        x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,))
    for net in (m, fresh):
        net.model.eval()
        net.train_step(x, y, 2)
    assert all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in m.model.state_dict().items())


# --- the teacher's outputs cached once per task ---

@pytest.mark.parametrize("method,scenario,params", [
    ("lwf", "task", {}), ("lwf", "task", {"head_reduction": "mean", "t_squared": True}),
    ("lwf", "class", {"student_classes": "seen"}), ("lwf", "domain", {}),
    ("ebll", "task", {}), ("ebll", "class", {"alpha_code": 2.0}),
])
def test_cached_teacher_gives_the_per_batch_loss_and_gradients(method, scenario, params):
    benchmark = build_benchmark(DataConfig(max_tasks=3, train_fraction=0.1, scenario=scenario), 0)
    views = [TaskView(t, t.train, torch.device("cpu")) for t in benchmark.tasks]
    cls = EBLL if method == "ebll" else LwF
    params = {"code_size": 8, "ae_epochs": 1, **params} if method == "ebll" else params
    m = make(cls, scenario, benchmark.class_counts, benchmark.input_shape, hidden=16, **params)
    for k in range(2):
        m.before_task(views[k].task)
        m.model.train()
        for x, y in eval_batches(views[k], 32):
            m.train_step(x, y, k)
        m.after_task(views[k].task, views[k])
    m.before_task(views[2].task)
    m.before_epoch(views[2].task, views[2], 0)
    m.model.eval()  # no dropout draws: both copies see the same network
    stream = Stream([views[2]], 16, torch.Generator().manual_seed(0))
    for step, batch in enumerate(stream.epoch()):
        reference = copy.deepcopy(m)
        if step > 0:  # the cache is built: no teacher forward any more
            m.teacher.features = lambda x: pytest.fail("the teacher ran although its outputs are cached")
        cached_loss = m.train_batch(batch)
        # the same inputs marked augmented: the teacher runs on the batch
        per_batch_loss = reference.train_batch(dataclasses.replace(batch, augmented=True))
        assert m._cache is not None
        assert cached_loss.item() == pytest.approx(per_batch_loss.item(), rel=1e-5)
        for a, b in zip(m.model.parameters(), reference.model.parameters()):
            assert (a.grad is None) == (b.grad is None)
            assert a.grad is None or torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)
        vars(m.teacher).pop("features", None)
        if step == 2:
            break


def test_lwf_and_ebll_forget_less_than_naive_on_the_quickstart(tiny, tmp_path):
    # without dropout, so that the teacher (eval mode) and the student see the same network; seeds 0-2 give
    # average forgetting naive 0.13/0.03/0.21, LwF 0.005/0.018/0.002, EBLL 0.007/0.008/0.008
    config = dict(data={"max_tasks": 4}, model={"dropout": 0.0}, train={"epochs": 3, "lr": 0.003})
    _, naive = lifelong.run(tiny(out=str(tmp_path / "n"), **config))
    _, lwf = lifelong.run(tiny(method="lwf", out=str(tmp_path / "l"), lwf={"lam": 2.0}, **config))
    _, ebll_run = lifelong.run(tiny(method="ebll", out=str(tmp_path / "e"), ebll={"lam": 2.0, "code_size": 16},
                                    **config))
    assert naive["avg_forgetting"] > 0.05
    assert lwf["avg_forgetting"] < naive["avg_forgetting"] / 2
    assert ebll_run["avg_forgetting"] < naive["avg_forgetting"] / 2
    assert len(ebll_run["method_info"]["autoencoder"]) == 4


@pytest.mark.parametrize("scenario", ["class", "domain"])
def test_ebll_runs_in_the_shared_head_scenarios(tiny, scenario):
    _, results = lifelong.run(tiny(method="ebll", data={"scenario": scenario}, ebll={"code_size": 16}))
    R = results["acc_matrix"]
    assert len(R) == 3 and min(R[i][i] for i in range(3)) > 0.6
