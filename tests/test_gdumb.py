"""GDumb: the stream only fills a class-balanced memory, the model is a network trained from scratch on that memory
alone (the authors' schedule, checked step by step), predictions reach seen classes only, and it keeps old classes
where fine-tuning forgets them."""

import math

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong import store
from lifelong.config import TrainConfig
from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import Stream, TaskView
from lifelong.data.scenarios import Task
from lifelong.errors import UserError
from lifelong.methods.gdumb import GDumb, learning_rate
from lifelong.methods.memory import MemoryRows
from lifelong.models import build_backbone
from lifelong.models.heads import Network

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def view(task_id, scenario, labels, seed=0):
    """Task ``task_id``: random 1×3×3 images with the given local labels; class-IL targets offset by 2 per task."""
    g = torch.Generator().manual_seed(seed + 10 * task_id)
    arrays = ImageArrays(torch.randint(0, 256, (len(labels), 1, 3, 3), dtype=torch.uint8, generator=g),
                         torch.tensor(labels))
    offset = 2 * task_id if scenario == "class" else 0
    task = Task(task_id, f"t{task_id}", [0, 1], ["a", "b"], arrays, arrays, mean=(0.5,), std=(0.3,),
                label_offset=offset)
    return TaskView(task, arrays, torch.device("cpu"))


def make(scenario="class", size=8, batch_size=4, seed=0, **params):
    def network():
        return Network(build_backbone("mlp", (1, 3, 3), hidden=[6]), scenario, [2, 2])

    torch.manual_seed(seed)
    return GDumb(network, GDumb.Combined(memory={"size": size, "batch_size": batch_size}, **params), TrainConfig())


def stream(method, views, t, epochs=1, batch=3):
    """What the loop does for task ``t`` before after_task: the task's batches offered, ``epochs`` passes."""
    method.before_task(views[t].task)
    (own,) = method.training_views(views[t].task, views[: t + 1])
    s = Stream([own], batch, torch.Generator().manual_seed(t))
    for epoch in range(epochs):
        method.before_epoch(views[t].task, own, epoch)
        for b in s.epoch():
            assert float(method.train_batch(b)) == 0.0


def greedy_counts(labels, size):
    """The paper's sampler, one row at a time: store while there is room; else a row of a class smaller than the
    largest one replaces a row of the largest class."""
    held = []
    for y in labels:
        counts = {c: held.count(c) for c in set(held)}
        if len(held) < size:
            held.append(y)
        elif counts.get(y, 0) < max(counts.values()):
            held.remove(max(counts, key=counts.get))
            held.append(y)
    return sorted({c: held.count(c) for c in set(held)}.items())


@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_the_memory_is_class_balanced_with_the_greedy_samplers_counts(scenario):
    """Two tasks of 12 rows (9 of label 0, 3 of label 1 in task 1): 8 slots → 5/3 after task 1, then 2 per class;
    outside class-IL the balanced classes are (task, label) pairs, and the stream's second pass offers nothing."""
    gdumb = make(scenario, epochs=1)
    views = [view(0, scenario, [0] * 9 + [1] * 3), view(1, scenario, [0, 1] * 6)]
    keys = [[2 * t + y for y in v.task.train.labels.tolist()] for t, v in enumerate(views)]
    stream(gdumb, views, 0, epochs=3)
    assert gdumb.memory.seen == 12
    assert sorted(enumerate(gdumb.memory.class_counts().tolist())) == greedy_counts(keys[0], 8) == [(0, 5), (1, 3)]
    stream(gdumb, views, 1, epochs=2)
    counts = gdumb.memory.class_counts(4).tolist()
    assert counts == [2, 2, 2, 2] and sorted(enumerate(counts)) == greedy_counts(keys[0] + keys[1], 8)
    rows = gdumb.memory.rows()
    assert (rows.targets - gdumb.offsets(rows.task_ids)).tolist() == [
        v if scenario == "class" else v % 2 for v in rows.targets.tolist()]


def test_the_stream_takes_no_step():
    gdumb = make()
    views = [view(0, "class", [0, 1] * 6)]
    before = {k: v.clone() for k, v in gdumb.model.named_parameters()}
    stream(gdumb, views, 0)
    assert gdumb.optimizer is None and all(torch.equal(before[k], v) for k, v in gdumb.model.named_parameters())


def test_learning_rate_is_the_authors_schedule():
    """Their driver: epoch 0 at lr/10, epoch 1 at lr, then CosineAnnealingWarmRestarts(T_0=1, T_mult=2).step()."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=0.0005)
    for epoch in range(130):
        if epoch < 2:
            optimizer.param_groups[0]["lr"] = 0.005 if epoch == 0 else 0.05
        else:
            scheduler.step()
        assert math.isclose(learning_rate(epoch, 0.05, 0.0005), optimizer.param_groups[0]["lr"], rel_tol=1e-12)


def filled(scenario="class", seed=0, **params):
    """A GDumb after the stream of two tasks, before its fit."""
    gdumb = make(scenario, seed=seed, **params)
    views = [view(0, scenario, [0, 1] * 6), view(1, scenario, [0, 1] * 6)]
    stream(gdumb, views, 0)
    gdumb.after_task(views[0].task, views[0])
    stream(gdumb, views, 1)
    return gdumb, views


def test_one_fit_step_is_clipped_sgd_at_a_tenth_of_lr_on_a_fresh_network():
    """One epoch, one batch holding the whole memory: one SGD step (lr/10, weight decay, clipped gradient) of a
    network initialised from the seed drawn from torch's generator, whatever the previous model was."""
    gdumb, views = filled(epochs=1, clip=0.01, weight_decay=0.1, batch_size=8)
    torch.manual_seed(5)
    gdumb.after_task(views[1].task, views[1])
    torch.manual_seed(5)
    torch.manual_seed(int(torch.randint(2**62, ())))
    net = gdumb.build_network()
    net.start_task(1)
    rows = gdumb.memory.rows()
    loss = F.cross_entropy(net(gdumb.inputs(rows), 1), rows.targets)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    loss = loss.detach()
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    assert norm > 0.01  # the clip acts
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads):
            p -= 0.005 * (g * 0.01 / (norm + 1e-6) + 0.1 * p)
    fitted = gdumb.model.state_dict()
    assert all(torch.allclose(fitted[k], v, atol=1e-6) for k, v in net.state_dict().items())
    assert math.isclose(gdumb.log["fit_loss"], loss.item(), rel_tol=1e-5)


@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_the_fit_starts_from_scratch_it_depends_on_the_memory_only(scenario):
    """Two runs with other initial networks and another task-1 model, their memories made equal: the same network;
    a different memory: another network."""
    a, views = filled(scenario, seed=0)
    b, _ = filled(scenario, seed=1)
    assert not torch.equal(a.model.backbone.layers[0].weight, b.model.backbone.layers[0].weight)
    b.memory.replace(a.memory.rows())
    for method in (a, b):
        torch.manual_seed(7)
        method.after_task(views[1].task, views[1])
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = a.memory.rows()
    b.memory.replace(MemoryRows(rows.raw.flip(3), rows.targets, rows.task_ids))
    torch.manual_seed(7)
    b.after_task(views[1].task, views[1])
    assert not torch.equal(b.model.backbone.layers[0].weight, a.model.backbone.layers[0].weight)


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_predictions_reach_the_seen_classes_only_and_fit_the_memory(scenario):
    gdumb = make(scenario, epochs=60, lr=0.1)
    views = [view(0, scenario, [0, 1] * 6), view(1, scenario, [0, 1] * 6)]
    stream(gdumb, views, 0)
    gdumb.after_task(views[0].task, views[0])
    gdumb.model.eval()
    assert gdumb.predict(views[0].inputs(slice(None)), 0).shape[1] == 2
    stream(gdumb, views, 1)
    gdumb.after_task(views[1].task, views[1])
    gdumb.model.eval()
    widths = [gdumb.predict(v.inputs(slice(None)), t).shape[1] for t, v in enumerate(views)]
    assert widths == ([4, 4] if scenario == "class" else [2, 2])
    rows = gdumb.memory.rows()
    for t in (0, 1):
        mine = rows.task_ids == t
        predicted = gdumb.predict(gdumb.inputs(rows)[mine], t).argmax(1)
        assert (predicted == (rows.targets - gdumb.offsets(rows.task_ids))[mine]).float().mean() >= 0.75


def test_the_logs_and_a_diverged_fit(tiny, tmp_path):
    cfg = tiny(method="gdumb", memory={"size": 60, "batch_size": 16}, gdumb={"epochs": 2})
    run_dir, _ = lifelong.run(cfg)
    records = store.read_metrics(run_dir)
    assert all(r["train_loss"] == 0.0 for r in records if r["event"] == "epoch")
    tasks = [r["gdumb"] for r in records if r["event"] == "task"]
    assert [sum(t["memory_counts"]) for t in tasks] == [60, 60, 60] and all(t["fit_loss"] > 0 for t in tasks)
    with pytest.raises(UserError, match="diverged"):
        lifelong.run(tiny(method="gdumb", out=str(tmp_path / "nan"), memory={"size": 60},
                          gdumb={"lr": 1e30, "clip": None, "epochs": 2}))


def test_gdumb_keeps_old_classes_where_fine_tuning_forgets_them(tiny, tmp_path):
    """Class-incremental quickstart, 3 tasks: fine-tuning keeps nothing of tasks 1 and 2."""
    setup = {"data": {"scenario": "class", "max_tasks": 3, "train_fraction": 0.3}, "train": {"epochs": 1}}
    _, naive = lifelong.run(tiny(out=str(tmp_path / "naive"), **setup))
    _, gdumb = lifelong.run(tiny(method="gdumb", out=str(tmp_path / "gdumb"), memory={"size": 200, "batch_size": 16},
                                 **setup))
    def old(r):  # tasks 1 and 2 after task 3
        return sum(r["acc_matrix"][-1][:-1]) / 2

    assert old(naive) < 0.25 and old(gdumb) > old(naive) + 0.3, (old(naive), old(gdumb))
    assert gdumb["acc"] > naive["acc"] + 0.15, (naive["acc"], gdumb["acc"])
