"""Named benchmarks: which dataset(s), how they are cut into tasks, and the default scenario."""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Callable

from lifelong.data import own, readers, scenarios, sources
from lifelong.data.arrays import DatasetSplits, ImageArrays
from lifelong.data.scenarios import Benchmark, Task
from lifelong.errors import UserError, unknown

if TYPE_CHECKING:  # the config layer sits above data, models and methods
    from lifelong.config import DataConfig

PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
MNIST_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]
CIFAR10_PAIRS = [[2, 1], [3, 4], [5, 6], [7, 8], [9, 0]]  # bird/automobile, cat/deer, dog/frog, horse/ship, truck/airplane


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to build one named benchmark from a data config and a seed."""

    description: str
    build: Callable[[DataConfig, int], list[Task]]
    scenario: str = "task"
    default_order: list[list[int]] | None = None  # class order of split benchmarks
    variable_tasks: bool = False  # whether data.num_tasks applies
    tasks: int | None = 5  # tasks of the default sequence (num_tasks' default where it applies; None: the data's)
    split: bool = True  # whether tasks are groups of classes (data.class_order applies)


def load_embedded_fashion_subset() -> DatasetSplits:
    """The Fashion-MNIST subset shipped in the package (300 train / 100 test images per class)."""
    folder = resources.files("lifelong.data") / "embedded"
    parts = {}
    for split in ("train", "test"):
        with resources.as_file(folder / f"fmnist-subset-{split}-images-idx3-ubyte.gz") as path:
            images = readers.read_idx(path)
        with resources.as_file(folder / f"fmnist-subset-{split}-labels-idx1-ubyte.gz") as path:
            labels = readers.read_idx(path)
        parts[split] = ImageArrays(images.unsqueeze(1).contiguous(), labels.long())
    class_names = list(sources.DATASETS["fashion-mnist"].class_names or ())
    return DatasetSplits("fashion-mnist-subset", parts["train"], parts["test"], class_names)


def _load(name: str, cfg: DataConfig) -> DatasetSplits:
    return _rgb32(sources.load_dataset(name, cfg.data_dir, download=cfg.download), cfg)


def _rgb32(dataset: DatasetSplits, cfg: DataConfig) -> DatasetSplits:
    """The dataset as 3×32×32 images (grey ones repeated, smaller ones zero-padded) where ``data.rgb32`` asks."""
    if not cfg.rgb32:
        return dataset
    if dataset.train.features:
        raise UserError(f"data.rgb32 applies to images, not to the feature vectors of {dataset.name}; remove it")
    try:
        return DatasetSplits(dataset.name, scenarios.to_rgb32(dataset.train), scenarios.to_rgb32(dataset.test),
                             dataset.class_names)
    except ValueError as err:
        raise UserError(f"data.rgb32 cannot apply to {dataset.name}: {err}; set data.rgb32 false") from None


def _order(cfg: DataConfig, default: list[list[int]]) -> list[list[int]]:
    return cfg.class_order if cfg.class_order is not None else default


def _split(dataset_name: str, default_order: list[list[int]]) -> Callable[[DataConfig, int], list[Task]]:
    def build(cfg: DataConfig, seed: int) -> list[Task]:
        return scenarios.split_classes(_load(dataset_name, cfg), _order(cfg, default_order))

    return build


def _permuted(dataset_name: str) -> Callable[[DataConfig, int], list[Task]]:
    def build(cfg: DataConfig, seed: int) -> list[Task]:
        return scenarios.permuted(_load(dataset_name, cfg), cfg.num_tasks or 10, seed)

    return build


def _quickstart(cfg: DataConfig, seed: int) -> list[Task]:
    return scenarios.split_classes(_rgb32(load_embedded_fashion_subset(), cfg), _order(cfg, PAIRS))


def _split_cifar100(cfg: DataConfig, seed: int) -> list[Task]:
    num_tasks = cfg.num_tasks or 10
    if 100 % num_tasks:
        raise UserError(f"split-cifar100 needs a number of tasks that divides 100 (e.g. 10 or 20), got {num_tasks}")
    per = 100 // num_tasks
    default = [list(range(i * per, (i + 1) * per)) for i in range(num_tasks)]
    return scenarios.split_classes(_load("cifar100", cfg), _order(cfg, default))


def _mini_imagenet(cfg: DataConfig, seed: int) -> list[Task]:
    default = [list(range(i * 5, i * 5 + 5)) for i in range(20)]
    return scenarios.split_classes(_load("mini-imagenet", cfg), _order(cfg, default))


def _source(cfg: DataConfig, seed: int) -> list[Task]:
    """The user's data (``data.source``) cut by its task column, or into groups of classes."""
    dataset = own.read_source(cfg.source)
    if dataset.group_names is not None:
        own.check_trained_classes(dataset, cfg.source.path)
        return scenarios.by_group(dataset)
    groups = own.class_groups(dataset, cfg.tasks, cfg.classes_per_task, cfg.source.path)
    return scenarios.split_classes(_rgb32(dataset, cfg), groups)


MULTI_DATASETS = ["cifar10", "notmnist", "mnist", "svhn", "fashion-mnist"]


def _multi(cfg: DataConfig, seed: int) -> list[Task]:
    datasets = []
    for name in MULTI_DATASETS:
        d = _load(name, cfg)
        datasets.append(DatasetSplits(d.name, scenarios.to_rgb32(d.train), scenarios.to_rgb32(d.test),
                                      d.class_names))
    return scenarios.sequence(datasets)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "quickstart": BenchmarkSpec("split Fashion-MNIST on the subset shipped with the package (5 × 2 classes)",
                                _quickstart, default_order=PAIRS),
    "split-mnist": BenchmarkSpec("MNIST in 5 tasks of 2 digits, default order (1,2),(3,4),(5,6),(7,8),(9,0)",
                                 _split("mnist", MNIST_PAIRS), default_order=MNIST_PAIRS),
    "split-fmnist": BenchmarkSpec("Fashion-MNIST in 5 tasks of 2 classes, (0,1),(2,3),...",
                                  _split("fashion-mnist", PAIRS), default_order=PAIRS),
    "pmnist": BenchmarkSpec("permuted MNIST, 10 tasks (num_tasks) with a fixed pixel permutation each",
                            _permuted("mnist"), scenario="domain", variable_tasks=True, tasks=10, split=False),
    "permuted-fmnist": BenchmarkSpec("permuted Fashion-MNIST, 10 tasks (num_tasks)", _permuted("fashion-mnist"),
                                     scenario="domain", variable_tasks=True, tasks=10, split=False),
    "split-cifar10": BenchmarkSpec(
        "CIFAR-10 in 5 pairs: bird/automobile, cat/deer, dog/frog, horse/ship, truck/airplane",
        _split("cifar10", CIFAR10_PAIRS), default_order=CIFAR10_PAIRS),
    "split-cifar100": BenchmarkSpec("CIFAR-100 in 10 (or num_tasks=20) tasks of consecutive classes",
                                    _split_cifar100, variable_tasks=True, tasks=10),
    "multi": BenchmarkSpec("5-dataset sequence CIFAR-10, notMNIST, MNIST, SVHN, Fashion-MNIST at 32×32×3", _multi,
                           split=False),
    "mini-imagenet": BenchmarkSpec("MiniImageNet, 20 tasks of 5 classes at 84×84×3", _mini_imagenet, tasks=20),
    "source": BenchmarkSpec("your own data, data.source: an image folder, .npz, .csv or .parquet (docs/own-data.md)",
                            _source, split=False, tasks=None),
}


def task_count(cfg: DataConfig) -> int | None:
    """How many tasks the benchmark's sequence has before ``max_tasks`` cuts it (None: unknown before reading)."""
    spec = BENCHMARKS.get(cfg.benchmark)
    if spec is None:
        return None
    if spec.tasks is None:  # a source: known from data.tasks, else from its data
        return len(cfg.tasks) if cfg.tasks is not None else None
    if cfg.class_order is not None and spec.split:
        return len(cfg.class_order)
    return cfg.num_tasks if spec.variable_tasks and cfg.num_tasks else spec.tasks


def default_scenario(cfg: DataConfig) -> str | None:
    """The scenario of a benchmark when data.scenario is unset: a source's task column makes it domain-incremental."""
    spec = BENCHMARKS.get(cfg.benchmark)
    if cfg.source is not None and cfg.source.task_column is not None:
        return "domain"
    return None if spec is None else spec.scenario


def _check_source(cfg: DataConfig) -> None:
    """Refuse task settings that do not fit a user's source, or a source's settings on a named benchmark."""
    if cfg.benchmark != "source":
        if cfg.tasks is not None or cfg.classes_per_task is not None:
            key = "tasks" if cfg.tasks is not None else "classes_per_task"
            raise UserError(f"data.{key} applies to data.source; for {cfg.benchmark} use data.class_order")
        return
    if cfg.source is None:
        raise UserError("data.benchmark 'source' needs data.source: the path of an image folder or a .npz, .csv or "
                        ".parquet file")
    wrong = "class_order" if cfg.class_order is not None else "num_tasks" if cfg.num_tasks is not None else None
    if wrong:
        raise UserError(f"data.{wrong} does not apply to data.source; use data.tasks or data.classes_per_task")
    if cfg.tasks is not None and cfg.classes_per_task is not None:
        raise UserError("data.tasks and data.classes_per_task both say how to cut the classes; set only one")
    if cfg.source.task_column is not None and (cfg.tasks is not None or cfg.classes_per_task is not None):
        raise UserError("data.source.task_column makes the tasks (one per value); remove data.tasks and "
                        "data.classes_per_task")
    if cfg.source.task_order is not None and cfg.source.task_column is None:
        raise UserError("data.source.task_order orders the values of a task column; set data.source.task_column")


def check_data(cfg: DataConfig) -> BenchmarkSpec:
    """Refuse a data config that cannot describe a benchmark (without loading any data); returns its spec."""
    spec = BENCHMARKS.get(cfg.benchmark)
    if spec is None:
        raise unknown("benchmark", cfg.benchmark, BENCHMARKS)
    _check_source(cfg)
    if cfg.num_tasks is not None and not spec.variable_tasks:
        raise UserError(f"data.num_tasks does not apply to {cfg.benchmark} (its tasks are fixed); use data.max_tasks "
                        "to train on fewer tasks")
    if cfg.num_tasks is not None and cfg.class_order is not None and len(cfg.class_order) != cfg.num_tasks:
        raise UserError(f"data.num_tasks={cfg.num_tasks} disagrees with data.class_order ({len(cfg.class_order)} "
                        "tasks); set only one of them")
    if cfg.class_order is not None and not spec.split:
        raise UserError(f"data.class_order does not apply to {cfg.benchmark} (not a split benchmark); remove it")
    count = task_count(cfg)
    if cfg.max_tasks is not None and count is not None and cfg.max_tasks > count:
        raise UserError(f"data.max_tasks={cfg.max_tasks} exceeds the {count} tasks of {cfg.benchmark}; "
                        f"use at most {count}")
    return spec


def build_benchmark(cfg: DataConfig, seed: int) -> Benchmark:
    """Load the data of ``cfg.benchmark`` and cut it into the tasks of the chosen scenario."""
    spec = check_data(cfg)
    scenario = cfg.scenario or default_scenario(cfg)
    built = spec.build(cfg, seed)
    if cfg.max_tasks is not None and cfg.max_tasks > len(built):
        raise UserError(f"data.max_tasks={cfg.max_tasks} exceeds the {len(built)} tasks of {cfg.benchmark}; "
                        f"use at most {len(built)}")
    if cfg.augment and built[0].train.features:
        raise UserError(f"data.augment applies to images, not to the feature vectors of {built[0].source}; "
                        "remove it")
    tasks = scenarios.finalize(built, scenario, seed, cfg.validation, cfg.train_fraction, cfg.max_tasks,
                               cfg.test_fraction)
    if not cfg.normalize:  # raw pixels in [0, 1], features as they are
        tasks = [replace(t, mean=(0.0,) * len(t.mean), std=(1.0,) * len(t.std)) for t in tasks]
    digest = own.source_sha256(cfg.source.path) if cfg.benchmark == "source" else None
    return Benchmark(cfg.benchmark, scenario, tasks, data_sha256=digest)


def default_class_order(benchmark: str) -> list[list[int]]:
    """The default classes of each task of a split benchmark (for order sweeps)."""
    spec = BENCHMARKS.get(benchmark)
    if spec is None or spec.default_order is None:
        raise UserError(f"benchmark '{benchmark}' has no class order to sweep; use a split benchmark "
                        f"({', '.join(n for n, b in BENCHMARKS.items() if b.default_order)}) or set data.class_order")
    return [list(group) for group in spec.default_order]
