"""gs-mask (document 000) with and without meta-iteration beside EWC, MAS and MARK, over seeds (issue 18).

Runs split MNIST, split Fashion-MNIST (5 tasks of 2 classes) and permuted MNIST (10 tasks of 10 classes), all
task-incremental, and writes mean ± std over seeds of ACC, BWT, the share of gs-conv's 128 filters each task owns
and the training time into docs/RESULTS.md (section ``gs-mask``).

The paper's protocol (50 epochs per task on all the data, SGD lr 0.003, c 0.05 with its subgradient step, meta
phases of 50 outer steps × 16 mini-tasks every 5 epochs) takes days on 2 CPU cores. The default is a CPU-sized
reduction: 2 epochs per task on a tenth of the training data, a fifth of the test data, the library's optimizer
(Adam lr 1e-3, batch 64), gs-mask at its defaults for short runs (proximal step, c 1) and one meta phase per task (at
the start of epoch 2) of 5 outer steps × 4 mini-tasks, second-order MAML. EWC and MAS run on the 2×400 MLP at their
defaults, EWC also on gs-conv (the same network as gs-mask: the network's cost without gs-mask's machinery), MARK on
its shipped CPU config (images padded to 3×32×32, narrower knowledge base), all on the same tasks and fractions.
``--paper`` restores the paper's protocol for gs-mask and its optimizer for EWC and MAS.

    python benchmarks/gs_mask_results.py [--data-dir ../shared/data] [--seeds 0,1,2] [--pmnist-seeds 0,1,2]
        [--benchmarks split-mnist,split-fmnist,pmnist] [--baselines ewc,ewc-gs-conv,mas,mark] [--epochs 2]
        [--train-fraction 0.1] [--test-fraction 0.2] [--num-iterations 5] [--meta-batch 4] [--paper]
        [--out runs/gs-mask-results] [--no-write]

Finished runs are reused (run directories are named after their configs), so an interrupted script continues;
their training time is the one recorded when they ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
from lifelong.config import read_yaml  # noqa: E402
from lifelong.errors import UserError  # noqa: E402
from results_md import update_section  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
BENCHMARKS = {"split-mnist": {}, "split-fmnist": {}, "pmnist": {"num_tasks": 10, "scenario": "task"}}
MARK_CONFIG = {"split-mnist": "mark_split_mnist.yml", "split-fmnist": "mark_split_fmnist.yml",
               "pmnist": "mark_split_mnist.yml"}  # pmnist: MNIST's settings on its 10 permutations
BASELINES = ("ewc", "ewc-gs-conv", "mas", "mark")  # ewc-gs-conv: EWC on gs-mask's own network


def data_section(args: argparse.Namespace, benchmark: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "data_dir": args.data_dir, "validation": 0.0, "train_fraction": args.train_fraction,
            "test_fraction": args.test_fraction, **BENCHMARKS[benchmark]}


def run_config(args: argparse.Namespace, benchmark: str, seed: int, method: str, meta: bool) -> dict[str, Any]:
    """One run: gs-mask (meta-iteration on or off) or a baseline, on the protocol's data and optimizer."""
    train = {"epochs": args.epochs, "optimizer": args.optimizer, "lr": args.lr, "batch_size": 64}
    cfg: dict[str, Any] = {"method": method, "seed": seed, "device": args.device, "out": args.out,
                           "data": data_section(args, benchmark), "train": train}
    if method == "gs-mask":  # its network gs-conv is the default
        cfg["gs-mask"] = {"meta_learn": meta, "num_iterations": args.num_iterations, "meta_batch": args.meta_batch,
                          "meta_every": args.meta_every, "min_free_share": 0.0, **args.gs_mask}
    elif method == "mark":
        raw = read_yaml(ROOT / "configs" / MARK_CONFIG[benchmark])
        raw["mark"].update(kb_channels=[16, 32, 64], extractor_channels=8, features=32)  # benchmarks/mark_results.py
        cfg.update(data={**raw["data"], **cfg["data"]}, train={**raw["train"], "epochs": args.epochs},
                   mark=raw["mark"])
    elif method == "ewc-gs-conv":  # the same network as gs-mask, per-task BatchNorm and calibration included
        cfg.update(method="ewc", model={"name": "gs-conv"})
    else:
        cfg["model"] = {"name": "mlp", "hidden": [400, 400]}
    return cfg


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(args: argparse.Namespace, cfg: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The run's results and the CPU seconds of this process while it ran (None for a run finished earlier)."""
    ledger = Path(args.out) / "cpu-seconds.json"
    seen = json.loads(ledger.read_text()) if ledger.is_file() else {}
    start = cpu_seconds()
    run_dir, results = lifelong.run(cfg)
    spent = cpu_seconds() - start
    if spent > 1.0 or run_dir.name not in seen:  # this process trained it (a reused run costs well under 1 s)
        seen[run_dir.name] = round(spent, 1) if spent > 1.0 else None
        ledger.write_text(json.dumps(seen, indent=1, sort_keys=True))
    return results, seen[run_dir.name]


def ledger_minutes(args: argparse.Namespace) -> float:
    """CPU minutes of every run this script measured in ``--out``."""
    ledger = Path(args.out) / "cpu-seconds.json"
    seen = json.loads(ledger.read_text()) if ledger.is_file() else {}
    return sum(v for v in seen.values() if v) / 60


def mean_std(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def owned_shares(results: list[dict[str, Any]]) -> str:
    """Mean share of the network's conv filters each task owns at the end, task 1 first, in %."""
    shares = [r["method_info"]["share_used_per_task"] for r in results]
    return " / ".join(f"{100 * statistics.fmean(s[t] for s in shares):.0f}" for t in range(len(shares[0])))


def variants(baselines: list[str]) -> list[tuple[str, str, bool]]:
    """(label, method, meta_learn)."""
    named = {"ewc": "ewc (MLP 2×400)", "ewc-gs-conv": "ewc (gs-conv, gs-mask's network)", "mas": "mas (MLP 2×400)",
             "mark": "mark (its CPU config)"}
    return [("gs-mask, meta-iteration", "gs-mask", True), ("gs-mask, no meta-iteration", "gs-mask", False),
            *[(named[b], b, False) for b in baselines]]


def summary(found: dict[str, tuple[list[dict[str, Any]], list[float | None]]]) -> str:
    """One sentence of what the table shows: capacity sharing, the meta phases' cost, gs-mask's cost against EWC."""
    def mean_cpu(label: str) -> float | None:
        cpu = [c for c in found.get(label, ([], []))[1] if c is not None]
        return statistics.fmean(cpu) if cpu else None

    results = found.get("gs-mask, no meta-iteration", ([], []))[0]
    if not results:
        return ""
    shares = [r["method_info"]["share_used_per_task"] for r in results]
    first = statistics.fmean(s[0] for s in shares)
    later = statistics.fmean(sum(s[1:]) for s in shares)
    text = (f"gs-mask (no meta-iteration): the first task owns {100 * first:.0f}% of the filters, the later tasks "
            f"{100 * later:.0f}% together, {100 * (1 - first - later):.0f}% stay free.")
    meta, plain, ewc = mean_cpu("gs-mask, meta-iteration"), mean_cpu("gs-mask, no meta-iteration"), mean_cpu("ewc")
    if meta and plain:
        text += f" The meta phases multiply gs-mask's run CPU seconds by {meta / plain:.1f}."
    if plain and ewc:
        text += f" gs-mask without them costs {plain / ewc:.1f}× EWC's run on the MLP in CPU seconds"
        same = mean_cpu("ewc-gs-conv")
        if same:
            text += f", and {plain / same:.1f}×" + (f" (with them {meta / same:.1f}×)" if meta else "")
        text += " EWC's on gs-conv." if same else "."
    return text


def table(args: argparse.Namespace, benchmark: str, seeds: list[int], baselines: list[str]) -> list[str]:
    rows, found = [], {}
    for label, method, meta in variants(baselines):
        results, seconds = [], []
        for seed in seeds:
            try:
                res, cpu = measured(args, run_config(args, benchmark, seed, method, meta))
            except UserError as err:  # a baseline whose loss turned NaN: say so in the table
                if "diverged" not in str(err):
                    raise
                print(f"{benchmark} {label} seed {seed}: {err}", flush=True)
                continue
            results.append(res)
            seconds.append(cpu)
            print(f"{benchmark} {label} seed {seed}: ACC {res['acc']:.4f} BWT {res['bwt']:+.4f} "
                  f"train {res['train_seconds']:.0f} s", flush=True)
        if not results:
            rows.append(f"| {label} | diverged | | | | |")
            continue
        found[method if method == "ewc-gs-conv" else label.split(" (")[0]] = (results, seconds)
        owned = owned_shares(results) if method == "gs-mask" else "n/a"
        cpu = [s for s in seconds if s is not None]
        rows.append(f"| {label} | {mean_std([r['acc'] for r in results])} | {mean_std([r['bwt'] for r in results])} "
                    f"| {owned} | {statistics.fmean(r['train_seconds'] for r in results):.0f} | "
                    f"{f'{statistics.fmean(cpu):.0f}' if cpu else '—'} |")
    return [f"### {benchmark} (seeds {','.join(map(str, seeds))})", "",
            "| variant | ACC % | BWT % | filters owned per task, % of 128 (task 1 / 2 / …) | train s | run CPU s |",
            "|---|---|---|---|---|---|", *rows, "", summary(found), ""]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder holding MNIST and Fashion-MNIST")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pmnist-seeds", default=None, help="seeds of pmnist (10 tasks, the costliest; default: --seeds)")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="comma-separated, from " + ", ".join(BASELINES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-iterations", type=int, default=5, help="outer steps per meta phase (paper: 50)")
    parser.add_argument("--meta-batch", type=int, default=4, help="mini-tasks per outer step (paper: 16)")
    parser.add_argument("--meta-every", type=int, default=1, help="a meta phase every N epochs (paper: 5)")
    parser.add_argument("--paper", action="store_true", help="the paper's protocol (overrides the flags above)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the small convs "
                        "gain little from a second thread and lose much when another process keeps it busy)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "runs" / "gs-mask-results"))
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    args.gs_mask = {}
    if args.paper:
        args.epochs, args.train_fraction, args.test_fraction, args.optimizer, args.lr = 50, 1.0, 1.0, "sgd", 0.003
        args.num_iterations, args.meta_batch, args.meta_every = 50, 16, 5
        args.gs_mask = {"c": 0.05, "proximal": False}
    return args


def main() -> int:
    args = parse()
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    pmnist_seeds = [int(s) for s in (args.pmnist_seeds or args.seeds).split(",") if s.strip()]
    baselines = [b for b in args.baselines.split(",") if b.strip()]
    benchmarks = [b for b in args.benchmarks.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES] + [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown baseline or benchmark: {', '.join(unknown)}")
    started = time.time()
    sections = []
    for benchmark in benchmarks:
        sections += table(args, benchmark, pmnist_seeds if benchmark == "pmnist" else seeds, baselines)
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if Path(sys.argv[0]).exists()
                                       else sys.argv[0], *sys.argv[1:]])
    if args.paper:
        protocol = (f"the paper's: {args.epochs} epochs per task on all the data, SGD lr {args.lr} batch 64, gs-mask "
                    "with c 0.05 and its subgradient step, meta phases of 50 outer steps × 16 mini-tasks every 5 "
                    "epochs")
    else:
        protocol = (f"a CPU-sized reduction of the paper's: {args.epochs} epoch(s) per task, train_fraction "
                    f"{args.train_fraction}, test_fraction {args.test_fraction}, no validation split, "
                    f"{args.optimizer} lr {args.lr} batch 64 for every method (the paper: 50 epochs of all the data, "
                    "SGD lr 0.003); gs-mask at its defaults for short runs (proximal step, c 1, τ 5e-4), second-order "
                    f"MAML phases of {args.num_iterations} outer steps × {args.meta_batch} mini-tasks (5-way or the "
                    f"task's classes, 10 shots, 5 inner steps) every {args.meta_every} epoch(s) after the first "
                    "(the paper: 50 × 16 every 5 epochs)")
    markdown = "\n".join([
        "## gs-mask (document 000): group-sparse filter masks, with and without meta-iteration, beside EWC, MAS, MARK",
        "",
        f"Command: `{command}` (from the repository root; this invocation took {(time.time() - started) / 60:.1f} "
        f"min, finished runs reused; the runs took {ledger_minutes(args):.0f} CPU minutes in all; torch "
        f"{torch.__version__}, torch.set_num_threads({args.threads}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs). Mean ± sample std over seeds.",
        "",
        f"Protocol: {protocol}. EWC and MAS: the 2×400 MLP at their defaults, and EWC also on gs-conv (gs-mask's "
        "network, its per-task BatchNorms and calibrations included); MARK: configs/mark_split_mnist.yml "
        "(pmnist too) or mark_split_fmnist.yml with a 16/32/64-channel knowledge base, 8-channel F^t and 32 features "
        "(as benchmarks/mark_results.py), its phases at the same epochs; all task-incremental on the same tasks and "
        "fractions.",
        "",
        "Filters owned: the share of gs-conv's 4 × 32 filters each task owns at the end (mean over seeds; "
        "results.json's `method_info.filters_owned` has them per layer and `lifelong report` draws them). BWT of "
        "gs-mask is exactly 0 by construction. `train s` is the loop's training time (wall clock); `run CPU s` the "
        "CPU seconds of the whole run, evaluation included, measured by this script (— for runs reused from an "
        "earlier invocation): on a machine shared with other work the CPU seconds are the steadier figure.",
        "",
        *sections,
    ])
    print()
    print(markdown)
    if not args.no_write:
        print(f"\nwritten to {update_section('gs-mask', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
