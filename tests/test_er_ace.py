"""ER-ACE: the asymmetric cross-entropy against hand computations, when the mask applies, the whole loss of a step
against an independent computation, the scenarios it serves, and a real class-incremental run beating naive."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong.config import TrainConfig
from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import Batch, TaskView
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError
from lifelong.methods.er_ace import ERACE, ace_mask, asymmetric_cross_entropy
from lifelong.models import build_backbone
from lifelong.models.heads import Network

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hand_ce(logits, targets, kept):
    """Mean over rows of −z_y + log Σ_{c kept} exp z_c, in plain Python."""
    total = 0.0
    for z, y in zip(logits.tolist(), targets.tolist()):
        total += -z[y] + math.log(sum(math.exp(z[c]) for c in kept))
    return total / len(targets)


LOGITS = torch.tensor([[0.3, -1.2, 2.0, 0.5, -0.4], [1.5, 0.1, -0.7, 0.9, 0.2], [-0.2, 0.8, 0.4, -1.1, 1.3]])


def test_the_masked_loss_is_the_cross_entropy_over_the_present_classes():
    logits, y = LOGITS[:, :3], torch.tensor([1, 2, 2])  # outputs of classes 0..2; the stream has shown up to 2
    keep = ace_mask(logits, y, torch.tensor(2))
    assert keep.tolist() == [False, True, True]
    loss = asymmetric_cross_entropy(logits, y, keep)
    assert loss.item() == pytest.approx(hand_ce(logits, y, [1, 2]), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)


def test_classes_the_stream_has_not_reached_stay_unmasked():
    # classes 0..4 reachable, the stream has shown up to class 2: 3 and 4 stay, as does 2 (the authors' `max:`)
    y = torch.tensor([1, 1, 1])
    keep = ace_mask(LOGITS, y, torch.tensor(2))
    assert keep.tolist() == [False, True, True, True, True]
    assert asymmetric_cross_entropy(LOGITS, y, keep).item() == pytest.approx(hand_ce(LOGITS, y, [1, 2, 3, 4]), rel=1e-6)


def test_with_every_class_present_it_is_the_plain_cross_entropy():
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    logits = torch.cat([LOGITS, LOGITS])
    keep = ace_mask(logits, y, torch.tensor(4))
    assert keep.all()
    loss = asymmetric_cross_entropy(logits, y, keep)
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    assert loss.item() == pytest.approx(hand_ce(logits, y, range(5)), rel=1e-6)


# --- the method ---

def view(task_id, labels, offset, seed=0):
    g = torch.Generator().manual_seed(seed + 10 * task_id)
    labels = torch.tensor(labels)
    arrays = ImageArrays(torch.randint(0, 256, (len(labels), 1, 3, 3), dtype=torch.uint8, generator=g), labels)
    task = Task(task_id, f"t{task_id}", [0, 1], ["a", "b"], arrays, arrays, mean=(0.5,), std=(0.3,),
                label_offset=offset)
    return TaskView(task, arrays, torch.device("cpu"))


def make(scenario="class", task_free=False):
    torch.manual_seed(0)

    def build():
        return Network(build_backbone("mlp", (1, 3, 3), hidden=[6]), scenario, [2, 2])

    params = ERACE.Combined(task_free=task_free, memory={"size": 8, "batch_size": 8})
    return ERACE(build, params, TrainConfig(optimizer="sgd", lr=0.5))


def batch_of(v, index):
    raw = v.rows(index)
    return Batch(v.prepare(raw), v.targets[index], v.task.id, raw, index)


@pytest.mark.parametrize("scenario", ["class", "task"])
@pytest.mark.parametrize("task_free", [False, True])
def test_a_step_takes_the_masked_incoming_loss_plus_the_replayed_loss(scenario, task_free):
    m = make(scenario, task_free)
    offset = 2 if scenario == "class" else 0
    v0, v1 = view(0, [0, 1] * 4, 0), view(1, [1, 0, 0, 0, 1, 0], offset)
    t0, t1 = SimpleNamespace(id=0), SimpleNamespace(id=1)
    m.before_task(t0)
    m.training_views(t0, [v0])
    first = batch_of(v0, torch.tensor([1, 3, 5]))  # class 1 only: task-free masks class 0 (below the largest seen)
    twin = copy.deepcopy(m.model)
    loss = m.train_batch(first)
    kept = [1] if task_free else [0, 1]
    assert loss.item() == pytest.approx(hand_ce(twin(first.inputs, 0).detach(), first.targets, kept), rel=1e-5)
    m.train_batch(batch_of(v0, torch.tensor([0, 2, 4, 6, 7])))  # the memory (size 8) now holds task 0's 8 rows
    m.after_task(t0, v0)
    m.before_task(t1)
    m.training_views(t1, [v0, v1])
    # the task's larger class first: its smaller one, though not shown yet, is masked (it lies below the largest
    # class shown); later batches keep that largest class too (the authors' `mask[:, seen_so_far.max():] = 1`)
    for index, kept in ((torch.tensor([0]), [offset + 1]),
                        (torch.tensor([1, 2, 3]), [offset, offset + 1]),
                        (torch.tensor([4, 5]), [offset, offset + 1])):
        b = batch_of(v1, index)
        twin = copy.deepcopy(m.model)
        x_mem, y_mem = m.inputs(m.memory.rows()), m.memory.targets[: len(m.memory)]  # all 8 rows get replayed
        incoming = twin(b.inputs, 1)
        expected = hand_ce(incoming.detach(), b.targets, kept)
        replayed = F.cross_entropy(twin(x_mem, m.memory.task_ids[: len(m.memory)]), y_mem)
        total = F.cross_entropy(incoming.masked_fill(~keep_of(incoming, kept), float("-inf")), b.targets) + replayed
        total.backward()
        loss = m.train_batch(b)
        assert loss.item() == pytest.approx(expected + replayed.item(), rel=1e-5)
        for p, q in zip(m.model.parameters(), twin.parameters()):  # the same SGD step as the sum's gradient
            if q.grad is not None:
                assert torch.allclose(p.detach(), q.detach() - 0.5 * q.grad, atol=1e-6)


def keep_of(logits, kept):
    keep = torch.zeros(logits.shape[1], dtype=torch.bool)
    keep[kept] = True
    return keep


def test_domain_incremental_is_refused():
    m = make("class")
    with pytest.raises(UserError, match="class and task"):
        m.check_benchmark(Benchmark("b", "domain", []))


# --- a real run ---

def test_er_ace_beats_naive_class_incremental(tiny):
    common = {"data": {"scenario": "class"}, "train": {"optimizer": "sgd", "lr": 0.05}}
    _, naive = lifelong.run(tiny(method="naive", **common))
    _, ace = lifelong.run(tiny(method="er-ace", memory={"size": 200}, **common))
    assert ace["acc"] > naive["acc"] + 0.2, (ace["acc"], naive["acc"])
