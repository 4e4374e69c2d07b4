"""MARK (document 001) on split Fashion-MNIST and split MNIST as 3×32×32 images, 5 tasks: ACC and BWT, mean ± std
over seeds, with and without metalearning and masks; and MARK's parameter count after 5 and 20 tasks against one
network per task.

Protocol: the shipped CPU configs (configs/mark_split_fmnist.yml, configs/mark_split_mnist.yml) with a smaller
training fraction and a narrower knowledge base, so that 2 benchmarks × 4 variants × 3 seeds take about 15-20
minutes on 2 CPU cores (evaluating 5 × 2000 test images after every task is a large share of it). Variants:
``mark`` (meta + masks), ``no-meta``, ``no-masks``, ``no-meta-no-masks``. ``--baselines ewc,mas,gs-mask`` adds
those methods on the same data: ewc and mas with the same knowledge base as a plain conv backbone (Adam), gs-mask on
its own network (SGD), for ``--baseline-epochs`` epochs per task.
Finished runs in ``--out`` are reused, so an interrupted script continues where it stopped.

    python benchmarks/mark_results.py [--data-dir ../shared/data] [--seeds 0,1,2] [--train-fraction 0.05]
        [--kb-channels 16,32,64] [--benchmarks split-fmnist,split-mnist] [--baselines ewc,mas,gs-mask]
        [--out runs/mark-results] [--no-write]

Writes docs/RESULTS.md (section ``mark``) unless ``--no-write`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's lifelong, not another installed copy
sys.path.insert(1, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import lifelong  # noqa: E402
from lifelong.config import TrainConfig, build_config, read_yaml  # noqa: E402
from lifelong.methods.mark import MARK  # noqa: E402
from lifelong.models import build_backbone  # noqa: E402
from lifelong.models.heads import Network  # noqa: E402
from lifelong.models.mark import parameter_counts  # noqa: E402
from results_md import update_section  # noqa: E402

VARIANTS = {"mark": {}, "no-meta": {"use_meta": False}, "no-masks": {"use_masks": False},
            "no-meta-no-masks": {"use_meta": False, "use_masks": False}}
CONFIGS = {"split-fmnist": "mark_split_fmnist.yml", "split-mnist": "mark_split_mnist.yml"}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def mark_config(benchmark: str, variant: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    raw = read_yaml(ROOT / "configs" / CONFIGS[benchmark])
    raw.update(seed=seed, device="cpu", out=args.out)
    raw["data"].update(data_dir=args.data_dir, train_fraction=args.train_fraction)
    raw["mark"].update(kb_channels=ints(args.kb_channels), extractor_channels=args.extractor_channels,
                       features=args.features, **variant)
    return raw


def baseline_config(benchmark: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """A baseline on the same 3×32×32 data: the KB as a plain backbone with Adam, or gs-mask on its own gs-conv
    network with SGD and the reduced meta phases of benchmarks/gs_mask_results.py."""
    raw = mark_config(benchmark, {}, seed, args)
    kb = raw.pop("mark")
    raw.update(method=method, model={"name": "mark-kb", "kernels": kb["kb_kernels"], "channels": kb["kb_channels"],
                                     "latent": kb["latent"]},
               train={**raw["train"], "epochs": args.baseline_epochs, "optimizer": "adam", "lr": 1e-3})
    if method == "gs-mask":
        raw.update(model={"name": "gs-conv"}, train={**raw["train"], "optimizer": "sgd", "lr": 0.02})
        raw["gs-mask"] = {"num_iterations": 5, "meta_batch": 4, "meta_every": 1, "min_free_share": 0.0}
    return raw


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def count_rows() -> list[str]:
    """Parameters of MARK after 5 and 20 tasks against one network per task, for the paper's CIFAR config and the
    CPU config (each task's head as wide as its classes)."""
    rows = []
    for config, classes in (("mark_cifar100.yml", 5), ("mark_split_mnist.yml", 2)):
        params = MARK.Params(**read_yaml(ROOT / "configs" / config)["mark"])

        def build(name: str, **options: Any) -> Network:
            return Network(build_backbone(name, (3, 32, 32), **options), "task", [classes] * 20)

        model = MARK(build, params, TrainConfig()).model
        for tasks in (5, 20):
            counts = parameter_counts(model, tasks, classes)
            rows.append(f"| `{config}` | {tasks} | {counts['mark']:,} | {counts['one_network_per_task']:,} | "
                        f"{counts['mark'] / counts['one_network_per_task']:.2f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--benchmarks", default="split-fmnist,split-mnist")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--train-fraction", type=float, default=0.05)
    parser.add_argument("--kb-channels", default="16,32,64")
    parser.add_argument("--extractor-channels", type=int, default=8)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--baselines", default="", help="comma-separated methods run on the KB as a plain backbone")
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "runs" / "mark-results"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = time.time()
    seeds = ints(args.seeds)
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for benchmark in args.benchmarks.split(","):
        for name in args.variants.split(","):
            runs += [(benchmark, name, mark_config(benchmark, VARIANTS[name], s, args)) for s in seeds]
        for method in filter(None, args.baselines.split(",")):
            runs += [(benchmark, method, baseline_config(benchmark, method, s, args)) for s in seeds]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for index, (benchmark, name, raw) in enumerate(runs, 1):
        _, result = lifelong.run(build_config(raw))
        results.setdefault((benchmark, name), []).append(result)
        print(f"[{index}/{len(runs)}] {benchmark} {name} seed {raw['seed']}: ACC {result['acc']:.4f} "
              f"BWT {result['bwt']:.4f} ({result['train_seconds']:.0f} s training, "
              f"{(time.time() - started) / 60:.1f} min so far)", flush=True)

    table = ["| benchmark | variant | ACC (%) | BWT (%) | train s / run | seeds |", "|---|---|---:|---:|---:|---:|"]
    for (benchmark, name), group in results.items():
        table.append(f"| {benchmark} | {name} | {mean_std([r['acc'] for r in group])} | "
                     f"{mean_std([r['bwt'] for r in group])} | "
                     f"{statistics.mean(r['train_seconds'] for r in group):.0f} | {len(group)} |")
    elapsed = time.time() - started
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if Path(sys.argv[0]).exists()
                                       else sys.argv[0], *sys.argv[1:]])
    machine = f"{os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}"
    markdown = "\n".join([
        "## MARK: split Fashion-MNIST and split MNIST (3×32×32, 5 tasks), with and without meta and masks",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine}.",
        "",
        f"Command: `{command}` (run from the repository root; this invocation took {elapsed / 60:.1f} min; runs "
        "already finished in --out are reused, their training time is in the table)",
        "",
        f"Protocol: `configs/mark_split_fmnist.yml` / `configs/mark_split_mnist.yml` (task-incremental, images "
        f"padded to 3×32×32, validation 0.1, batch 64, 2 epochs of F^t, 4 of KB + C^1, 2 + 2 of M^t + C^t, "
        f"2 meta epochs × 4 mini-tasks × 8 inner steps) with train_fraction {args.train_fraction}, KB channels "
        f"{args.kb_channels}, F^t channels {args.extractor_channels} and {args.features} features; seeds "
        f"{args.seeds}. ACC and BWT over the 5 tasks, mean ± sample std over seeds; test sets complete."
        + (f" Baselines ({args.baselines}), {args.baseline_epochs} epochs per task at default hyperparameters: ewc / "
           "mas on the same KB as a plain backbone (`model.name: mark-kb`), Adam lr 1e-3; gs-mask on its `gs-conv` "
           "network, SGD lr 0.02, meta phases of 5 outer steps × 4 mini-tasks every epoch after the first."
           if args.baselines else ""),
        "",
        *table,
        "",
        "Parameters of MARK after N tasks (one KB; F^t, M^t and C^t per task) against one network per task (a "
        "KB-sized network and its head each), from `lifelong.models.mark.parameter_counts`:",
        "",
        "| config | tasks | MARK | one network per task | ratio |",
        "|---|---:|---:|---:|---:|",
        *count_rows(),
    ])
    print()
    print(markdown)
    if not args.no_write:
        print(f"\nwritten to {update_section('mark', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
