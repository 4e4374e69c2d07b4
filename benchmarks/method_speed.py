"""What each continual-learning method costs on top of plain fine-tuning (``naive``), on the CPU.

split-mnist (real MNIST from ``--data-dir``), the 2×400 MLP, batch 128, Adam lr 1e-3, task-incremental heads,
no validation split, every method at its default hyperparameters (``imm-mean`` / ``imm-mode`` with
``imm.transfer: l2``, so they have a penalty to pay for). Three measurements:

1. **Step** — every method in ``METHODS`` except ``single-task``, ``joint``, ``gs-mask`` and ``mark`` (these two
   need their own conv networks; their costs are in their own sections) and the rehearsal methods (their steps
   hold more rows; benchmarks/rehearsal.py): a fresh method trains task 1 for
   a few steps and calls ``after_task`` (so its penalty / teacher / regularizer is active), then starts task 2
   (``before_task``); only ``method.train_batch`` on task 2's batches (drawn beforehand from the task's
   ``Stream``, as the loop's, with their row indices) is timed,
   one step at a time. All methods are set up first, then stepped in turns (one step of each method in turn,
   the order rotating from one repeat to the next), so a change in machine load hits all alike. Median step time, and
   its ratio to ``naive``'s. Goal: the penalty methods (ewc, online-ewc, si, mas, mas-alpha, imm-mean, imm-mode
   with L2-transfer) ≤ 1.15× naive.
2. **Importance** — for ewc (Fisher; also its ``sample`` and ``expected`` modes, named ``ewc:sample``,
   ``ewc:expected``), online-ewc, mas, mas-alpha and imm-mode: the time of ``after_task`` over
   task 1's whole training data (~12,000 samples), against one training epoch of task 1 with ``naive`` as the
   loop runs it (batches drawn from the task's ``Stream`` + ``train_step``). Goal: ≤ 1 epoch.
   The same for ewc, ewc:expected, mas and imm-mode on the conv backbones (``--conv-models``: alexnet,
   resnet18-reduced, gs-conv), split-fmnist read at 3×32×32, into the section ``conv-importance`` (issue 22).
3. **Run** — ``lifelong.run(..., force=True)`` of each method over the 5 tasks, 1 epoch per task;
   ``results["train_seconds"]`` (training epochs + ``after_task``; evaluation and checkpoints excluded)
   against naive's.

Before each block the script waits (up to ``--wait-seconds``) for the 1-minute load average to fall below 1.0
and notes it, and measures other processes' CPU use during the block (/proc/stat).

    python benchmarks/method_speed.py [--data-dir ../shared/data] [--repeats 5] [--steps 20]
                                      [--run-repeats 3] [--threads 2] [--skip PARTS] [--conv-fraction 0.4]
                                      [--conv-models alexnet,resnet18-reduced,gs-conv] [--quick] [--no-write]

Writes the tables into docs/RESULTS.md (section ``method-speed``) unless ``--quick`` (a smoke test on small
subsets) or ``--no-write`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout's lifelong, not another installed copy
sys.path.insert(1, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import lifelong  # noqa: E402
from lifelong.config import Config, build_config  # noqa: E402
from lifelong.data.batches import Stream, TaskView  # noqa: E402
from lifelong.data.benchmarks import build_benchmark  # noqa: E402
from lifelong.data.scenarios import Benchmark  # noqa: E402
from lifelong.loop import build_method  # noqa: E402
from lifelong.methods import METHODS  # noqa: E402
from lifelong.methods.base import Method  # noqa: E402
from results_md import update_section  # noqa: E402
from throughput import cpu_model, cpu_ticks, others_share, own_cpu_seconds  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
EXCLUDED = ("single-task", "joint", "gs-mask", "mark")  # gs-mask and mark bring their own networks, not the MLP
PENALTY_METHODS = ("ewc", "online-ewc", "si", "mas", "mas-alpha", "imm-mean", "imm-mode")
IMPORTANCE_METHODS = ("ewc", "ewc:sample", "ewc:expected", "online-ewc", "mas", "mas-alpha", "imm-mode")
STEP_GOAL = 1.15
IMPORTANCE_GOAL = 1.0
LOAD_LIMIT = 1.0


def log(msg: str) -> None:
    print(msg, flush=True)


def make_config(method: str, data_dir: str, out: str, train_fraction: float, max_tasks: int | None = None,
                epochs: int = 1, model: str = "mlp") -> Config:
    conv = model != "mlp"  # the conv backbones read Fashion-MNIST at 3×32×32, as split CIFAR-10 would be read
    method, _, fisher = method.partition(":")  # "ewc:expected": EWC with that Fisher mode
    raw: dict[str, Any] = {
        "method": method,
        "seed": 0,
        "device": "cpu",
        "out": out,
        "checkpoint": "task",
        "model": {"name": model},
        "data": {"benchmark": "split-fmnist" if conv else "split-mnist", "data_dir": data_dir, "validation": 0.0,
                 "scenario": "task", "train_fraction": train_fraction, "max_tasks": max_tasks, "rgb32": conv},
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
    }
    if method.startswith("imm-"):
        raw["imm"] = {"transfer": "l2"}
    if fisher:
        raw[method] = {"fisher": fisher}
    return build_config(raw)


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_for_low_load(timeout: float) -> float:
    """Sleep until the 1-minute load average is below LOAD_LIMIT (at most ``timeout`` s); returns it."""
    deadline, said = time.monotonic() + timeout, False
    while True:
        load = load_average()
        if load < LOAD_LIMIT or time.monotonic() > deadline:
            if said:
                log(f"  load average {load:.2f}" + ("" if load < LOAD_LIMIT else " (gave up waiting)"))
            return load
        if not said:
            log(f"  waiting for the load average ({load:.2f}) to fall below {LOAD_LIMIT}")
            said = True
        time.sleep(5.0)


class Block:
    """One measurement block: the load average before it and other processes' CPU share during it."""

    def __init__(self, name: str, wait: float):
        self.name, self.wait = name, wait
        self.load = 0.0
        self.busy: float | None = None

    def __enter__(self) -> "Block":
        self.load = wait_for_low_load(self.wait)
        log(f"{self.name}: load average {self.load:.2f} at the start")
        self.ticks, self.own = cpu_ticks(), own_cpu_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.busy = others_share(self.ticks, cpu_ticks(), own_cpu_seconds() - self.own)

    def describe(self) -> str:
        busy = "?" if self.busy is None else f"{self.busy:.0%}"
        return f"load average {self.load:.2f} at the start, other processes {busy} of the CPUs during it"


def premade_batches(task_view: TaskView, batch_size: int, seed: int, count: int | None = None) -> list:
    """The task's batches as the loop's Stream makes them (inputs with their rows), drawn beforehand."""
    batches = list(Stream([task_view], batch_size, torch.Generator().manual_seed(seed)).epoch())
    return batches if count is None else batches[:count]


def prepare(method: Method, task1, task2, view1: TaskView, warm_batches: list) -> None:
    """Train task 1 briefly, consolidate (after_task), start task 2."""
    method.before_task(task1)
    method.model.train()
    method.training_views(task1, [view1])
    method.before_epoch(task1, view1, 0)
    for batch in warm_batches:
        method.train_batch(batch)
    method.after_task(task1, view1)
    method.before_task(task2)
    method.model.train()


# --- 1. step time -------------------------------------------------------------------------------------------
def measure_steps(names: list[str], data_dir: str, out: str, fraction: float, warm_steps: int, steps: int,
                  repeats: int, wait: float) -> tuple[dict[str, list[float]], Block]:
    cfgs = {n: make_config(n, data_dir, out, fraction, max_tasks=2) for n in names}
    benchmark: Benchmark = build_benchmark(cfgs["naive"].data, 0)
    task1, task2 = benchmark.tasks[0], benchmark.tasks[1]
    device = torch.device("cpu")
    view1, view2 = TaskView(task1, task1.train, device), TaskView(task2, task2.train, device)
    warm_batches = premade_batches(view1, 128, 0, warm_steps)
    task2_batches = premade_batches(view2, 128, 1)
    methods: dict[str, Method] = {}
    for n in names:
        started = time.perf_counter()
        torch.manual_seed(0)
        methods[n] = build_method(cfgs[n], benchmark, device)
        prepare(methods[n], task1, task2, view1, warm_batches)
        methods[n].training_views(task2, [view1, view2])
        methods[n].before_epoch(task2, view2, 0)  # as the loop, before the epoch's batches
        for batch in task2_batches[:3]:  # warm-up steps on task 2 (first-call allocations, LwF's teacher cache)
            methods[n].train_batch(batch)
        log(f"  {n}: ready ({time.perf_counter() - started:.1f} s: {warm_steps} steps on task 1 + after_task)")
    times: dict[str, list[float]] = {n: [] for n in names}
    cursor = {n: 3 for n in names}
    with Block("step timing", wait) as block:
        for r in range(repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for _ in range(steps):  # one step of each method in turn, so a load burst hits all alike
                for n in order:
                    batch = task2_batches[cursor[n] % len(task2_batches)]
                    cursor[n] += 1
                    start = time.perf_counter()
                    methods[n].train_batch(batch)
                    times[n].append(time.perf_counter() - start)
            log(f"  repeat {r + 1}/{repeats}: naive median so far {1e3 * statistics.median(times['naive']):.2f} ms")
    return times, block


# --- 2. importance cost -------------------------------------------------------------------------------------
def measure_importance(names: list[str], data_dir: str, out: str, fraction: float, warm_steps: int, repeats: int,
                       wait: float, model: str = "mlp") -> tuple[dict[str, list[float]], list[float], int, Block]:
    cfgs = {n: make_config(n, data_dir, out, fraction, max_tasks=1, model=model) for n in ["naive", *names]}
    benchmark = build_benchmark(cfgs["naive"].data, 0)
    task = benchmark.tasks[0]
    device = torch.device("cpu")
    view = TaskView(task, task.train, device)
    warm_batches = premade_batches(view, 128, 0, warm_steps)

    def naive_epoch() -> float:
        torch.manual_seed(0)
        method = build_method(cfgs["naive"], benchmark, device)
        method.before_task(task)
        method.model.train()
        stream = Stream([view], 128, torch.Generator().manual_seed(0))
        start = time.perf_counter()
        for x, y, task_ids in stream.epoch():  # as the loop's epoch: batches from the stream + train_step
            method.train_step(x, y, task_ids)
        return time.perf_counter() - start

    def importance(name: str) -> float:
        torch.manual_seed(0)
        method = build_method(cfgs[name], benchmark, device)
        method.before_task(task)
        method.model.train()
        method.training_views(task, [view])
        method.before_epoch(task, view, 0)
        for batch in warm_batches:
            method.train_batch(batch)
        start = time.perf_counter()
        method.after_task(task, view)
        return time.perf_counter() - start

    naive_epoch()  # warm-up
    for n in names:
        importance(n)
    epochs: list[float] = []
    costs: dict[str, list[float]] = {n: [] for n in names}
    with Block("importance timing", wait) as block:
        for r in range(repeats):
            epochs.append(naive_epoch())
            order = names[r % len(names):] + names[: r % len(names)]
            for n in order:
                costs[n].append(importance(n))
            log(f"  repeat {r + 1}/{repeats}: naive epoch {epochs[-1]:.2f} s; "
                + ", ".join(f"{n} {costs[n][-1]:.2f} s" for n in names))
    return costs, epochs, len(view), block


def layer_arithmetic(name: str, data_dir: str, out: str, fraction: float, model: str) -> tuple[float, float, int]:
    """Multiply-adds per sample of the network's conv and linear layers: (forward, forward of the layers whose
    input is the data; no input gradient is computed for those), and the samples of the task."""
    cfg = make_config(name, data_dir, out, fraction, max_tasks=1, model=model)
    benchmark = build_benchmark(cfg.data, 0)
    task = benchmark.tasks[0]
    view = TaskView(task, task.train, torch.device("cpu"))
    network = build_method(cfg, benchmark, torch.device("cpu")).model.eval()
    counts = [0.0, 0.0]

    def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        per_output = module.weight[0].numel() if isinstance(module, torch.nn.Conv2d) else module.in_features
        macs = output[0].numel() * per_output
        counts[0] += macs
        counts[1] += 0 if args[0].requires_grad else macs

    hooks = [m.register_forward_hook(count) for m in network.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.enable_grad():
            network(view.inputs(slice(0, 1)), task.id)
    finally:
        for h in hooks:
            h.remove()
    return counts[0], counts[1], len(view)


def arithmetic_note(forward: float, first: float, samples: int, epoch: float, costs: dict[str, list[float]]) -> str:
    """One paragraph: the arithmetic of the epoch and of a closed-form pass, and the rates both reached."""
    flops = 2 * samples * (3 * forward - first) / 1e9
    rates = ", ".join(f"{n} {flops / statistics.median(c):.0f}" for n, c in costs.items())
    gflop = 2 * samples / 1e9
    return (f"Arithmetic (conv and linear layers, 2 FLOPs a multiply-add): the forward pass {gflop * forward:.1f} "
            f"GFLOP over the {samples:,} samples, the input gradients {gflop * (forward - first):.1f} (none "
            f"for the layers reading the data), the weight gradients {gflop * forward:.1f}. The naive "
            f"epoch does all three, {flops:.1f} GFLOP; so does one closed-form importance pass, its per-sample "
            "products having the weight gradients' multiplies (ewc:expected: one pass per class but one, here one). "
            f"Rates reached: the epoch {flops / epoch:.0f} GFLOP/s, the importances {rates} GFLOP/s "
            "(BatchNorm, activations, copies and the optimizer not counted).")


# --- 3. whole run -------------------------------------------------------------------------------------------
def measure_runs(names: list[str], data_dir: str, out: str, fraction: float, repeats: int,
                 wait: float) -> tuple[dict[str, list[float]], Block]:
    def run(name: str, max_tasks: int | None = None, iterations: int | None = None) -> float:
        cfg = make_config(name, data_dir, out, fraction, max_tasks=max_tasks)
        if iterations is not None:
            cfg = build_config({**cfg.to_dict(), "train": {**cfg.train.model_dump(), "iterations": iterations}})
        torch.manual_seed(0)
        _, results = lifelong.run(cfg, progress=False, force=True)
        return float(results["train_seconds"])

    run("naive", max_tasks=1, iterations=5)  # warm-up
    seconds: dict[str, list[float]] = {n: [] for n in names}
    with Block("whole runs", wait) as block:
        for r in range(repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for n in order:
                seconds[n].append(run(n))
                log(f"  repeat {r + 1}/{repeats}: {n} {seconds[n][-1]:.2f} s")
    return seconds, block


# --- report -------------------------------------------------------------------------------------------------
def step_table(times: dict[str, list[float]]) -> tuple[str, str]:
    base = statistics.median(times["naive"])
    lines = ["| method | median step | step / naive | penalty-method goal (≤ 1.15×) |", "|---|---:|---:|---|"]
    worst: tuple[float, str] = (0.0, "")
    for n, t in times.items():
        ratio = statistics.median(t) / base
        goal = ""
        if n in PENALTY_METHODS:
            goal = "met" if ratio <= STEP_GOAL else "**not met**"
            worst = max(worst, (ratio, n))
        lines.append(f"| {n} | {1e3 * statistics.median(t):.2f} ms | {ratio:.2f}× | {goal} |")
    missed = [n for n in PENALTY_METHODS if n in times and statistics.median(times[n]) / base > STEP_GOAL]
    if not worst[1]:
        verdict = "no penalty method measured"
    elif missed:
        verdict = (f"not met by {', '.join(missed)} (worst {worst[1]} at {worst[0]:.2f}×, "
                   f"{worst[0] / STEP_GOAL - 1:.0%} over the goal)")
    else:
        verdict = f"met by every penalty method (worst {worst[1]} at {worst[0]:.2f}×, margin {STEP_GOAL - worst[0]:.2f}×)"
    return "\n".join(lines), f"Goal penalty-method step ≤ {STEP_GOAL}× naive: {verdict}."


def importance_table(costs: dict[str, list[float]], epochs: list[float], samples: int) -> tuple[str, str]:
    epoch = statistics.median(epochs)
    lines = [f"| method | after_task over {samples:,} samples | / naive epoch ({epoch:.2f} s) | goal (≤ 1 epoch) |",
             "|---|---:|---:|---|"]
    ratios = {}
    for n, c in costs.items():
        ratios[n] = statistics.median(c) / epoch
        lines.append(f"| {n} | {statistics.median(c):.2f} s | {ratios[n]:.2f} epochs | "
                     f"{'met' if ratios[n] <= IMPORTANCE_GOAL else '**not met**'} |")
    worst = max(ratios, key=ratios.get)
    missed = [n for n, r in ratios.items() if r > IMPORTANCE_GOAL]
    if missed:
        verdict = (f"not met by {', '.join(missed)} (worst {worst} at {ratios[worst]:.2f} epochs, "
                   f"{ratios[worst] - IMPORTANCE_GOAL:.0%} of an epoch over)")
    else:
        verdict = f"met by all (worst {worst} at {ratios[worst]:.2f} epochs)"
    return "\n".join(lines), f"Goal importance ≤ 1 naive epoch: {verdict}."


def run_table(seconds: dict[str, list[float]]) -> tuple[str, str]:
    base = statistics.median(seconds["naive"])
    lines = ["| method | train_seconds (5 tasks × 1 epoch) | / naive |", "|---|---:|---:|"]
    for n, s in seconds.items():
        lines.append(f"| {n} | {statistics.median(s):.2f} s | {statistics.median(s) / base:.2f}× |")
    slowest = max(seconds, key=lambda n: statistics.median(seconds[n]))
    reading = (f"Whole runs (no goal set): naive {base:.2f} s; slowest {slowest} at "
               f"{statistics.median(seconds[slowest]) / base:.2f}× naive.")
    return "\n".join(lines), reading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="folder holding mnist/ (default: ../shared/data next to the repository)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds of step timing (each: --steps steps per method) and of importance timing")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method per round (default 20)")
    parser.add_argument("--warm-steps", type=int, default=30,
                        help="training steps on task 1 before after_task (default 30)")
    parser.add_argument("--run-repeats", type=int, default=3, help="whole runs of each method (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--wait-seconds", type=float, default=120.0,
                        help="longest wait for load average < 1.0 before each block (default 120)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: step, importance, run, conv-importance")
    parser.add_argument("--conv-fraction", type=float, default=0.4,
                        help="train fraction of split-fmnist's first task for the conv importance (default 0.4)")
    parser.add_argument("--conv-models", default="alexnet,resnet18-reduced,gs-conv",
                        help="comma-separated conv backbones of the conv importance (default all three)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: small subsets, one repeat, nothing written to docs/RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)

    if not (Path(args.data_dir) / "mnist").is_dir():
        print(f"error: no mnist/ folder in '{args.data_dir}'; pass --data-dir", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    fraction, repeats, steps, run_repeats, wait = 1.0, args.repeats, args.steps, args.run_repeats, args.wait_seconds
    if args.quick:
        fraction, repeats, steps, run_repeats, wait = 0.05, 1, 3, 1, 0.0
    rehearsal = [n for n, m in METHODS.items() if "memory" in m.extra_sections]  # benchmarks/rehearsal.py
    names = ["naive"] + [n for n in METHODS if n not in (*EXCLUDED, *rehearsal, "naive")]
    importance_names = [n for n in IMPORTANCE_METHODS if n.partition(":")[0] in METHODS]

    started = time.time()
    sections: list[str] = []
    readings: list[str] = []
    conv_sections: list[str] = []  # written to their own section (conv-importance) of docs/RESULTS.md
    conv_readings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lifelong-method-speed-") as out:
        if "step" not in skip:
            log(f"1. step time: {', '.join(names)}")
            times, block = measure_steps(names, args.data_dir, out, fraction, args.warm_steps, steps, repeats, wait)
            table, reading = step_table(times)
            readings.append(reading)
            sections += ["### 1. Training step on task 2, after task 1's after_task", "",
                         f"{args.warm_steps} Adam steps on task 1, `after_task` on task 1's whole training data, "
                         f"`before_task` of task 2, 3 warm-up steps; then {repeats} rounds of {steps} timed "
                         "`train_batch` calls per method on task-2 batches drawn beforehand, methods interleaved "
                         f"step by step (one step of each in turn; order rotating each round); median over {repeats * steps} steps. Block: "
                         f"{block.describe()}.", "", table, "", reading, ""]
            log(table)
        if "importance" not in skip:
            log(f"2. importance cost: {', '.join(importance_names)}")
            costs, epochs, samples, block = measure_importance(importance_names, args.data_dir, out, fraction,
                                                               args.warm_steps, repeats, wait)
            table, reading = importance_table(costs, epochs, samples)
            readings.append(reading)
            sections += ["### 2. Importance / consolidation cost (`after_task`) against one naive epoch", "",
                         f"Each repeat: a fresh method, {args.warm_steps} Adam steps on task 1, then `after_task` "
                         f"over task 1's whole training set ({samples:,} samples), timed; the naive epoch is one "
                         "pass over the same data as the loop runs it (batches from `Stream` + `train_step`, "
                         f"{-(-samples // 128)} steps). Median of {repeats}, interleaved. Block: {block.describe()}.",
                         "", table, "", reading, ""]
            log(table)
        if "conv-importance" not in skip:
            conv_names = [n for n in ("ewc", "ewc:expected", "mas", "imm-mode") if n.partition(":")[0] in METHODS]
            for model in [m.strip() for m in args.conv_models.split(",") if m.strip()]:
                log(f"2b. importance cost on {model}: {', '.join(conv_names)}")
                conv_fraction = 0.02 if args.quick else args.conv_fraction
                costs, epochs, samples, block = measure_importance(conv_names, args.data_dir, out, conv_fraction,
                                                                   args.warm_steps, repeats, wait, model=model)
                table, reading = importance_table(costs, epochs, samples)
                forward, first, _ = layer_arithmetic("naive", args.data_dir, out, conv_fraction, model)
                conv_readings.append(f"{model}: {reading}")
                conv_sections += [f"### Importance cost on `{model}` against one naive epoch", "",
                             "The same measurement on a conv backbone: Fashion-MNIST read at 3×32×32 "
                             f"(`data.rgb32`), the first task of split-fmnist at train fraction {conv_fraction} "
                             f"({samples:,} samples), batch 128, Adam lr 1e-3. Median of {repeats}, interleaved. "
                             f"Block: {block.describe()}.", "", table, "", reading, "",
                             arithmetic_note(forward, first, samples, statistics.median(epochs), costs), ""]
                log(table)
        if "run" not in skip:
            log(f"3. whole runs: {', '.join(names)}")
            seconds, block = measure_runs(names, args.data_dir, out, fraction, run_repeats, wait)
            table, reading = run_table(seconds)
            readings.append(reading)
            sections += ["### 3. Whole run, 5 tasks × 1 epoch", "",
                         "`lifelong.run(config, force=True)`, `results[\"train_seconds\"]` (training epochs and "
                         "`after_task`; evaluation and checkpoints excluded). "
                         f"Median of {run_repeats}, methods interleaved. Block: {block.describe()}.",
                         "", table, "", reading, ""]
            log(table)
    elapsed = time.time() - started

    command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if Path(sys.argv[0]).exists()
                                       else sys.argv[0], *sys.argv[1:]])
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"torch.set_num_threads({args.threads}), Python {platform.python_version()}")
    conv_markdown = "\n".join([
        "## Importance on convolutional backbones",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine}. Command: `{command}` (took "
        f"{elapsed / 60:.1f} min). Goal (issue 22): every importance ≤ 1 naive epoch of the same data.",
        "",
        "Readings:",
        "",
        *[f"- {r}" for r in conv_readings],
        "",
        *conv_sections,
    ])
    markdown = "\n".join([
        "## Method speed: cost of each method over naive fine-tuning",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine}; load average before each block is given "
        "with the block.",
        "",
        f"Command: `{command}` (run from the repository root; took {elapsed / 60:.1f} min)",
        "",
        "split-mnist (real MNIST, 5 tasks of 2 digits, task-incremental heads), 2×400 MLP, batch 128, Adam lr 1e-3, "
        "CPU, no validation split, every method at its defaults except `imm.transfer: l2` for imm-mean / imm-mode. "
        "Wall-clock `time.perf_counter`.",
        "",
        "Readings:",
        "",
        *[f"- {r}" for r in readings],
        "",
        *sections,
    ])
    print()
    print(markdown)
    if conv_sections:
        print(conv_markdown)
    if not (args.quick or args.no_write):
        if sections:
            print(f"\nwritten to {update_section('method-speed', markdown)}")
        if conv_sections:
            print(f"\nwritten to {update_section('conv-importance', conv_markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
