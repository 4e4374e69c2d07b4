"""iCaRL: herding picks what an exhaustive greedy search picks, the nearest-mean classifier matches a hand
computation, the distillation targets are the old network's sigmoids, the exemplar sets keep the budget, and
the method beats fine-tuning class-incrementally."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import lifelong
from lifelong.config import TrainConfig
from lifelong.data.batches import Stream
from lifelong.errors import UserError
from lifelong.methods.icarl import ICaRL, class_means, nearest_mean_scores
from lifelong.methods.memory import herding
from lifelong.models import build_backbone
from lifelong.models.heads import Network

from conftest import make_view


# --- herding ---
def greedy_by_enumeration(points, m):
    """Algorithm 4 by brute force in plain Python: normalise, then at step k score every ordered path of k
    distinct points that extends the picks so far by ‖μ − mean of the path‖, and keep the best path."""
    unit = [[v / math.sqrt(sum(u * u for u in p)) for v in p] for p in points]
    mu = [sum(p[j] for p in unit) / len(unit) for j in range(len(unit[0]))]

    def cost(path):
        return math.dist(mu, [sum(unit[i][j] for i in path) / len(path) for j in range(len(mu))])

    best = ()
    for k in range(1, m + 1):
        best = min((q for q in itertools.permutations(range(len(unit)), k) if q[: k - 1] == best), key=cost)
    return list(best)


@pytest.mark.parametrize("seed", range(5))
def test_herding_picks_what_an_exhaustive_greedy_search_picks(seed):
    points = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed)) * 3 + 0.5
    for m in (1, 3, 6):
        assert herding(points, m).tolist() == greedy_by_enumeration(points.tolist(), m)


def test_herding_never_picks_a_row_twice_and_stops_at_the_class_size():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])  # rows 2 and 3 normalise alike
    chosen = herding(points, 10).tolist()
    assert sorted(chosen) == [0, 1, 2, 3] and chosen[0] in (2, 3)  # the mean's direction is (1, 1)
    assert herding(points * 7.0, 3).tolist() == herding(points, 3).tolist()  # L2-normalised first


# --- nearest mean of exemplars ---
def test_nearest_mean_of_exemplars_matches_a_hand_computation():
    features = torch.tensor([[3.0, 4.0], [2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    targets = torch.tensor([0, 0, 1, 1])
    means = class_means(features, targets, 2)
    # class 0: mean of (0.6, 0.8) and (1, 0) = (0.8, 0.4), renormalised; class 1: (-0.5, 0.5), renormalised
    expected = torch.tensor([[0.8, 0.4], [-0.5, 0.5]]) / torch.tensor([[math.sqrt(0.8)], [math.sqrt(0.5)]])
    assert torch.allclose(means, expected, atol=1e-6)
    x = torch.tensor([[1.0, 1.0], [-3.0, 0.5]])
    d = lambda a, b: -math.dist([v / math.hypot(*a) for v in a], b)  # noqa: E731
    hand = torch.tensor([[d(q, mu) for mu in expected.tolist()] for q in x.tolist()])
    assert torch.allclose(nearest_mean_scores(x, means), hand, atol=1e-5)
    assert nearest_mean_scores(x, means).argmax(1).tolist() == [0, 1]


# --- the method on tiny class-incremental views ---
def make(size=16, n=20, tasks=3):
    def network():
        return Network(build_backbone("mlp", (1, 3, 3), hidden=[6]), "class", [2] * tasks)

    torch.manual_seed(0)
    method = ICaRL(network, ICaRL.Combined(memory={"size": size}), TrainConfig(optimizer="sgd", lr=0.1))
    views = [make_view(t, n=n) for t in range(tasks)]
    for t, view in enumerate(views):  # class-incremental targets: task t's classes are 2t, 2t + 1
        view.targets = view.targets + 2 * t
    return method, views


def train(method, views, t, steps=None):
    stream = Stream(method.training_views(views[t].task, views[: t + 1]), 4, torch.Generator().manual_seed(t))
    method.before_task(views[t].task)
    for step, batch in enumerate(stream.epoch()):
        if step == steps:
            return stream
        method.train_batch(batch)
    method.after_task(views[t].task, views[t])
    return stream


def test_the_exemplar_sets_keep_the_budget_m_per_class_and_shrink_to_their_herding_prefix():
    method, views = make(size=16, n=24)
    available = torch.cat([torch.bincount(v.targets - 2 * t, minlength=2) for t, v in enumerate(views)])
    assert available.min() >= 8  # every class has more rows than its first set takes
    before = {}
    for t, m in enumerate([8, 4, 2]):  # 16 // 2, 16 // 4, 16 // 6
        stream = train(method, views, t)
        assert stream.total == len(views[t]) + sum(len(before[c]) for c in range(2 * t))  # task rows + exemplars
        held = method.memory.rows()
        assert len(method.memory) <= 16 and method.memory.class_counts().tolist() == [m] * (2 * t + 2)
        for c in range(2 * t + 2):
            raw = held.raw[held.targets == c]
            if c in before:  # an old set keeps its first m exemplars, in order
                assert torch.equal(raw, before[c][:m])
            else:  # a new set is herding on the task's rows of that class, with the network after the task
                rows = (views[t].targets == c).nonzero().squeeze(1)
                with torch.no_grad():
                    features = method.model.features(views[t].inputs(rows))
                assert torch.equal(raw, views[t].rows(rows[herding(features, m)]))
            before[c] = raw


def test_the_class_means_and_predictions_are_the_nearest_mean_of_exemplars():
    method, views = make()
    for t in range(2):
        train(method, views, t)
    held = method.memory.rows()
    with torch.no_grad():
        phi = F.normalize(method.model.features(torch.cat([views[k].prepare(held.raw[held.task_ids == k])
                                                           for k in range(2)])), dim=1)
        targets = torch.cat([held.targets[held.task_ids == k] for k in range(2)])
        means = torch.stack([F.normalize(phi[targets == c].mean(0), dim=0) for c in range(4)])
        assert torch.allclose(method.means, means, atol=1e-6)
        x = views[2].inputs(slice(None))
        f = F.normalize(method.model.features(x), dim=1)
        hand = -torch.stack([(f - mu).norm(dim=1) for mu in means], dim=1)
        assert torch.allclose(method.predict(x, 0), hand, atol=1e-5)


def test_the_loss_distils_the_old_networks_sigmoids_and_one_hot_new_classes():
    method, views = make()
    train(method, views, 0)
    old = copy.deepcopy(method.model)
    stream = train(method, views, 1, steps=3)  # the model has moved; the targets must still be the old network's
    batch = next(iter(stream.epoch()))
    x, y = batch.inputs, batch.targets
    with torch.no_grad():
        q = torch.sigmoid(old(x, 0))  # the old network's outputs for its 2 classes
        targets = method.targets(x, y, 4)
    assert not torch.allclose(method.model(x, 0)[:, :2], old(x, 0))
    assert torch.allclose(targets[:, :2], q, atol=1e-6)
    assert torch.equal(targets[:, 2:], F.one_hot(y, 4)[:, 2:].float())
    p = torch.sigmoid(method.model(x, 1))
    hand = -(targets * p.log() + (1 - targets) * (1 - p).log()).sum(1).mean()
    assert torch.allclose(method.task_loss(x, y, batch.task_ids), hand, atol=1e-5)


# --- runs ---
def test_icarl_serves_only_class_incremental_runs_with_an_exemplar_per_class(tiny):
    with pytest.raises(UserError, match="serves only class-incremental scenarios, not task"):
        lifelong.run(tiny(method="icarl"))
    with pytest.raises(UserError, match="set memory.size to at least 6"):
        lifelong.run(tiny(method="icarl", data={"scenario": "class"}, memory={"size": 5}))


def test_icarl_keeps_old_classes_where_fine_tuning_forgets_them(tiny, tmp_path):
    """Class-incremental quickstart, 3 tasks: fine-tuning keeps nothing of tasks 1 and 2."""
    setup = dict(data={"scenario": "class", "max_tasks": 3, "train_fraction": 0.3}, train={"epochs": 2})
    _, naive = lifelong.run(tiny(out=str(tmp_path / "naive"), **setup))
    _, icarl = lifelong.run(tiny(method="icarl", out=str(tmp_path / "icarl"), memory={"size": 200}, **setup))
    old = lambda r: sum(r["acc_matrix"][-1][:-1]) / 2  # noqa: E731  (tasks 1 and 2 after task 3)
    assert old(naive) < 0.25 and old(icarl) > old(naive) + 0.3, (old(naive), old(icarl))
    assert icarl["acc"] > naive["acc"] + 0.2, (naive["acc"], icarl["acc"])
