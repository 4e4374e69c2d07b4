"""Learner: a hand-written loop gives lifelong run's results; every method works through it; save/load; bad input."""

import pytest
import torch
from torch import nn

from lifelong import loop
from lifelong.config import build_config
from lifelong.data.batches import TaskView
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.learner import Learner
from lifelong.methods import METHODS

from test_method_contract import contract_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
CPU = torch.device("cpu")


def hand_written_loop(cfg):
    """What a user writes: the benchmark's data, a shuffled pass per epoch, end_task, evaluation on every task."""
    benchmark = build_benchmark(cfg.data, cfg.seed)
    learner = Learner.create(cfg.method, cfg.model.name, input_shape=benchmark.input_shape,
                             classes=benchmark.class_counts, scenario=benchmark.scenario, config=cfg)
    order = torch.Generator().manual_seed(cfg.seed)
    tests = [TaskView(t, t.test, CPU) for t in benchmark.tasks]

    def accuracy(view):
        return float((learner.predict(view.inputs(slice(None)), view.task.id).argmax(1) == view.targets).float().mean())

    rows = []
    for task in benchmark.tasks:
        train = TaskView(task, task.train, CPU)
        for epoch in range(cfg.train.epochs):
            if epoch:
                learner.next_epoch()
            for index in torch.randperm(len(train), generator=order).split(cfg.train.batch_size):
                learner.learn(train.inputs(index), train.targets.index_select(0, index), task=task.id)
        learner.end_task(train.inputs(slice(None)), train.targets)
        rows.append([accuracy(v) for v in tests])
    return rows


@pytest.mark.parametrize("method, scenario", [("ewc", "task"), ("er", "class"), ("lwf", "task"), ("der++", "class")])
def test_a_hand_written_loop_equals_lifelong_run(tmp_path, method, scenario):
    raw = contract_config(tmp_path, method, "runs")
    raw["data"]["scenario"] = scenario
    cfg = build_config(raw)
    _, results = loop.run(cfg)
    rows = hand_written_loop(cfg)
    flat = [a for row in results["acc_matrix"] for a in row]
    assert [a for row in rows for a in row] == pytest.approx(flat, abs=1e-6)
    assert results["acc_matrix"][0][0] > 0.6  # it learnt: the equality is not between two untrained networks


class Tiny(nn.Module):
    """A user's own network: 1×28×28 → 12 features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=3)
        self.fc = nn.Linear(4 * 8 * 8, 12)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def stream(n_tasks=2, per_task=32, seed=0):
    """Two class-incremental tasks of random 1×28×28 inputs with labels 2t, 2t+1."""
    g = torch.Generator().manual_seed(seed)
    for t in range(n_tasks):
        x = torch.rand(per_task, 1, 28, 28, generator=g)
        y = torch.randint(2 * t, 2 * t + 2, (per_task,), generator=g)
        yield t, x, y


def method_config(tmp_path, name):
    raw = contract_config(tmp_path, name, "runs")
    return {k: v for k, v in raw.items() if k not in ("data", "out")}


def test_er_storing_at_task_end_gets_the_tasks_rows_through_the_learner(tmp_path):
    """er.store task_end is not task-free: the Learner keeps a task's rows, and its end fills the memory."""
    config = {**method_config(tmp_path, "er"), "er": {"store": "task_end"}, "memory": {"size": 20, "batch_size": 4}}
    learner = Learner.create("er", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], scenario="class", config=config,
                             device="cpu")
    for t, x, y in stream():
        for part in range(0, 32, 8):
            learner.learn(x[part:part + 8], y[part:part + 8], task=t)
        assert len(learner.method.memory) == (0 if t == 0 else 20)
        learner.end_task()
        held = learner.method.memory.task_ids[: len(learner.method.memory)]
        assert len(held) == 20 and (t == 1 or set(held.tolist()) == {0})


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"joint"}))
def test_every_method_learns_through_the_learner(tmp_path, name):
    scenario = "task" if "task" in METHODS[name].scenarios else METHODS[name].scenarios[0]
    model = None if name in ("gs-mask", "mark") or "slni" in name else Tiny()  # they need their own backbones
    shape = (3, 32, 32) if name == "mark" else (1, 28, 28)
    learner = Learner.create(name, model, input_shape=shape, classes=[2, 2], scenario=scenario,
                             config=method_config(tmp_path, name), device="cpu")
    for t, x, y in stream():
        x = torch.rand(32, *shape) if name == "mark" else x
        y = y - 2 * t if scenario == "task" else y
        if name == "mark":
            learner.begin_task(x, y, task=t)
        for part in range(0, 32, 8):
            loss = learner.learn(x[part:part + 8], y[part:part + 8], task=t)
            assert isinstance(loss, float) and loss == loss  # a number, not NaN
        learner.end_task()
    scores = learner.predict(torch.rand(5, *shape), task=1)
    assert scores.shape[0] == 5 and torch.isfinite(scores).all()


def test_joint_and_mark_say_what_they_need(tmp_path):
    learner = Learner.create("joint", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], device="cpu")
    with pytest.raises(UserError, match="use lifelong run"):
        learner.learn(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]))
    learner = Learner.create("mark", input_shape=(3, 32, 32), classes=[2, 2], scenario="task",
                             config=method_config(tmp_path, "mark"), device="cpu")
    with pytest.raises(UserError, match=r"begin_task\(x, y\)"):
        learner.learn(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("name", ["er", "ewc", "icarl"])
def test_save_and_load_continue_exactly(tmp_path, name):
    """Saved mid-task and loaded into a new process's objects, the learner ends where an uninterrupted one does."""
    config = method_config(tmp_path, name)

    def fresh():
        return Learner.create(name, None, input_shape=(1, 28, 28), classes=[2, 2], scenario="class", config=config,
                              device="cpu")

    batches = [(t, x[i:i + 8], y[i:i + 8]) for t, x, y in stream() for i in range(0, 32, 8)]
    whole = fresh()
    for t, x, y in batches:
        whole.learn(x, y, task=t)
    whole.end_task()

    first = fresh()
    for t, x, y in batches[:6]:  # into the second task
        first.learn(x, y, task=t)
    first.save(tmp_path / "learner.pt")
    loaded = Learner.load(tmp_path / "learner.pt")
    for t, x, y in batches[6:]:
        loaded.learn(x, y, task=t)
    loaded.end_task()
    probe = torch.rand(6, 1, 28, 28)
    assert torch.equal(whole.predict(probe), loaded.predict(probe))


def test_a_learner_around_your_module_is_loaded_with_it(tmp_path):
    learner = Learner.create("naive", Tiny(), input_shape=(1, 28, 28), classes=10, device="cpu")
    for _, x, y in stream():
        learner.learn(x, y)
    learner.save(tmp_path / "mine.pt")
    with pytest.raises(UserError, match="pass it again"):
        Learner.load(tmp_path / "mine.pt")
    loaded = Learner.load(tmp_path / "mine.pt", model=Tiny())
    probe = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded.predict(probe), learner.predict(probe))
    (tmp_path / "bad.pt").write_bytes(b"not a learner")
    with pytest.raises(UserError, match="can be loaded safely"):
        Learner.load(tmp_path / "bad.pt")


def test_features_from_a_table_and_a_user_module_train_to_high_accuracy():
    """Float feature vectors (N, D), a class-incremental stream of 2 tasks, a linear user module: it learns."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=g) * 3
    learner = Learner.create("er", nn.Linear(6, 8), input_shape=(6,), classes=[2, 2],
                             config={"train": {"lr": 0.01}, "memory": {"size": 40, "batch_size": 16}}, device="cpu")
    for t in range(2):
        for _ in range(60):
            y = torch.randint(2 * t, 2 * t + 2, (16,), generator=g)
            learner.learn(centres[y] + torch.randn(16, 6, generator=g), y, task=t)
    y = torch.arange(4).repeat(25)
    accuracy = (learner.predict(centres[y] + torch.randn(100, 6, generator=g)).argmax(1) == y).float().mean()
    assert accuracy > 0.85


@pytest.mark.parametrize("call, message", [
    (lambda l: l.learn(torch.rand(4, 1, 27, 28), torch.zeros(4, dtype=torch.long)), "input_shape"),
    (lambda l: l.learn(torch.rand(4, 1, 28, 28), torch.zeros(4)), "labels must be integers"),
    (lambda l: l.learn(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])), "must lie in 0..1"),
    (lambda l: l.learn(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), task=1), "arrive in order"),
    (lambda l: l.end_task(), "no task is being learnt"),
])
def test_bad_input_is_one_line(call, message):
    learner = Learner.create("naive", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], device="cpu")
    with pytest.raises(UserError, match=message):
        call(learner)


def _learnt_once() -> Learner:
    learner = Learner.create("er", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], scenario="task", device="cpu",
                             config={"memory": {"size": 8, "batch_size": 4}})
    learner.learn(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]), task=0)
    return learner


X, Y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
NAN = X.clone().index_put_((torch.tensor([2]), torch.tensor([0]), torch.tensor([3]), torch.tensor([3])),
                           torch.tensor(float("nan")))


@pytest.mark.parametrize("call, message", [  # each was a raw torch/Python error or a silent wrong result before
    (lambda l: l.learn(NAN, Y, task=0), r"NaN or infinite values \(row 2 is the first\)"),
    (lambda l: l.learn(X.clone().fill_(float("inf")), Y, task=0), "NaN or infinite"),
    (lambda l: l.learn(X[:0], Y[:0], task=0), "at least one row"),
    (lambda l: l.learn(X, Y.bool(), task=0), "labels must be integers"),
    (lambda l: l.learn(X, Y, task=0.5), "a task id is a non-negative integer, got 0.5"),
    (lambda l: l.predict(X.numpy(), task=0), "inputs must be a torch tensor, not ndarray"),
    (lambda l: l.predict(X[0], task=0), "do not match the learner's input_shape"),
    (lambda l: l.predict(NAN, task=0), "NaN or infinite"),
    (lambda l: l.predict(X, task=2), r"task 2 is not one of this learner's tasks so far \(0..1\)"),
    (lambda l: l.predict(X, task=-1), "non-negative integer, got -1"),
    (lambda l: l.end_task(X, Y + 7), "must lie in 0..1"),
    (lambda l: l.save(3), "save needs a file path"),
])
def test_what_learn_predict_and_end_task_are_given_is_checked(call, message):
    learner = _learnt_once()
    before = [p.detach().clone() for p in learner.model.parameters()]
    with pytest.raises(UserError, match=message):
        call(learner)
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))  # nothing was trained
    assert len(learner.method.memory) <= 4 and torch.isfinite(learner.method.memory.raw[:4].float()).all()
    assert learner.predict(X.to(torch.uint8), task=0).shape == (4, 2)  # other dtypes are still converted


def test_classes_and_input_shape_may_be_arrays():
    import numpy as np

    learner = Learner.create("naive", Tiny(), input_shape=np.array([1, 28, 28]), classes=torch.tensor([2, 2]),
                             device="cpu")
    assert learner.input_shape == (1, 28, 28) and learner.classes == [2, 2]
    assert Learner.create("naive", Tiny(), input_shape=(1, 28, 28), classes=np.int64(3), device="cpu").classes == 3


def test_a_stream_with_a_shared_head_predicts_any_task():
    """Class-incremental with classes as one number: one head for the stream, so any task id scores with it."""
    learner = Learner.create("naive", Tiny(), input_shape=(1, 28, 28), classes=4, scenario="class", device="cpu")
    learner.learn(X, Y, task=0)
    assert learner.predict(X, task=3).shape == (4, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": lambda v: v}, "model must be an nn.Module or a backbone's name, not function"),
    ({"classes": "12"}, "classes must be a number of classes"),
    ({"classes": [2.5, 2]}, "classes must be a number of classes"),
    ({"classes": [[0, 1], [2, 3]]}, "classes must be a number of classes"),
    ({"input_shape": 784}, "input_shape must be one input's shape"),
    ({"input_shape": "12"}, "input_shape must be one input's shape"),
    ({"model": Tiny().double()}, r"parameters are float64.*pass model.float\(\)"),
    ({"config": [1, 2]}, "config must be a Config, a dict"),
])
def test_what_create_is_given_is_checked(kwargs, message):
    arguments = {"model": Tiny(), "input_shape": (1, 28, 28), "classes": [2, 2], "device": "cpu", **kwargs}
    with pytest.raises(UserError, match=message):
        Learner.create("naive", **arguments)


def test_a_batch_of_one_row_is_refused_where_batchnorm_trains_and_loads_are_checked(tmp_path):
    learner = Learner.create("naive", nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8)),
                             input_shape=(4,), classes=[2, 2], device="cpu", sets="train.lr=0.01")
    assert learner.cfg.train.lr == 0.01  # one --set as a string
    with pytest.raises(UserError, match="a batch of one row cannot train the model's BatchNorm"):
        learner.learn(torch.rand(1, 4), torch.tensor([1]))
    learner.learn(torch.rand(2, 4), torch.tensor([0, 1]))
    assert learner.predict(torch.rand(1, 4)).shape == (1, 2)  # evaluation mode: one row is fine
    with pytest.raises(UserError, match="a batch of one row cannot train"):  # after predict too
        learner.learn(torch.rand(1, 4), torch.tensor([1]))
    conv = Learner.create("naive", nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), input_shape=(1, 8, 8),
                          classes=[2, 2], device="cpu")
    assert conv.learn(torch.rand(1, 1, 8, 8), torch.tensor([1])) > 0  # 36 values per channel: BatchNorm trains
    torch.save({"format": "lifelong-learner/1"}, tmp_path / "tag.pt")
    with pytest.raises(UserError, match="is not a saved lifelong learner"):
        Learner.load(tmp_path / "tag.pt", model=Tiny())
    named = Learner.create("naive", "mlp", input_shape=(1, 28, 28), classes=[2, 2], device="cpu")
    named.save(tmp_path / "named.pt")
    with pytest.raises(UserError, match="holds backbone 'mlp', not a module of yours"):
        Learner.load(tmp_path / "named.pt", model=Tiny())


def test_a_module_that_refuses_the_shape_is_named():
    with pytest.raises(UserError, match="cannot take inputs of shape"):
        Learner.create("naive", Tiny(), input_shape=(3, 32, 32), classes=2, device="cpu")


def test_a_refused_task_or_label_leaves_the_current_task_running():
    """A wrong next task id, or labels that do not fit the next task, are refused before the current task ends:
    the learner carries on with it as if the call had not been made."""
    learner = Learner.create("ewc", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], scenario="class", device="cpu")
    learner.learn(X, Y % 2, task=0)
    with pytest.raises(UserError, match="the next task is 1, not 5"):
        learner.learn(X, Y % 2, task=5)
    with pytest.raises(UserError, match="labels of task 1 must lie in 0..3"):
        learner.learn(X, Y % 2 + 10, task=1)
    with pytest.raises(UserError, match="the next task is 1, not 3"):
        learner.begin_task(task=3)
    assert learner.task.id == 0 and learner.tasks_done == 0 and not learner.method.consolidated
    learner.learn(X, Y % 2, task=0)  # still task 0
    learner.learn(X, Y % 2 + 2, task=1)
    assert learner.task.id == 1 and len(learner.method.consolidated) == 1


@pytest.mark.parametrize("name", ["er", "der", "gdumb"])
def test_inputs_that_carry_a_graph_are_learnt_without_it(name):
    """Rows from an upstream module run with autograd: the memory keeps them detached (no graph replayed twice)."""
    learner = Learner.create(name, Tiny(), input_shape=(1, 28, 28), classes=[2, 2], scenario="class", device="cpu")
    upstream = torch.rand(4, 1, 28, 28, requires_grad=True) * 1.0
    for _ in range(3):
        learner.learn(upstream, Y % 2, task=0)
    learner.end_task()


def test_gdumb_saved_in_a_later_pass_continues_exactly(tmp_path):
    """GDumb stores only the first pass over a task; a learner saved during the second pass does not store it again."""
    def fresh():
        return Learner.create("gdumb", Tiny(), input_shape=(1, 28, 28), classes=[2, 2], scenario="class",
                              device="cpu", config={"gdumb": {"epochs": 1}})

    def first_pass(learner):
        learner.learn(X, Y % 2, task=0)
        learner.next_epoch()
        learner.learn(X, Y % 2, task=0)

    whole = fresh()
    first_pass(whole)
    saved = fresh()
    first_pass(saved)
    saved.save(tmp_path / "g.pt")
    loaded = Learner.load(tmp_path / "g.pt", model=Tiny())
    for learner in (whole, loaded):
        torch.manual_seed(0)  # the fit at end_task draws from torch's global generator, as a new process would
        learner.learn(X, Y % 2, task=0)
        learner.end_task()
    assert whole.method.memory.seen == loaded.method.memory.seen == len(X)
    assert torch.equal(whole.predict(X, task=0), loaded.predict(X, task=0))


def test_gdumb_learns_a_domain_stream_of_one_class_count():
    """classes=2 as one number, domain-incremental: any number of tasks, each its own (task, class) pairs."""
    learner = Learner.create("gdumb", Tiny(), input_shape=(1, 28, 28), classes=2, scenario="domain", device="cpu",
                             config={"gdumb": {"epochs": 1}})
    for task in range(4):
        learner.learn(X, Y % 2, task=task)
    learner.end_task()
    held = learner.method.memory.rows()
    assert sorted(set(held.task_ids.tolist())) == [0, 1, 2, 3]
