"""ER and DER: the step is the objective of the paper on the rows it names, DER stores the logits the model gave,
bad memory settings are one-line errors, and replay beats fine-tuning where fine-tuning fails."""

import copy

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong.cli import main
from lifelong.config import TrainConfig, build_config
from lifelong.data.batches import Stream
from lifelong.errors import UserError
from lifelong.methods.der import DERPlusPlus
from lifelong.methods.er import ER
from lifelong.methods.naive import Naive
from lifelong.models import build_backbone
from lifelong.models.heads import Network

from conftest import make_view

CPU = torch.device("cpu")


def network(dropout=0.0):
    torch.manual_seed(0)
    return Network(build_backbone("mlp", (1, 3, 3), hidden=[6], dropout=dropout), "class", [2, 2])


def make(cls, memory=None, dropout=0.0, **params):
    torch.manual_seed(0)
    memory = memory or {"size": 16, "batch_size": 4}
    method = cls(lambda: network(dropout), cls.Combined(memory=memory, **params), TrainConfig(optimizer="sgd", lr=0.1))
    views = [make_view(0, n=12), make_view(1, n=12)]
    for t, view in enumerate(views):  # class-incremental targets: task t's classes are 2t, 2t + 1
        view.targets = view.targets + 2 * t
    return method, views


def batches(view, size=4, seed=0):
    return list(Stream([view], size, torch.Generator().manual_seed(seed)).epoch())


def learn(method, views, t, size=4):
    """Task ``t`` begun and trained for one epoch (earlier tasks' views seen), not ended."""
    method.training_views(views[t].task, views[: t + 1])
    method.before_task(views[t].task)
    for batch in batches(views[t], size):
        method.train_batch(batch)


def test_an_er_step_is_a_plain_step_on_the_incoming_and_replayed_rows():
    er, views = make(ER)
    learn(er, views, 0)
    er.training_views(views[1].task, views)
    er.before_task(views[1].task)
    naive = Naive(network, Naive.Params(), er.train_config)
    naive.model.load_state_dict(er.model.state_dict())
    naive.before_task(views[1].task)
    batch = batches(views[1])[0]
    generator = copy.deepcopy(er.memory.generator)
    replayed = er.memory.rows(torch.randperm(len(er.memory), generator=generator)[:4])  # what ER will draw
    er.train_batch(batch)
    x = torch.cat([batch.inputs, er.inputs(replayed)])
    naive.train_step(x, torch.cat([batch.targets, replayed.targets]),
                     torch.cat([batch.sample_task_ids(), replayed.task_ids]))
    for (name, a), b in zip(er.model.named_parameters(), naive.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_memory_policy_overrides_the_methods_own(tiny):
    """ER keeps a reservoir unless ``memory.policy`` says balanced; then every class held gets an equal share; an
    unset policy leaves the config's fingerprint as it was (the key is hashed only when set)."""
    def filled(policy):
        memory = {"size": 8, "batch_size": 4} if policy is None else {"size": 8, "batch_size": 4, "policy": policy}
        er, views = make(ER, memory=memory)
        for t in range(len(views)):
            learn(er, views, t)
        return er.memory

    assert filled(None).policy == "reservoir"
    balanced = filled("balanced")
    counts = torch.bincount(balanced.targets[: len(balanced)], minlength=4)
    assert balanced.policy == "balanced" and counts.tolist() == [2, 2, 2, 2]
    plain = build_config(tiny(method="er", memory={"size": 50}))
    assert build_config(tiny(method="er", memory={"size": 50, "policy": "balanced"})).fingerprint() != plain.fingerprint()
    assert "policy" not in plain.to_dict()["memory"]
    with pytest.raises(UserError, match="memory.policy"):
        build_config(tiny(method="er"), ["memory.policy=fifo"])


def test_er_store_task_end_replays_only_earlier_tasks(tiny):
    """er.store task_end: nothing enters the memory during a task; at its end the task's rows are offered, so the
    next task's replayed rows all come from it; hidden boundaries are refused in one line."""
    er, views = make(ER, store="task_end")
    learn(er, views, 0)
    assert len(er.memory) == 0
    er.after_task(views[0].task, views[0])
    assert len(er.memory) == 12 and set(er.memory.task_ids[:12].tolist()) == {0}
    learn(er, views, 1)
    assert len(er.memory) == 12 and set(er.memory.task_ids[:12].tolist()) == {0}
    with pytest.raises(UserError, match="method er needs task boundaries.*er in its task-free setting"):
        lifelong.run(tiny(method="er", er={"store": "task_end"}, memory={"size": 50},
                          train={"online": True, "boundaries": "hidden"}))


def test_der_store_task_end_keeps_the_logits_of_the_finished_network_in_eval_mode(tiny):
    """der.store task_end: nothing enters during the task; at its end each offered row is stored with the logits
    the finished network gives it in evaluation mode (training mode restored); hidden boundaries are refused."""
    der, views = make(DERPlusPlus, store="task_end", dropout=0.5)  # dropout: eval and train mode differ
    learn(der, views, 0)
    assert len(der.memory) == 0
    der.model.train()
    der.after_task(views[0].task, views[0])
    assert der.model.training and len(der.memory) == 12
    held = der.memory.rows(torch.arange(12))
    by_row = {bytes(r.numpy()): i for i, r in enumerate(views[0].images)}  # which row of the view each slot holds
    index = torch.tensor([by_row[bytes(r.numpy())] for r in held.raw])
    with torch.no_grad():
        in_training = der.model.logits(der.model.features(views[0].inputs(index)), 0, all_classes=True)
        der.model.eval()
        expected = der.model.logits(der.model.features(views[0].inputs(index)), 0, all_classes=True)
    assert expected.shape[1] == 4 and torch.equal(held.logits, expected) and not torch.equal(in_training, expected)
    assert torch.equal(held.targets, views[0].targets[index]) and set(held.task_ids.tolist()) == {0}
    with pytest.raises(UserError, match="method der\\+\\+ needs task boundaries"):
        lifelong.run(tiny(method="der++", **{"der++": {"store": "task_end"}}, memory={"size": 50},
                          train={"online": True, "boundaries": "hidden"}))


def test_der_stores_the_logits_the_model_gave_each_row_over_every_class():
    der, views = make(DERPlusPlus)
    der.training_views(views[0].task, views[:1])
    der.before_task(views[0].task)
    for batch in batches(views[0], size=3):
        before = copy.deepcopy(der.model)
        held = len(der.memory)
        der.train_batch(batch)
        with torch.no_grad():
            expected = before.logits(before.features(batch.inputs), 0, all_classes=True)
        stored = der.memory.rows(torch.arange(held, held + 3))
        assert expected.shape[1] == 4  # both tasks' classes, the later one not reached yet
        assert torch.equal(stored.raw, batch.raw) and torch.allclose(stored.logits, expected, atol=1e-6)


def test_der_loss_is_cross_entropy_plus_alpha_mse_plus_beta_cross_entropy():
    """The DER++ objective, recomputed by hand from the rows it drew."""
    der, views = make(DERPlusPlus, alpha=0.7, beta=0.4)
    learn(der, views, 0)
    batch = batches(views[0], seed=1)[0]
    generator = copy.deepcopy(der.memory.generator)
    first = der.memory.rows(torch.randperm(len(der.memory), generator=generator)[:4])
    second = der.memory.rows(torch.randperm(len(der.memory), generator=generator)[:4])
    model = copy.deepcopy(der.model)
    expected = (F.cross_entropy(model(batch.inputs, 0), batch.targets)
                + 0.7 * F.mse_loss(model.logits(model.features(der.inputs(first)), 0, all_classes=True), first.logits)
                + 0.4 * F.cross_entropy(model(der.inputs(second), 0), second.targets))
    assert torch.allclose(der.train_batch(batch), expected, atol=1e-6)


def test_bad_memory_settings_are_one_line_errors(tiny, capsys):
    with pytest.raises(UserError, match="invalid config value for 'memory.size'"):
        build_config(tiny(method="er"), ["memory.size=0"])
    with pytest.raises(UserError, match=r"memory.size 100000 is larger than the benchmark's training data"):
        lifelong.run(tiny(method="er", memory={"size": 100000}))
    config = tiny(method="der")
    code = main(["run", "--method", "der", "--out", config["out"], "--max-tasks", "2", "--train-fraction", "0.1",
                 "--set", "memory.size=999999", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "set memory.size to at most" in err


@pytest.mark.parametrize("method,params,margin", [("er", {}, 0.3), ("der++", {}, 0.3), ("der", {"alpha": 1.0}, 0.2)])
def test_replay_keeps_old_classes_where_fine_tuning_forgets_them(tiny, tmp_path, method, params, margin):
    """Class-incremental quickstart, 3 tasks: fine-tuning keeps nothing of tasks 1 and 2. DER without its
    cross-entropy term needs a stronger pull (α = 1) on this small data to keep a part of them."""
    setup = dict(data={"scenario": "class", "max_tasks": 3, "train_fraction": 0.3}, train={"epochs": 2})
    _, naive = lifelong.run(tiny(out=str(tmp_path / "naive"), **setup))
    _, replay = lifelong.run(tiny(method=method, out=str(tmp_path / method), memory={"size": 200, "batch_size": 32},
                                  **{method: params}, **setup))
    old = lambda r: sum(r["acc_matrix"][-1][:-1]) / 2  # noqa: E731  (tasks 1 and 2 after task 3)
    assert old(naive) < 0.25 and old(replay) > old(naive) + margin, (old(naive), old(replay))
