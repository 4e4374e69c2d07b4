"""Reproduce the published task-/class-/domain-incremental protocols and put our figures beside the papers'.

Protocols (van de Ven & Tolias 2019, "Three scenarios for continual learning"; their hyperparameters where they
publish them, see ``HYPERPARAMETERS``):

- ``split-mnist``: 5 tasks of 2 digits, MLP 2×400, Adam lr 1e-3, batch 128, 2000 iterations per task, no
  validation split; task-incremental (a head per task) and class-incremental (one head over the classes seen).
- ``split-fmnist``: the same protocol on Fashion-MNIST (pairs (0,1), (2,3), ...), for every method.
- ``pmnist``: 10 permutations of MNIST, MLP 2×1000, Adam lr 1e-4, batch 128, 5000 iterations per task,
  domain-incremental (one shared 10-way head); no published figure beside it.
- ``pmnist-task``: the same, task-incremental (a head per permutation), the scenario of the published figures,
  with the authors' task-IL settings for EWC, online EWC and SI.
- ``ewc-lambda`` / ``pmnist-ewc-lambda``: EWC at other λ on split MNIST task-IL / permuted MNIST domain-IL, seed 0.
- ``lwf-class``: LwF on split MNIST class-incremental with each of van de Ven et al.'s code's differences
  (``VARIANTS``), to explain the gap to their class-IL figure.
- ``lwf-task-mean`` / ``pmnist-lwf-mean``: LwF task-incremental on split MNIST / permuted MNIST with the old heads'
  distillation terms averaged, as van de Ven et al.'s code does (``lwf.head_reduction=mean``), not summed.
- ``pmnist-ewc-raw``: EWC on ``pmnist-task`` with raw pixels in [0, 1] (the authors' inputs) instead of standardised
  ones, to test whether the input scale explains EWC's gap to the published figure.

Every run is an ordinary ``lifelong`` run directory under ``--out`` (named after its config), so an interrupted
reproduction continues where it stopped and finished runs are not trained again. Runs go to ``--workers``
processes with one torch thread each. Figures: the final average accuracy ACC (mean ± std over seeds, sample std)
next to the published value, and BWT.

    python benchmarks/accuracy.py [--data-dir ../shared/data] [--protocols split-mnist,split-fmnist,pmnist]
                                  [--seeds 0,1,2] [--pmnist-seeds 0] [--workers 2] [--out runs/accuracy]
                                  [--finished-only] [--no-write]

Writes the section ``accuracy`` of docs/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's lifelong
sys.path.insert(1, str(Path(__file__).resolve().parent))

from results_md import update_section  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"

# van de Ven & Tolias 2019, Table 2 (split MNIST) and its permuted-MNIST task-IL figures as issue #3 quotes them,
# average accuracy in %. Our domain-IL permuted-MNIST runs have no published figure beside them here.
PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    ("split-mnist", "task"): {"naive": 87.19, "ewc": 98.64, "online-ewc": 99.12, "si": 99.09, "lwf": 99.57},
    ("split-mnist", "class"): {"naive": 19.90, "ewc": 20.01, "online-ewc": 19.96, "si": 19.99, "lwf": 23.85},
    ("pmnist-task", "task"): {"ewc": 94.74, "online-ewc": 95.96, "si": 94.75, "lwf": 69.84},
}

# Why a figure of ours is below the published one (measured, or what was ruled out), printed under its table.
SHORTFALLS: dict[tuple[str, str, str], str] = {
    ("split-mnist", "class", "lwf"): (
        "explained by the `lwf-class` table (3 seeds). Two things in van de Ven et al.'s code differ from this "
        "LwF: its distillation compares the teacher with the student's softmax over every class seen so far, "
        "target 0 on the new ones (`lwf.student_classes=seen`), and its first release averaged the distillation "
        "over the classes as well as the samples, dividing it by the 4-10 classes seen at tasks 2-5 (fixed in "
        "May 2019; about λ 0.16). With both, LwF reaches 27.87 ± 1.20, 4.02 above the figure; either alone stays "
        "at 20.60 / 19.96. Adam's moments carried across tasks and raw pixels change nothing."),
    ("pmnist-task", "task", "ewc"): (
        "with the authors' λ 500 and predicted-label Fisher, both sides slip a little as the nine per-task terms "
        "add up: the model's own accuracy on each new task R[j][j] falls from 98.1 % (task 1) to 93.1 % (task 10) "
        "and BWT is −1.86 (seed 0; online EWC, one running term, keeps R[j][j] ≥ 94.7 and BWT −0.52). Their raw "
        "pixels instead of our standardised inputs do not close the gap, they widen it (`pmnist-ewc-raw`: "
        "92.78 ± 0.44); no λ search here (each run is ~22 min)."),
    ("pmnist-ewc-raw", "task", "ewc@raw-inputs"): (
        "raw pixels in [0, 1], as the authors' code feeds them, make EWC worse than with standardised inputs "
        "(94.21): the same slide of R[j][j] as the terms add up, steeper (seed 0: 97.9 % on task 1 to 92.3 % on "
        "task 10) and more forgetting (BWT −3.02 against −1.89), so the input scale is not why our EWC is below "
        "the published figure."),
    ("lwf-class", "class", "lwf@seen-classes"): (
        "at full strength the zero targets on the new classes win over the cross-entropy: the model never learns "
        "tasks 2-5 (R[j][j] ≤ 0.02 for j ≥ 2, seed 0) and keeps task 1 at 99.7 %, hence BWT ≈ 0."),
    ("lwf-class", "class", "lwf@adam-carried"): "Adam's state carried over tasks alone changes nothing (19.94 before).",
    ("lwf-class", "class", "lwf@seen-classes+adam-carried"): "as seen-classes: new tasks are not learned.",
    ("lwf-class", "class", "lwf@seen-classes+adam-carried+raw-inputs"): (
        "as seen-classes: raw pixels instead of standardised ones change nothing."),
    ("lwf-class", "class", "lwf@lam-0.16"): (
        "a weaker distillation over the old classes only still forgets everything: the softmax over the old "
        "classes alone puts no pressure on the new classes' logits, which take over every prediction."),
}

# Figures far above the published one, printed under their table.
ABOVE: dict[tuple[str, str, str], str] = {
    ("pmnist-task", "task", "lwf"): (
        "far above the published 69.84 with van de Ven et al.'s objective reproduced: their mean over the old "
        "heads instead of our sum gives 96.48 ± 0.04 (`pmnist-lwf-mean`), and split MNIST task-IL LwF matches "
        "their figure either way; not explained here."),
}

PAPER_METHODS = ["naive", "joint", "ewc", "online-ewc", "si", "lwf", "mas"]
ALL_METHODS = ["naive", "joint", "ewc", "online-ewc", "si", "mas", "mas-alpha", "lwf", "ebll", "imm-mean",
               "imm-mode", "mas-slni", "ewc-slni"]

# Method sections per scenario. SI's c and the class-IL EWC λ are the values of the authors' code (task-IL: c 10;
# class-IL: λ 1e9, c 5000). Permuted MNIST domain-IL: λ 100 and c 10, our first choice (the authors' code's
# defaults there are EWC λ 500, online EWC λ 1000 with γ 0.9, SI c 5; not run); its task-IL runs, the scenario of the
# published figures, use the authors' values (PROTOCOLS["pmnist-task"]). The task-IL EWC λ is ours, chosen by the
# ``ewc-lambda`` protocol below; online EWC uses EWC's λ with γ 1. The other methods keep our defaults (their
# papers' values); mas-alpha spends λ = 1 per task seen.
LAMBDA_TASK_IL = 1e8
HYPERPARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "task": {"ewc": {"ewc": {"lam": LAMBDA_TASK_IL}},
             "online-ewc": {"online-ewc": {"lam": LAMBDA_TASK_IL, "gamma": 1.0}}, "si": {"si": {"c": 10.0}}},
    "class": {"ewc": {"ewc": {"lam": 1e9}}, "online-ewc": {"online-ewc": {"lam": 1e9, "gamma": 1.0}},
              "si": {"si": {"c": 5000.0}}},
    "domain": {"ewc": {"ewc": {"lam": 100.0}}, "online-ewc": {"online-ewc": {"lam": 100.0, "gamma": 1.0}},
               "si": {"si": {"c": 10.0}}},
}
# LwF as van de Ven et al.'s code weights it, (1/t)·CE + (1 − 1/t)·T²·KD: λ × old tasks, with the T² factor.
COMMON = {"mas-alpha": {"mas-alpha": {"lam_per_task": 1.0}}, "lwf": {"lwf": {"lam_by_tasks": True, "t_squared": True}}}

# EWC's λ on split MNIST task-IL, seed 0 (the ``ewc-lambda`` protocol): the authors' 1e5 left our EWC forgetting
# (a model trained to 99.9 % is so confident that its Fisher is tiny; our inputs are also standardised, theirs are
# not), so λ was chosen from this grid by the final ACC of seed 0 and set as LAMBDA_TASK_IL.
LAMBDA_GRID = [1e5, 1e6, 1e7, 1e8]

PROTOCOLS: dict[str, dict[str, Any]] = {
    "split-mnist": {"benchmark": "split-mnist", "scenarios": ["task", "class"], "methods": PAPER_METHODS,
                    "hidden": [400, 400], "lr": 1e-3, "iterations": 2000},
    "split-fmnist": {"benchmark": "split-fmnist", "scenarios": ["task", "class"], "methods": ALL_METHODS,
                     "hidden": [400, 400], "lr": 1e-3, "iterations": 2000},
    "ewc-lambda": {"benchmark": "split-mnist", "scenarios": ["task"], "methods": [f"ewc@{lam:g}" for lam in LAMBDA_GRID],
                   "hidden": [400, 400], "lr": 1e-3, "iterations": 2000, "seeds": "0"},
    "pmnist": {"benchmark": "pmnist", "scenarios": ["domain"], "methods": ["naive", "ewc", "online-ewc", "si", "lwf"],
               "hidden": [1000, 1000], "lr": 1e-4, "iterations": 5000, "seeds": "--pmnist-seeds"},
}
# EWC's λ on permuted MNIST (domain-IL, seed 0), beside the authors' 100: does a stronger penalty close the gap?
PMNIST_LAMBDA_GRID = [1e4]
# The same protocol task-incremental (a head per permutation), the scenario of the published figures, with the
# authors' task-IL settings (their code's defaults for permuted MNIST): EWC λ 500 with the Fisher of the model's own
# predicted labels; online EWC λ 500 and γ 0.8, where their penalty multiplies the stored Fisher by γ once more,
# i.e. our λ = 0.8 × 500; SI c 5.
PROTOCOLS["pmnist-task"] = {**PROTOCOLS["pmnist"], "scenarios": ["task"], "methods": ["ewc", "online-ewc", "si", "lwf"],
                            "hyperparameters": {"ewc": {"ewc": {"lam": 500.0, "fisher": "max"}},
                                                "online-ewc": {"online-ewc": {"lam": 400.0, "gamma": 0.8,
                                                                              "fisher": "max"}},
                                                "si": {"si": {"c": 5.0}}}}
PROTOCOLS["pmnist-ewc-lambda"] = {**PROTOCOLS["pmnist"], "methods": [f"ewc@{lam:g}" for lam in PMNIST_LAMBDA_GRID],
                                  "seeds": "0"}
# What van de Ven et al.'s code does differently from ours, as config changes that a protocol in BASE_PROTOCOL applies
# to its base protocol's run (method names ``<method>@<variant>+<variant>``, or ``<method>@<λ>``):
# the student's softmax over every class seen so far in LwF's distillation, Adam's moments carried from task to
# task instead of a fresh optimizer per task, raw pixels instead of standardised ones.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "seen-classes": {"lwf": {"student_classes": "seen"}},
    "adam-carried": {"train": {"reset_optimizer": False}},
    "raw-inputs": {"data": {"normalize": False}},
    # the first release of their code averaged the distillation over classes too, i.e. divided it by the 4-10
    # classes seen at tasks 2-5 (fixed in May 2019): about λ 0.16 on average
    "lam-0.16": {"lwf": {"lam": 0.16}},
    # their task-IL distillation averages the old heads' terms: with (1/t)·CE + (1 − 1/t)·T²·mean, i.e.
    # CE + T²·Σ_k KD_k, where our sum with ``lam_by_tasks`` gives CE + (t − 1)·T²·Σ_k KD_k
    "head-mean": {"lwf": {"head_reduction": "mean"}},
}
PROTOCOLS["lwf-class"] = {**PROTOCOLS["split-mnist"], "scenarios": ["class"],
                          "methods": ["lwf@seen-classes", "lwf@adam-carried", "lwf@seen-classes+adam-carried",
                                      "lwf@seen-classes+adam-carried+raw-inputs", "lwf@seen-classes+lam-0.16",
                                      "lwf@lam-0.16"]}
# EWC task-IL on permuted MNIST with the authors' raw pixels (their λ 500 and Fisher were set for those inputs).
PROTOCOLS["pmnist-ewc-raw"] = {**PROTOCOLS["pmnist-task"], "methods": ["ewc@raw-inputs"]}
# LwF task-IL with van de Ven et al.'s mean over the old heads.
PROTOCOLS["lwf-task-mean"] = {**PROTOCOLS["split-mnist"], "scenarios": ["task"], "methods": ["lwf@head-mean"]}
PROTOCOLS["pmnist-lwf-mean"] = {**PROTOCOLS["pmnist-task"], "methods": ["lwf@head-mean"]}
BASE_PROTOCOL = {"ewc-lambda": "split-mnist", "pmnist-ewc-lambda": "pmnist", "lwf-class": "split-mnist",
                 "pmnist-ewc-raw": "pmnist-task", "lwf-task-mean": "split-mnist", "pmnist-lwf-mean": "pmnist-task"}
# A variant of a published row is compared with that row's figure (the λ grids are not: they choose λ).
for _protocol in ("lwf-class", "pmnist-ewc-raw", "lwf-task-mean", "pmnist-lwf-mean"):
    for _scenario in PROTOCOLS[_protocol]["scenarios"]:
        _base = PUBLISHED[(BASE_PROTOCOL[_protocol], _scenario)]
        PUBLISHED[(_protocol, _scenario)] = {m: _base[m.split("@")[0]] for m in PROTOCOLS[_protocol]["methods"]}



def run_config(protocol: str, scenario: str, method: str, seed: int, data_dir: str, out: str) -> dict[str, Any]:
    if protocol in BASE_PROTOCOL:  # method is "<method>@<λ>" or "<method>@<variant>+<variant>..."
        base, variants = method.split("@")
        raw = run_config(BASE_PROTOCOL[protocol], scenario, base, seed, data_dir, out)
        try:
            changes = [{base: {"lam": float(variants)}}]
        except ValueError:
            changes = [VARIANTS[name] for name in variants.split("+")]
        for change in changes:
            for section, values in change.items():
                raw[section] = {**raw.get(section, {}), **values}
        return raw
    spec = PROTOCOLS[protocol]
    raw: dict[str, Any] = {
        "method": method, "seed": seed, "device": "cpu", "out": out, "checkpoint": "task",
        "data": {"benchmark": spec["benchmark"], "data_dir": data_dir, "scenario": scenario, "validation": 0.0},
        "model": {"name": "mlp", "hidden": spec["hidden"]},
        "train": {"iterations": spec["iterations"], "batch_size": 128, "optimizer": "adam", "lr": spec["lr"]},
    }
    raw.update(HYPERPARAMETERS[scenario].get(method, {}))
    raw.update(spec.get("hyperparameters", {}).get(method, {}))  # the protocol's own, over the scenario's
    raw.update(COMMON.get(method, {}))
    return raw


def _run_one(raw: dict[str, Any]) -> dict[str, Any]:
    import torch

    from lifelong import loop

    torch.set_num_threads(1)
    started = time.perf_counter()
    run_dir, results = loop.run(raw)
    return {"results": results, "wall": time.perf_counter() - started, "run_dir": str(run_dir)}


def _finished(raw: dict[str, Any]) -> bool:
    from lifelong import store
    from lifelong.config import build_config

    return store.read_results(store.run_directory(build_config(raw))) is not None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(protocol: str, scenario: str, methods: list[str], done: dict[tuple, list[dict]]) -> list[str]:
    published = PUBLISHED.get((protocol, scenario), {})
    below: list[str] = []
    above: list[str] = []
    lines = ["| method | runs | ACC % (ours) | published ACC % | ours − published | BWT % | train s / run |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for method in methods:
        runs = done.get((protocol, scenario, method), [])
        if not runs:
            continue
        acc = mean_std([100 * r["results"]["acc"] for r in runs])
        bwt = mean_std([100 * r["results"]["bwt"] for r in runs])
        seconds = statistics.fmean(r["results"]["train_seconds"] for r in runs)
        pub = published.get(method)
        pub_text = f"{pub:.2f}" if pub is not None else "—"
        diff = f"{acc[0] - pub:+.2f}" if pub is not None else ""
        lines.append(f"| {method} | {len(runs)} | {acc[0]:.2f} ± {acc[1]:.2f} | {pub_text} | {diff} | "
                     f"{bwt[0]:.2f} ± {bwt[1]:.2f} | {seconds:.0f} |")
        if pub is not None and acc[0] < pub - 0.5:
            below.append(f"- {method}, {acc[0] - pub:+.2f}: "
                         + SHORTFALLS.get((protocol, scenario, method), "not explained yet."))
        if (protocol, scenario, method) in ABOVE:
            above.append(f"- {method}, {acc[0] - pub:+.2f}: " + ABOVE[(protocol, scenario, method)])
    return (lines + (["", "Below the published figure by more than 0.5 points:", "", *below] if below else [])
            + (["", "Above the published figure:", "", *above] if above else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--protocols", default="split-mnist,split-fmnist,pmnist")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of split-mnist and split-fmnist")
    parser.add_argument("--pmnist-seeds", default="0", help="seeds of pmnist (each run is long on a CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "accuracy"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: tabulate the runs already finished under --out")
    args = parser.parse_args()
    protocols = [p for p in args.protocols.split(",") if p]
    for p in protocols:
        if p not in PROTOCOLS:
            parser.error(f"unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")

    jobs = []
    for protocol in protocols:
        seeds = PROTOCOLS[protocol].get("seeds", args.seeds)  # a protocol may fix its seeds or take --pmnist-seeds
        seeds = args.pmnist_seeds if seeds == "--pmnist-seeds" else seeds
        for seed in [int(s) for s in seeds.split(",")]:
            for scenario in PROTOCOLS[protocol]["scenarios"]:
                for method in PROTOCOLS[protocol]["methods"]:
                    jobs.append((protocol, scenario, method, seed))
    done: dict[tuple, list[dict]] = {}
    started = time.perf_counter()
    if args.finished_only:
        jobs = [job for job in jobs if _finished(run_config(*job, args.data_dir, args.out))]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(_run_one, run_config(p, s, m, seed, args.data_dir, args.out)): (p, s, m, seed)
                   for p, s, m, seed in jobs}
        for i, future in enumerate(as_completed(futures), 1):
            p, s, m, seed = futures[future]
            out = future.result()
            done.setdefault((p, s, m), []).append(out)
            print(f"[{i}/{len(jobs)}] {p} {s} {m} seed {seed}: ACC {100 * out['results']['acc']:.2f}% "
                  f"({out['wall']:.0f} s)", flush=True)
    total = time.perf_counter() - started

    command = "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"Measured {datetime.date.today().isoformat()} with `{command.strip()}` on {os.cpu_count()} CPU cores "
             f"({args.workers} runs at a time, one torch thread each); {len(jobs)} runs, {total / 60:.0f} min of "
             "wall time in this invocation (finished runs found in the run directories are not trained again).",
             "",
             "Protocol (van de Ven & Tolias 2019): MLP with ReLU, Adam, batch 128, no validation split, a fixed number "
             "of iterations per task; split-mnist / split-fmnist: 2×400 units, lr 1e-3, 2000 iterations, 5 tasks; "
             "pmnist: 2×1000 units, lr 1e-4, 5000 iterations, 10 tasks, task-incremental (`pmnist-task`, the scenario "
             "of the published figures, with the authors' settings: EWC λ 500 with the Fisher of the predicted "
             "labels, online EWC λ 0.8 × 500 and γ 0.8, SI c 5) and domain-incremental (`pmnist`, EWC λ 100, SI c 10, "
             "no published figure beside it). ACC is the average "
             "test accuracy over all tasks after the last one; mean ± sample std over seeds. Hyperparameters: "
             "SI c and the class-IL EWC λ from the authors' code (task c 10; class λ 1e9, c 5000); "
             f"task-IL EWC λ {LAMBDA_TASK_IL:g}, chosen on seed 0 of split MNIST from "
             f"{', '.join(f'{v:g}' for v in LAMBDA_GRID)} (the `ewc-lambda` table: the authors' 1e5 left our EWC "
             "forgetting, since a model trained to 99.9 % has a tiny Fisher; chosen on test accuracy, as the "
             "protocol has no validation split); online EWC γ = 1 with EWC's λ; the other methods at their "
             "defaults (docs/methods.md), mas-alpha with λ = 1 per task seen, lwf weighted as van de Ven et al.'s "
             "code, (1/t)·CE + (1 − 1/t)·T²·KD (`lwf.lam_by_tasks`, `lwf.t_squared`), but with KD summed "
             "over the old heads in task-incremental runs (docs/methods.md, lwf) where their code averages them (the "
             "`lwf-task-mean` and `pmnist-lwf-mean` tables run their mean)."]
    for protocol in protocols:
        for scenario in PROTOCOLS[protocol]["scenarios"]:
            lines += ["", f"#### {protocol}, {scenario}-incremental", ""]
            lines += table(protocol, scenario, PROTOCOLS[protocol]["methods"], done)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("accuracy", "## Accuracy against published results\n\n" + text)


if __name__ == "__main__":
    main()
