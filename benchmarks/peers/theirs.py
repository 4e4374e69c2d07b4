"""One Avalanche 0.6.0 run on a protocol of benchmarks/peers/peers.py, in the scratch environment that script builds.

This file is run by the scratch environment's interpreter (never by the project's, never imported by the
project): it needs avalanche-lib, which is not a dependency of lifelong. It reads the MNIST arrays that
peers.py wrote with lifelong's own reader (an .npz of uint8 images, labels and the training set's mean and
std), builds the split with Avalanche's ``nc_benchmark`` as its SplitMNIST does (same class order, task labels
for task-incremental learning), trains one strategy and prints one JSON line:

    {"matrix": [[acc of task j after task i, or null before task j was learnt (task-IL)], ...],
     "train_seconds": ..., "versions": {...}}

    <scratch venv>/bin/python benchmarks/peers/theirs.py --npz FILE --scenario task|class \
        --strategy EWC --kwargs '{"ewc_lambda": 5000}' --seed 0 --threads 2 --lr 0.01 --batch 64 --epochs 1

``--check`` only imports what a run imports and prints the versions (peers.py's test of a new environment).

torchvision: the registry's torchvision 0.28 wheel is a CUDA build. Its C++ operators cannot load beside the
CPU torch, and its import then fails registering a fake (meta) kernel for ``torchvision::nms`` and
``torchvision::qnms``, the two registrations it does not guard. Avalanche imports torchvision (transforms,
datasets) but calls none of its operators, so ``guard_torchvision`` skips exactly those registrations, in this
process only, while torchvision is imported: no file of the environment is changed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time


def guard_torchvision() -> None:
    """Import torchvision with its registrations of operators that do not exist (its C++ library did not load)
    skipped; every other registration goes through unchanged."""
    import torch
    import torch.library

    original = torch.library.register_fake

    def register_fake(op, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(op, str) and op.startswith("torchvision::"):
            try:
                torch._C._dispatch_find_schema_or_throw(op, "")
            except RuntimeError:  # the operator was never defined: nothing to register a fake kernel for
                if args or "func" in kwargs:
                    return None
                return lambda fn: fn
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original


def versions() -> dict[str, str]:
    import avalanche
    import torch
    import torchvision

    return {"avalanche": avalanche.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--npz")
    parser.add_argument("--scenario", choices=["task", "class"])
    parser.add_argument("--strategy")
    parser.add_argument("--kwargs", default="{}")
    parser.add_argument("--order", default="1,2,3,4,5,6,7,8,9,0", help="class order; consecutive pairs are tasks")
    parser.add_argument("--tasks", type=int, default=5, help="only the first N tasks (a quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-batch", type=int, default=1024)
    parser.add_argument("--hidden", default="400,400")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    guard_torchvision()
    import warnings

    warnings.filterwarnings("ignore")  # qpsolvers' "no QP solver" (GEM only) and deprecation notices
    import avalanche.training as strategies
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import MultiHeadClassifier, MultiTaskModule
    from avalanche.training.determinism.rng_manager import RNGManager
    from avalanche.training.plugins import EvaluationPlugin

    if args.check:
        print(json.dumps({"versions": versions()}))
        return

    import numpy as np

    data = np.load(args.npz)
    mean, std = float(data["mean"][0]), float(data["std"][0])

    class Tensors(torch.utils.data.TensorDataset):
        """Images standardised as lifelong does (x · 1/(255 σ) − μ/σ), with the ``targets`` nc_benchmark reads."""

        def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
            x = torch.from_numpy(images).float() * (1.0 / (255.0 * std)) - mean / std
            y = torch.from_numpy(labels).long()
            super().__init__(x, y)
            self.targets = y.tolist()

    task_il = args.scenario == "task"
    order = [int(c) for c in args.order.split(",")][: 2 * args.tasks]
    train, test = (np.isin(data[f"{split}_labels"], order) for split in ("train", "test"))
    RNGManager.set_random_seeds(args.seed)
    bench = nc_benchmark(Tensors(data["train_images"][train], data["train_labels"][train]),
                         Tensors(data["test_images"][test], data["test_labels"][test]), n_experiences=args.tasks,
                         task_labels=task_il, seed=args.seed, fixed_class_order=order,
                         class_ids_from_zero_in_each_exp=task_il)

    hidden = [int(w) for w in args.hidden.split(",")]
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for a, b in zip([784, *hidden], hidden):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    features = torch.nn.Sequential(*layers)
    if task_il:  # a head of two outputs per task, chosen by the task label (Avalanche grows one per new label)
        class MultiHeadMLP(MultiTaskModule):
            def __init__(self) -> None:
                super().__init__()
                self.features = features
                self.classifier = MultiHeadClassifier(hidden[-1], initial_out_features=2)

            def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
                return self.classifier(self.features(x), task_label)

        model: torch.nn.Module = MultiHeadMLP()
    else:  # one 10-way head
        model = torch.nn.Sequential(features, torch.nn.Linear(hidden[-1], 10))

    strategy = getattr(strategies, args.strategy)(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=args.lr),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=args.batch, train_epochs=args.epochs,
        eval_mb_size=args.eval_batch, device="cpu",
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
        **json.loads(args.kwargs))

    tasks = len(bench.train_stream)
    matrix: list[list[float | None]] = []
    train_seconds = 0.0
    for i, experience in enumerate(bench.train_stream):
        start = time.perf_counter()
        strategy.train(experience)
        train_seconds += time.perf_counter() - start
        # task-IL: the tasks learnt so far (a head for a later task does not exist yet); class-IL: every task
        seen = bench.test_stream[: i + 1] if task_il else bench.test_stream
        results = strategy.eval(seen)
        row: list[float | None] = [None] * tasks
        for key, value in results.items():
            match = re.fullmatch(r"Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)", key)
            if match:
                row[int(match.group(1))] = float(value)
        matrix.append(row)
    print(json.dumps({"matrix": matrix, "train_seconds": train_seconds, "versions": versions()}))


if __name__ == "__main__":
    main()
