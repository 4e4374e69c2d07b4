"""Every named benchmark that needs external data, end to end on a generated data root in the official formats.

The root (tests/fakedata.py) holds every class of MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, notMNIST and
MiniImageNet with a few images each; checksums are recomputed from those files, so verification stays on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import lifelong
from lifelong import cli
from lifelong.config import DataConfig
from lifelong.data import sources
from lifelong.data.benchmarks import MULTI_DATASETS, build_benchmark
from lifelong.data.sources import load_dataset
from lifelong.errors import UserError

from fakedata import ALL_DATASETS, checksum_tables, make_data_root, patch_checksums, set_checksums

PER_CLASS = 3  # images per class per split (notMNIST 5 and MiniImageNet 6 per class in all: 4+1 and 5+1)
REAL_CHECKSUMS = {name: dict(dataset.checksums) for name, dataset in sources.DATASETS.items()}

GREY = {"name": "mlp", "hidden": [16]}
RESNET = {"name": "resnet18-reduced", "nf": 4}
ALEXNET = {"name": "alexnet", "fc": [16]}

PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
CIFAR10_ORDER = [[2, 1], [3, 4], [5, 6], [7, 8], [9, 0]]
MNIST_ORDER = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One data root with all seven datasets, shared by the module, and the checksums its files match."""
    root = tmp_path_factory.mktemp("data")
    make_data_root(root, ALL_DATASETS, PER_CLASS)
    return root, checksum_tables(root)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Run the tiny models on one thread: they gain nothing from two, and when another process keeps the cores
    busy, OpenMP threads waiting on each other make a reduced ResNet's forward pass ~40× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def root(data: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The generated root, with checksums matching it and no other data folder (home, $LIFELONG_DATA, system)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", ())
    patch_checksums(monkeypatch, data[0], tables=data[1])
    return data[0]


def config(tmp_path: Path, root: Path, benchmark: str, model: dict, **data: Any) -> dict[str, Any]:
    """A one-epoch CPU run of the naive method on `benchmark` read from `root`."""
    return {
        "out": str(tmp_path / "runs"),
        "device": "cpu",
        "data": {"benchmark": benchmark, "data_dir": str(root), "validation": 0.0, **data},
        "model": model,
        "train": {"epochs": 1, "batch_size": 16},
    }


def tasks_of(root: Path, benchmark: str, **data: Any):
    """The benchmark as `run` builds it (seed 0, no validation split unless given)."""
    return build_benchmark(DataConfig(benchmark=benchmark, data_dir=str(root), **{"validation": 0.0, **data}), 0)


def check_results(results: dict[str, Any], tasks: list[list[int]], scenario: str) -> None:
    n = len(tasks)
    matrix = results["acc_matrix"]
    assert len(matrix) == n and all(len(row) == n for row in matrix)
    assert all(0.0 <= value <= 1.0 for row in matrix for value in row)
    assert results["tasks"] == tasks
    assert results["scenario"] == scenario
    assert len(results["random_init_acc"]) == n


# ----------------------------------------------------------------------------------------------------------------
# The generated data itself


def test_generated_root_has_every_class_and_verifies_only_against_its_own_checksums(root: Path,
                                                                                    monkeypatch) -> None:
    expected = {"mnist": (10, PER_CLASS, PER_CLASS), "fashion-mnist": (10, PER_CLASS, PER_CLASS),
                "cifar10": (10, PER_CLASS, PER_CLASS), "cifar100": (100, PER_CLASS, PER_CLASS),
                "svhn": (10, PER_CLASS, PER_CLASS), "notmnist": (10, 4, 1), "mini-imagenet": (100, 5, 1)}
    for name, (classes, train, test) in expected.items():
        splits = load_dataset(name, root)
        assert len(splits.class_names) == classes, name
        assert splits.train.labels.bincount(minlength=classes).tolist() == [train] * classes, name
        assert splits.test.labels.bincount(minlength=classes).tolist() == [test] * classes, name
    assert load_dataset("mini-imagenet", root).class_names == [f"n{k:08d}" for k in range(100)]
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"):  # verification really is on
        files = {path.name.removesuffix(".gz") for path in (root / sources.DATASETS[name].folder).iterdir()}
        assert files <= set(sources.DATASETS[name].checksums), name
        set_checksums(monkeypatch, name, REAL_CHECKSUMS[name])
        with pytest.raises(UserError, match="checksum mismatch"):
            load_dataset(name, root)


# ----------------------------------------------------------------------------------------------------------------
# Class splits (task-incremental by default)


@pytest.mark.parametrize("name, model, order, shape, extra", [
    ("split-mnist", GREY, MNIST_ORDER, (1, 28, 28), {}),
    ("split-fmnist", GREY, PAIRS, (1, 28, 28), {"validation": 0.2}),
    ("split-cifar10", ALEXNET, CIFAR10_ORDER, (3, 32, 32), {}),
    ("split-cifar100", RESNET, [list(range(i, i + 10)) for i in range(0, 100, 10)], (3, 32, 32), {}),
    ("split-cifar100", RESNET, [list(range(i, i + 5)) for i in range(0, 100, 5)], (3, 32, 32),
     {"num_tasks": 20, "max_tasks": 3}),
    ("mini-imagenet", RESNET, [list(range(i, i + 5)) for i in range(0, 100, 5)], (3, 84, 84), {"max_tasks": 2}),
], ids=["split-mnist", "split-fmnist", "split-cifar10", "split-cifar100-10", "split-cifar100-20", "mini-imagenet"])
def test_split_benchmark_end_to_end(tmp_path: Path, root: Path, name: str, model: dict,
                                    order: list[list[int]], shape: tuple, extra: dict) -> None:
    build_args = {k: v for k, v in extra.items() if k != "max_tasks"}
    built = tasks_of(root, name, **build_args)  # every task, even where the run below keeps fewer
    assert built.scenario == "task"
    assert [t.classes for t in built.tasks] == order
    test_per_class = 1 if name == "mini-imagenet" else PER_CLASS
    for task in built.tasks:
        assert task.input_shape == shape and task.label_offset == 0
        assert len(task.test) == test_per_class * len(task.classes)
        assert task.test.labels.bincount().tolist() == [test_per_class] * len(task.classes)  # local labels 0..k-1
        assert len(task.train) + (0 if task.val is None else len(task.val)) == len(task.classes) * (
            5 if name == "mini-imagenet" else PER_CLASS)

    _, results = lifelong.run(config(tmp_path, root, name, model, **extra))
    check_results(results, order[: extra.get("max_tasks", len(order))], "task")


# ----------------------------------------------------------------------------------------------------------------
# Permuted benchmarks (domain-incremental by default)


@pytest.mark.parametrize("name, extra, total", [
    ("pmnist", {"num_tasks": 3}, 3),
    ("permuted-fmnist", {"max_tasks": 3}, 10),
])
def test_permuted_benchmark_end_to_end(tmp_path: Path, root: Path, name: str, extra: dict, total: int) -> None:
    build_args = {k: v for k, v in extra.items() if k != "max_tasks"}
    built = tasks_of(root, name, **build_args)
    assert built.scenario == "domain" and len(built.tasks) == total
    permutations = [t.permutation for t in built.tasks]
    assert all(torch.equal(p.sort().values, torch.arange(784)) for p in permutations)
    assert len({tuple(p.tolist()) for p in permutations}) == total
    assert all(t.input_shape == (1, 28, 28) and t.classes == list(range(10)) for t in built.tasks)

    _, results = lifelong.run(config(tmp_path, root, name, GREY, **extra))
    check_results(results, [list(range(10))] * 3, "domain")


# ----------------------------------------------------------------------------------------------------------------
# The 5-dataset sequence


def test_multi_end_to_end(tmp_path: Path, root: Path) -> None:
    built = tasks_of(root, "multi")
    assert [t.source for t in built.tasks] == MULTI_DATASETS == ["cifar10", "notmnist", "mnist", "svhn",
                                                                 "fashion-mnist"]
    assert all(t.input_shape == (3, 32, 32) and t.classes == list(range(10)) for t in built.tasks)
    for position, name in ((1, "notmnist"), (2, "mnist"), (4, "fashion-mnist")):  # grey 28×28, padded by 2
        grey = load_dataset(name, root).train.images[:, 0]
        padded = built.tasks[position].train.images
        assert padded.shape == (len(grey), 3, 32, 32)
        assert padded[5, 1, 2 + 13, 2 + 20].item() == grey[5, 13, 20].item()
        assert torch.equal(padded[:, :, 2:30, 2:30], grey[:, None].expand(-1, 3, -1, -1))
        assert padded[:, :, :2].eq(0).all() and padded[:, :, 30:].eq(0).all()
        assert padded[:, :, :, :2].eq(0).all() and padded[:, :, :, 30:].eq(0).all()
    assert torch.equal(built.tasks[0].train.images, load_dataset("cifar10", root).train.images)

    _, results = lifelong.run(config(tmp_path, root, "multi", ALEXNET))
    check_results(results, [list(range(10))] * 5, "task")
    assert results["task_names"] == MULTI_DATASETS


# ----------------------------------------------------------------------------------------------------------------
# Other scenarios


def test_split_cifar10_class_incremental(tmp_path: Path, root: Path) -> None:
    built = tasks_of(root, "split-cifar10", scenario="class")
    assert [t.label_offset for t in built.tasks] == [0, 2, 4, 6, 8]
    _, results = lifelong.run(config(tmp_path, root, "split-cifar10", RESNET, scenario="class", max_tasks=3))
    check_results(results, CIFAR10_ORDER[:3], "class")


def test_split_mnist_domain_incremental(tmp_path: Path, root: Path) -> None:
    built = tasks_of(root, "split-mnist", scenario="domain")
    assert [t.label_offset for t in built.tasks] == [0] * 5
    _, results = lifelong.run(config(tmp_path, root, "split-mnist", GREY, scenario="domain"))
    check_results(results, MNIST_ORDER, "domain")


# ----------------------------------------------------------------------------------------------------------------
# Command line


def test_cli_runs_split_cifar10_from_a_data_dir(tmp_path: Path, root: Path, capsys) -> None:
    out = tmp_path / "runs"
    code = cli.main(["run", "--benchmark", "split-cifar10", "--data-dir", str(root), "--out", str(out),
                     "--device", "cpu", "--epochs", "1", "--max-tasks", "2", "--quiet",
                     "--set", "model.name=alexnet", "--set", "model.fc=[16]", "--set", "data.validation=0.0"])
    assert code == 0, capsys.readouterr().err
    [results_file] = out.glob("*/results.json")
    results = json.loads(results_file.read_text())
    check_results(results, CIFAR10_ORDER[:2], "task")
    assert results["config"]["data"]["data_dir"] == str(root)
