"""Metrics checked against hand-written accuracy matrices with the arithmetic spelled out."""

import math

import numpy as np
import pytest

from lifelong import metrics

# R[i][j]: accuracy on task j after training task i.
R2 = [
    [0.9, 0.1],
    [0.8, 0.95],
]
R3 = [
    [0.9, 0.2, 0.1],
    [0.7, 0.95, 0.3],
    [0.8, 0.7, 0.85],
]


def test_average_accuracy():
    assert metrics.average_accuracy(R2) == pytest.approx((0.8 + 0.95) / 2)
    assert metrics.average_accuracy(R3) == pytest.approx((0.8 + 0.7 + 0.85) / 3)


def test_backward_transfer():
    assert metrics.backward_transfer(R2) == pytest.approx(0.8 - 0.9)
    assert metrics.backward_transfer(R3) == pytest.approx((0.8 - 0.9 + 0.7 - 0.95) / 2)


def test_forward_transfer():
    b2 = [0.5, 0.05]
    assert metrics.forward_transfer(R2, b2) == pytest.approx(0.1 - 0.05)
    b3 = [0.5, 0.1, 0.2]
    assert metrics.forward_transfer(R3, b3) == pytest.approx((0.2 - 0.1 + 0.3 - 0.2) / 2)


def test_forgetting_chaudhry():
    assert metrics.forgetting(R2) == pytest.approx([0.9 - 0.8])
    # task 0: max(0.9, 0.7) - 0.8; task 1: max(0.2, 0.95) - 0.7; the last task has no entry.
    expected = [0.9 - 0.8, 0.95 - 0.7]
    assert metrics.forgetting(R3) == pytest.approx(expected)
    assert metrics.average_forgetting(R3) == pytest.approx((0.9 - 0.8 + 0.95 - 0.7) / 2)
    assert metrics.max_forgetting(R3) == pytest.approx(0.95 - 0.7)


def test_forgetting_uses_max_over_earlier_rows_not_the_diagonal():
    R = [
        [0.6, 0.1, 0.1],
        [0.9, 0.8, 0.1],
        [0.5, 0.8, 0.9],
    ]
    assert metrics.forgetting(R) == pytest.approx([0.9 - 0.5, 0.8 - 0.8])


def test_forgetting_can_be_negative():
    R = [
        [0.5, 0.1],
        [0.7, 0.9],
    ]
    assert metrics.forgetting(R) == pytest.approx([0.5 - 0.7])
    assert metrics.max_forgetting(R) == pytest.approx(0.5 - 0.7)


def test_forgetting_vs_reference():
    a = [0.92, 0.96, 0.9]
    expected = [0.92 - 0.8, 0.96 - 0.7, 0.9 - 0.85]
    assert metrics.forgetting_vs_reference(R3, a) == pytest.approx(expected)
    assert metrics.average_forgetting(R3, a) == pytest.approx((0.92 - 0.8 + 0.96 - 0.7 + 0.9 - 0.85) / 3)
    assert metrics.max_forgetting(R3, a) == pytest.approx(0.96 - 0.7)


def test_intransigence():
    joint = [0.95, 0.97, 0.9]
    assert metrics.intransigence(R3, joint) == pytest.approx([0.95 - 0.9, 0.97 - 0.95, 0.9 - 0.85])


def test_summarize():
    s = metrics.summarize(R3, random_init=[0.5, 0.1, 0.2])
    assert set(s) == {"acc", "bwt", "fwt", "forgetting", "max_forgetting", "avg_forgetting"}
    assert s["acc"] == pytest.approx((0.8 + 0.7 + 0.85) / 3)
    assert s["bwt"] == pytest.approx((0.8 - 0.9 + 0.7 - 0.95) / 2)
    assert s["fwt"] == pytest.approx((0.2 - 0.1 + 0.3 - 0.2) / 2)
    assert s["forgetting"] == pytest.approx([0.9 - 0.8, 0.95 - 0.7])
    assert s["max_forgetting"] == pytest.approx(0.95 - 0.7)
    assert s["avg_forgetting"] == pytest.approx((0.9 - 0.8 + 0.95 - 0.7) / 2)
    assert metrics.summarize(R3)["fwt"] is None


def test_results_are_plain_python():
    s = metrics.summarize(np.array(R3), random_init=np.array([0.5, 0.1, 0.2]))
    assert all(type(s[k]) is float for k in ("acc", "bwt", "fwt", "max_forgetting", "avg_forgetting"))
    assert all(type(x) is float for x in s["forgetting"])


def test_single_task():
    R = [[0.75]]
    assert metrics.average_accuracy(R) == pytest.approx(0.75)
    assert metrics.backward_transfer(R) == 0.0
    assert metrics.forward_transfer(R, [0.1]) == 0.0
    assert metrics.forgetting(R) == []
    assert metrics.average_forgetting(R) == 0.0
    assert metrics.max_forgetting(R) == 0.0
    assert metrics.forgetting_vs_reference(R, [0.8]) == pytest.approx([0.8 - 0.75])
    assert metrics.intransigence(R, [0.9]) == pytest.approx([0.9 - 0.75])
    s = metrics.summarize(R)
    assert s == {"acc": 0.75, "bwt": 0.0, "fwt": None, "forgetting": [], "max_forgetting": 0.0, "avg_forgetting": 0.0}


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "square"),
        (np.zeros((0, 0)), "empty"),
        ([[0.5, 0.5]], "square"),
        ([0.5, 0.5], "square"),
        ([[0.5, 0.5], [0.5]], "T×T"),
        ([[0.5, float("nan")], [0.5, 0.5]], "NaN"),
        ([[0.5, math.inf], [0.5, 0.5]], "NaN"),
        ([[90.0, 10.0], [80.0, 95.0]], r"\[0, 1\]"),
        ([[0.5, -0.1], [0.5, 0.5]], r"\[0, 1\]"),
    ],
)
def test_invalid_matrix_is_rejected(bad, message):
    for fn in (metrics.average_accuracy, metrics.backward_transfer, metrics.forgetting, metrics.summarize):
        with pytest.raises(ValueError, match=message):
            fn(bad)


def test_invalid_reference_is_rejected():
    with pytest.raises(ValueError, match="one accuracy per task"):
        metrics.forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="one accuracy per task"):
        metrics.forgetting_vs_reference(R3, [0.9])
    with pytest.raises(ValueError, match="NaN"):
        metrics.intransigence(R3, [0.9, float("nan"), 0.9])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.summarize(R3, random_init=[10.0, 10.0, 10.0])


def test_mean_std():
    mean, std = metrics.mean_std([0.6, 0.8, 0.7])
    assert mean == pytest.approx((0.6 + 0.8 + 0.7) / 3)
    # sample std (ddof=1): deviations -0.1, 0.1, 0.0 around 0.7
    assert std == pytest.approx(math.sqrt((0.1**2 + 0.1**2 + 0.0**2) / (3 - 1)))
    assert metrics.mean_std([0.42]) == (0.42, 0.0)
    assert metrics.mean_std([-0.1, 0.1]) == pytest.approx((0.0, math.sqrt((0.1**2 + 0.1**2) / 1)))


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, float("nan")]])
def test_mean_std_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        metrics.mean_std(bad)


def test_mean_std_over_seeds_is_elementwise_over_the_first_axis():
    seeds = [[[0.6, float("nan")]], [[0.8, 0.5]], [[0.7, 0.7]]]  # 3 seeds of a 1×2 array; seed 0 lacks one value
    mean, std = metrics.mean_std_over_seeds(seeds)
    assert mean.shape == std.shape == (1, 2)
    assert mean[0, 0] == pytest.approx(0.7) and std[0, 0] == pytest.approx(math.sqrt((0.1**2 + 0.1**2) / 2))
    assert np.isnan(mean[0, 1]) and np.isnan(std[0, 1])  # NaN is kept, not dropped
    mean, std = metrics.mean_std_over_seeds([[0.3, 0.4]])  # one seed: std 0
    assert mean.tolist() == [0.3, 0.4] and std.tolist() == [0.0, 0.0]
    assert metrics.mean_std_over_seeds([0.6, 0.8, 0.7]) == pytest.approx(metrics.mean_std([0.6, 0.8, 0.7]))
    for bad in ([], 0.5):
        with pytest.raises(ValueError, match="at least one seed"):
            metrics.mean_std_over_seeds(bad)
