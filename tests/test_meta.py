"""The meta-learning helper: MAML, first-order MAML and Reptile against closed forms on linear regression, frozen
entries held in the inner loop, and the few-shot episode sampler."""

import pytest
import torch

from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task
from lifelong.methods.meta import MiniTask, MiniTaskSampler, adapt, meta_gradient


def squared_error(params, x, y):
    return ((x @ params["w"] + params["b"] - y) ** 2).mean()


def by_hand(theta, mask, x, y, steps, lr):
    """Inner SGD on L = mean((X̃θ − y)²), X̃ = [X, 1]: θ ← Aθ + c with A = I − (2lr/n) M X̃ᵀX̃, c = (2lr/n) M X̃ᵀy.
    Returns θ_k and dθ_k/dθ = A^k."""
    xt = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    m = torch.diag(mask.to(x.dtype))
    a = torch.eye(len(theta), dtype=x.dtype) - 2 * lr / len(x) * m @ xt.T @ xt
    c = 2 * lr / len(x) * m @ xt.T @ y
    jacobian = torch.eye(len(theta), dtype=x.dtype)
    for _ in range(steps):
        theta, jacobian = a @ theta + c, a @ jacobian
    return theta, jacobian


def gradient_by_hand(theta, x, y):
    xt = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    return 2 / len(x) * xt.T @ (xt @ theta - y)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)

    def episode():
        return MiniTask(*(t.double() for t in (torch.randn(6, 3, generator=g), torch.randn(6, generator=g),
                                               torch.randn(4, 3, generator=g), torch.randn(4, generator=g))))

    params = {"w": torch.randn(3, generator=g, dtype=torch.float64), "b": torch.randn(1, generator=g,
                                                                                        dtype=torch.float64)}
    masks = {"w": torch.tensor([True, False, True]), "b": None}  # w[1] is frozen
    return params, masks, [episode(), episode()]


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile"])
def test_meta_gradient_matches_the_closed_form(problem, algo):
    params, masks, episodes = problem
    theta = torch.cat([params["w"], params["b"]])
    mask = torch.tensor([True, False, True, True])
    steps, lr = 3, 0.1
    expected = torch.zeros_like(theta)
    for e in episodes:
        if algo == "reptile":
            adapted, _ = by_hand(theta, mask, torch.cat([e.x_adapt, e.x_eval]), torch.cat([e.y_adapt, e.y_eval]),
                                 steps, lr)
            expected += theta - adapted
        else:
            adapted, jacobian = by_hand(theta, mask, e.x_adapt, e.y_adapt, steps, lr)
            outer = gradient_by_hand(adapted, e.x_eval, e.y_eval)
            expected += jacobian.T @ outer if algo == "maml" else outer
    expected /= len(episodes)
    got = meta_gradient(squared_error, params, masks, episodes, algo, steps, lr)
    torch.testing.assert_close(torch.cat([got["w"], got["b"]]), expected, rtol=1e-10, atol=1e-12)
    if algo == "reptile":
        assert got["w"][1] == 0  # a frozen entry never moves in the inner loop
    else:
        assert got["w"][1] != 0  # ... but MAML's outer gradient still sees it: the caller masks the outer step


def test_second_order_terms_matter(problem):
    params, masks, episodes = problem
    maml = meta_gradient(squared_error, params, masks, episodes, "maml", 3, 0.1)
    first = meta_gradient(squared_error, params, masks, episodes, "fomaml", 3, 0.1)
    assert not torch.allclose(maml["w"], first["w"])


def test_adapt_holds_frozen_entries_exactly(problem):
    params, masks, episodes = problem
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    adapted = adapt(squared_error, leaves, masks, episodes[0].x_adapt, episodes[0].y_adapt, 4, 0.5, False)
    assert adapted["w"][1] == params["w"][1]
    assert adapted["w"][0] != params["w"][0] and adapted["b"] != params["b"]


def sample_view(classes=4, per_class=7):
    """Images whose pixels hold their sample index, so a drawn input tells which sample it was."""
    n = classes * per_class
    labels = torch.arange(n) % classes
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    arrays = ImageArrays(images, labels)
    task = Task(0, "t", list(range(classes)), [str(c) for c in range(classes)], arrays, arrays)
    return TaskView(task, arrays, torch.device("cpu"))


@pytest.mark.parametrize("ways,shots,expected_ways", [(3, 4, 3), (5, 6, 4), (2, 10, 2)])
def test_episodes_are_few_shot_with_fresh_labels(ways, shots, expected_ways):
    view = sample_view()
    sampler = MiniTaskSampler(view, ways, shots)
    torch.manual_seed(0)
    seen_orders = set()
    for _ in range(20):
        e = sampler.sample()
        half = shots // 2
        assert e.y_adapt.bincount().tolist() == [half] * expected_ways
        assert e.y_eval.bincount().tolist() == [shots - half] * expected_ways
        source = {}
        for x, y in ((e.x_adapt, e.y_adapt), (e.x_eval, e.y_eval)):
            index = (x[:, 0, 0, 0] * 255).round().long()
            for k in range(expected_ways):
                original = view.targets[index[y == k]].unique().tolist()
                assert len(original) == 1  # a new label stands for one original class
                assert source.setdefault(k, original[0]) == original[0]
        assert len(set(source.values())) == expected_ways
        if shots <= 7:  # enough samples: no sample is drawn twice in an episode
            drawn = torch.cat([(e.x_adapt[:, 0, 0, 0] * 255).round(), (e.x_eval[:, 0, 0, 0] * 255).round()])
            assert drawn.unique().numel() == drawn.numel()
        seen_orders.add(tuple(source[k] for k in range(expected_ways)))
    assert len(seen_orders) > 1  # labels are re-assigned from episode to episode
