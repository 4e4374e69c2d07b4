from dataclasses import replace

import pytest
import torch

from lifelong.config import DataConfig
from lifelong.data import scenarios
from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.data.benchmarks import BENCHMARKS, build_benchmark, load_embedded_fashion_subset
from lifelong.errors import UserError


def toy_dataset(n_per_class=10, classes=4, shape=(1, 4, 4)) -> DatasetSplits:
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = (torch.arange(labels.numel() * torch.Size(shape).numel()) % 251).to(torch.uint8).view(-1, *shape)
    return DatasetSplits("toy", ImageArrays(images, labels), ImageArrays(images[::2], labels[::2]),
                         [f"c{i}" for i in range(classes)])


def test_split_keeps_only_the_groups_classes_with_local_labels():
    d = toy_dataset()
    tasks = scenarios.split_classes(d, [[3, 1], [0, 2]])
    assert [t.classes for t in tasks] == [[3, 1], [0, 2]]
    t0 = tasks[0]
    assert set(t0.train.labels.tolist()) == {0, 1}
    # local label 0 is original class 3: its images are the ones the dataset had for class 3
    assert torch.equal(t0.train.images[t0.train.labels == 0], d.train.images[d.train.labels == 3])
    assert t0.class_names == ["c3", "c1"]


@pytest.mark.parametrize("order", [[[0, 1], [1, 2]], [[0, 9]], [[]]])
def test_invalid_class_orders_are_user_errors(order):
    with pytest.raises(UserError):
        scenarios.split_classes(toy_dataset(), order)


def test_permutations_are_fixed_per_seed_and_differ_between_tasks():
    d = toy_dataset()
    a, b = scenarios.permuted(d, 3, seed=5), scenarios.permuted(d, 3, seed=5)
    assert all(torch.equal(x.permutation, y.permutation) for x, y in zip(a, b))
    assert not torch.equal(a[0].permutation, a[1].permutation)
    assert sorted(a[0].permutation.tolist()) == list(range(16))


def test_sequence_and_rgb_padding():
    grey = toy_dataset(shape=(1, 28, 28))
    rgb = scenarios.to_rgb32(grey.train)
    assert rgb.images.shape[1:] == (3, 32, 32)
    assert torch.equal(rgb.images[:, 1, 2:30, 2:30], grey.train.images[:, 0])
    assert rgb.images[:, :, :2].sum() == 0
    padded = DatasetSplits("g", rgb, scenarios.to_rgb32(grey.test), grey.class_names)
    tasks = scenarios.sequence([padded, padded])
    assert [t.id for t in tasks] == [0, 1] and tasks[1].classes == [0, 1, 2, 3]


def test_finalize_validation_fraction_offsets_and_cut():
    tasks = scenarios.split_classes(toy_dataset(n_per_class=20), [[0, 1], [2, 3]])
    out = scenarios.finalize(tasks, "class", seed=0, validation=0.25, train_fraction=0.5)
    t1 = out[1]
    assert t1.label_offset == 2 and out[0].label_offset == 0
    assert torch.bincount(t1.val.labels).tolist() == [5, 5]  # stratified: 25% of each class
    assert torch.bincount(t1.train.labels).tolist() == [8, 8]  # half of the remaining 15, rounded
    assert len(scenarios.finalize(tasks, "task", seed=0, max_tasks=1)) == 1
    cut = scenarios.finalize(tasks, "class", seed=0, validation=0.25, train_fraction=0.5, test_fraction=0.5)
    assert torch.bincount(cut[1].test.labels).tolist() == [n // 2 for n in torch.bincount(t1.test.labels).tolist()]
    assert torch.equal(cut[1].train.images, t1.train.images)  # the train and validation picks do not move
    assert cut[1].test.labels.numel() < t1.test.labels.numel()
    assert scenarios.finalize(tasks, "task", seed=0)[1].label_offset == 0


def test_finalize_is_deterministic_per_seed():
    tasks = scenarios.split_classes(toy_dataset(n_per_class=20), [[0, 1]])
    a = scenarios.finalize(tasks, "task", seed=1, validation=0.3)[0]
    b = scenarios.finalize(tasks, "task", seed=1, validation=0.3)[0]
    c = scenarios.finalize(tasks, "task", seed=2, validation=0.3)[0]
    assert torch.equal(a.val.images, b.val.images) and not torch.equal(a.val.images, c.val.images)


def test_domain_incremental_needs_equal_class_counts():
    tasks = scenarios.split_classes(toy_dataset(), [[0, 1, 2], [3]])
    with pytest.raises(UserError, match="same number of classes"):
        scenarios.finalize(tasks, "domain", seed=0)


def test_the_validation_split_never_takes_a_class_last_training_row():
    """Validation takes at least one row of each class with two or more, and never a class's last one: a class
    with a single row keeps it for training (before, it was held out and the class never trained)."""
    tasks = scenarios.split_classes(toy_dataset(n_per_class=2), [[0, 1], [2, 3]])
    for task in scenarios.finalize(tasks, "task", seed=0, validation=0.99):
        assert sorted(task.train.labels.tolist()) == [0, 1] and sorted(task.val.labels.tolist()) == [0, 1]
    mixed = [replace(tasks[0], train=tasks[0].train.subset(torch.tensor([0, 1, 2])))]  # class 1 has one row
    task = scenarios.finalize(mixed, "task", seed=0, validation=0.5)[0]
    assert sorted(task.train.labels.tolist()) == [0, 1] and task.val.labels.tolist() == [0]
    one = [replace(tasks[0], train=tasks[0].train.subset(torch.tensor([0, 2])))]  # one row of each class
    with pytest.raises(UserError, match="task 1 has no validation rows: each of its classes has a single training"):
        scenarios.finalize(one, "task", seed=0, validation=0.5)  # its accuracy would read 0 whatever the model


def test_a_task_without_training_rows_is_a_user_error():
    """Before, the loop divided by a zero epoch length (ZeroDivisionError) after writing the run directory."""
    tasks = scenarios.split_classes(toy_dataset(n_per_class=2), [[0, 1], [2, 3]])
    empty = [replace(tasks[0], train=tasks[0].train.subset(torch.arange(0))), tasks[1]]
    with pytest.raises(UserError, match="task 1 has no training rows; give it some"):
        scenarios.finalize(empty, "task", seed=0)


def test_embedded_subset_is_real_fashion_mnist():
    d = load_embedded_fashion_subset()
    assert d.train.images.shape == (3000, 1, 28, 28) and d.test.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.train.labels).tolist() == [300] * 10
    assert d.train.images.float().mean() > 50  # real images, not blank


def test_quickstart_benchmark_shapes():
    b = build_benchmark(DataConfig(), seed=0)
    assert b.scenario == "task" and len(b.tasks) == 5 and b.input_shape == (1, 28, 28)
    assert [t.classes for t in b.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert len(b.tasks[0].train) == 540 and len(b.tasks[0].val) == 60 and len(b.tasks[0].test) == 200


def test_normalize_false_feeds_raw_pixels_in_zero_one():
    from lifelong.data.batches import TaskView

    raw, standard = (build_benchmark(DataConfig(normalize=n), seed=0).tasks[0] for n in (False, True))
    images = raw.train.images[:50]
    x = TaskView(raw, raw.train, torch.device("cpu")).inputs(slice(0, 50))
    assert torch.allclose(x, images.float() / 255.0)
    z = TaskView(standard, standard.train, torch.device("cpu")).inputs(slice(0, 50))
    mean, std = standard.mean[0], standard.std[0]
    assert mean > 0.1 and torch.allclose(z, (images.float() / 255.0 - mean) / std, atol=1e-5)


def test_benchmark_registry_has_the_named_benchmarks():
    assert {"quickstart", "split-mnist", "split-fmnist", "pmnist", "permuted-fmnist", "split-cifar10",
            "split-cifar100", "multi", "mini-imagenet"} <= set(BENCHMARKS)
    with pytest.raises(UserError, match="unknown benchmark"):
        build_benchmark(DataConfig(benchmark="nope"), seed=0)
