"""Rehearsal methods: accuracy where fine-tuning fails (class- and domain-incremental), speed against Avalanche.

Protocols:

- ``avalanche``: the protocol of the side-by-side with Avalanche 0.6.0 in our rehearsal issue: split MNIST
  class-incremental, classes (1,2),(3,4),(5,6),(7,8),(9,0), one 10-way head, MLP 2×400, SGD lr 0.05, batch 32,
  1 epoch per task, memory 500 rows, replayed batch 32, no validation split. Run with ``--workers 1 --threads 2``
  on a quiet machine: its train seconds are set beside Avalanche's, measured on this machine with the same torch.
- ``grid``: the same training settings on split MNIST and split Fashion-MNIST, class- and domain-incremental,
  memories of 200 and 500 rows, every rehearsal method beside naive, joint and three regularizers (si and lwf
  at their defaults, ewc at λ 100; the best of them is named in the table).
- ``seq-mnist``: Buzzega et al. 2020's Seq-MNIST as Mammoth runs it (aimagelab/mammoth, datasets/seq_mnist.py,
  backbone/MNISTMLP.py, utils/best_args.py): classes (0,1),(2,3),…, class-incremental, MLP 2×100, raw pixels,
  plain SGD, batch 10, 1 epoch per task, memories of 200, 500 and 5120 rows, each method at Mammoth's best
  arguments for that memory (``SEQ_MNIST_BEST``).
- ``step``: the cost of one ER step (incoming batch of 32 + replayed batch of 32) against one naive step on a
  batch of the same 64 rows, median over repeated steps.

Every run is an ordinary run directory under ``--out``, so an interrupted script continues where it stopped.

    python benchmarks/rehearsal.py [--protocols avalanche,grid,step] [--seeds 0,1,2] [--workers 2]
                                   [--threads 1] [--data-dir ../shared/data] [--out runs/rehearsal] [--no-write]

Writes one section of docs/RESULTS.md per protocol (``rehearsal-<protocol>``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
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

from lifelong.methods import METHODS  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
REHEARSAL = ["er", "er-ace", "a-gem", "der", "der++", "icarl", "gdumb"]
REGULARIZERS = ["ewc", "si", "lwf"]
# Avalanche 0.6.0 on the ``avalanche`` protocol, measured on this machine (torch 2.13.0 CPU, 2 threads, seed 0)
# as our rehearsal issue reports them: (strategy, ACC %, BWT %, train s).
AVALANCHE = {"naive": ("Naive", 19.90, -98.9, 12.1), "er": ("Replay (experience-balanced buffer)", 87.14, -13.9, 19.9),
             "der++": ("DER (α 0.3, β 0.5)", 93.08, -6.2, 26.3), "er-ace": ("ER_ACE", 89.00, -5.8, 20.1),
             "a-gem": ("AGEM (100 per task, sample 256)", 55.98, -54.1, 44.3),
             "gdumb": ("GDumb (1 epoch on the memory)", 19.62, 0.0, 0.6)}
# der++ as in Avalanche's run; ewc's default λ = 1e4 diverges under SGD lr 0.05 (loss NaN in task 3), 100 does not
METHOD_SETTINGS: dict[str, dict[str, Any]] = {"der++": {"der++": {"alpha": 0.3, "beta": 0.5}},
                                              "ewc": {"ewc": {"lam": 100.0}}}
# Mammoth's utils/best_args.py for seq-mnist (unchanged from its first commit 7ab9db9 to e75a491): per memory size,
# learning rate, replayed batch (minibatch_size) and the method's own settings. "naive" is its "sgd" entry.
SEQ_MNIST_BEST: dict[str, dict[int, dict[str, Any]]] = {
    "naive": {0: {"lr": 0.03}},
    "er": {200: {"lr": 0.01, "replay": 10}, 500: {"lr": 0.1, "replay": 10}, 5120: {"lr": 0.1, "replay": 10}},
    "der": {200: {"lr": 0.03, "replay": 10, "der": {"alpha": 0.2}},
            500: {"lr": 0.03, "replay": 128, "der": {"alpha": 1.0}},
            5120: {"lr": 0.1, "replay": 128, "der": {"alpha": 0.5}}},
    "der++": {200: {"lr": 0.03, "replay": 128, "der++": {"alpha": 0.2, "beta": 1.0}},
              500: {"lr": 0.03, "replay": 10, "der++": {"alpha": 1.0, "beta": 0.5}},
              5120: {"lr": 0.1, "replay": 64, "der++": {"alpha": 0.2, "beta": 0.5}}},
    "a-gem": {m: {"lr": 0.1, "replay": 128} for m in (200, 500, 5120)},
    "icarl": {m: {"lr": 0.1, "replay": 10} for m in (200, 500, 5120)},
}


def config(benchmark: str, scenario: str, method: str, memory: int, seed: int, data_dir: str,
           out: str) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "method": method, "seed": seed, "device": "cpu", "out": out, "checkpoint": "task",
        "data": {"benchmark": benchmark, "data_dir": data_dir, "scenario": scenario, "validation": 0.0},
        "model": {"name": "mlp", "hidden": [400, 400]},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.05},
    }
    if benchmark == "split-mnist":
        raw["data"]["class_order"] = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]
    if method in REHEARSAL:  # a-gem's reference gradient on 256 rows, as the paper and Avalanche's run sample
        raw["memory"] = {"size": memory, "batch_size": 256 if method == "a-gem" else 32}
    raw.update(METHOD_SETTINGS.get(method, {}))
    return raw


def seq_mnist_config(method: str, memory: int, seed: int, data_dir: str, out: str) -> dict[str, Any]:
    best = dict(SEQ_MNIST_BEST[method][memory])
    raw: dict[str, Any] = {
        "method": method, "seed": seed, "device": "cpu", "out": out, "checkpoint": "task",
        "data": {"benchmark": "split-mnist", "data_dir": data_dir, "scenario": "class", "validation": 0.0,
                 "normalize": False, "class_order": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]},
        "model": {"name": "mlp", "hidden": [100, 100]},
        "train": {"epochs": 1, "batch_size": 10, "optimizer": "sgd", "lr": best.pop("lr")},
    }
    if memory:
        raw["memory"] = {"size": memory, "batch_size": best.pop("replay")}
    raw.update(best)
    return raw


def _run_one(raw: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    from lifelong import loop

    torch.set_num_threads(threads)
    started = time.perf_counter()
    _, results = loop.run(raw)
    return {"results": results, "wall": time.perf_counter() - started}


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def run_all(jobs: dict[tuple, dict[str, Any]], workers: int, threads: int,
            failed: dict[tuple, str]) -> dict[tuple, dict[str, Any]]:
    """Every job's output by key; a job that raises is recorded in ``failed`` (its one-line error) instead."""
    done = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, raw, threads): key for key, raw in jobs.items()}
        for i, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            try:
                out = future.result()
            except Exception as error:  # e.g. a regularizer whose default strength diverges under this SGD
                failed[key] = str(error).splitlines()[0]
                print(f"[{i}/{len(jobs)}] {' '.join(map(str, key))}: FAILED {failed[key]}", flush=True)
                continue
            done[key] = out
            print(f"[{i}/{len(jobs)}] {' '.join(map(str, key))}: ACC {100 * out['results']['acc']:.2f}% "
                  f"train {out['results']['train_seconds']:.1f} s", flush=True)
    return done


# Why a method of ours is below Avalanche's figure on the ``avalanche`` protocol, as far as we know.
BELOW_AVALANCHE = {
    "er": "our memory is a reservoir over the whole stream; Avalanche's Replay keeps an equal share per experience "
          "(task), which holds more rows of the early tasks late in the stream. How much of the gap that explains "
          "is not measured yet.",
    "der++": "not explained yet. One known difference: the incoming rows' cross-entropy here covers the classes "
             "reached so far (as for every method in this library), not all ten outputs.",
    "a-gem": "the memories differ: Avalanche's AGEM keeps 100 rows per finished experience, ours a 500-row reservoir "
             "over the finished tasks' rows (500 rows of task 1 after the first task). Not explained further yet.",
    "er-ace": "within one standard deviation of our three seeds (theirs is one seed).",
    "gdumb": "not comparable: Avalanche's run fits its network for 1 epoch on the memory, ours for gdumb.epochs = 16.",
}


def avalanche_table(seeds: list[int], done: dict[tuple, dict[str, Any]]) -> list[str]:
    lines = ["| method | runs | ACC % | BWT % | train s / run | Avalanche strategy | its ACC % | its train s | "
             "speed-up |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    notes: list[str] = []
    for method in ["naive", *REHEARSAL]:
        runs = [done[("avalanche", method, s)]["results"] for s in seeds if ("avalanche", method, s) in done]
        if not runs:
            continue
        seconds = statistics.fmean(r["train_seconds"] for r in runs)
        name, acc, _, theirs = AVALANCHE.get(method, ("—", None, None, None))
        ratio = f"{theirs / seconds:.1f}×" if theirs else ""
        lines.append(f"| {method} | {len(runs)} | {mean_std([100 * r['acc'] for r in runs])} | "
                     f"{mean_std([100 * r['bwt'] for r in runs])} | {seconds:.1f} | {name} | "
                     f"{'' if acc is None else f'{acc:.2f}'} | {'' if theirs is None else theirs} | {ratio} |")
        ours = statistics.fmean(100 * r["acc"] for r in runs)
        if acc is not None and ours < acc - 0.2 or method == "gdumb":
            notes.append(f"- {method}{'' if acc is None else f', {ours - acc:+.2f}'}: "
                         + BELOW_AVALANCHE.get(method, "not explained yet."))
    return lines + (["", "Below Avalanche's accuracy (or not comparable):", "", *notes] if notes else [])


def grid_table(benchmark: str, scenario: str, seeds: list[int], done: dict[tuple, dict[str, Any]]) -> list[str]:
    def acc(method: str, memory: int | None) -> list[float]:
        return [100 * done[k]["results"]["acc"] for s in seeds
                if (k := ("grid", benchmark, scenario, method, memory, s)) in done]

    regularizers = {m: acc(m, None) for m in REGULARIZERS if acc(m, None)}
    best = max(regularizers, key=lambda m: statistics.fmean(regularizers[m]), default=None)
    lines = ["| method | memory 200: ACC % | memory 500: ACC % |", "|---|---:|---:|"]
    for method, label in [("naive", "naive"), ("joint", "joint (upper bound)")] + \
            ([(best, f"best regularizer ({best})")] if best else []):
        if acc(method, None):
            value = mean_std(acc(method, None))
            lines.append(f"| {label} | {value} | {value} |")
    for method in REHEARSAL:
        cells = [mean_std(acc(method, m)) if acc(method, m) else "—" for m in (200, 500)]
        if any(c != "—" for c in cells):
            lines.append(f"| {method} | {cells[0]} | {cells[1]} |")
    return lines


def seq_mnist_table(seeds: list[int], done: dict[tuple, dict[str, Any]]) -> list[str]:
    lines = ["| method | memory 200: ACC % | memory 500: ACC % | memory 5120: ACC % |", "|---|---:|---:|---:|"]
    for method, sizes in SEQ_MNIST_BEST.items():
        cells = []
        for memory in (200, 500, 5120):
            key_memory = 0 if method == "naive" else memory
            accs = [100 * done[k]["results"]["acc"] for s in seeds
                    if (k := ("seq-mnist", method, key_memory, s)) in done]
            cells.append(mean_std(accs) if accs else "—")
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return lines


def step_speed(data_dir: str, repeats: int = 500) -> list[str]:
    """Median seconds of one ER step (32 incoming + 32 replayed rows) and of the plain (naive) optimizer step on
    64 rows, on the same network: the two are interleaved so that both see the same weights and machine state."""
    import torch

    from lifelong import loop
    from lifelong.config import build_config
    from lifelong.data.batches import Stream, TaskView
    from lifelong.data.benchmarks import build_benchmark

    cfg = build_config(config("split-mnist", "class", "er", 500, 0, data_dir, "/tmp/unused"))
    benchmark = build_benchmark(cfg.data, cfg.seed)
    er = loop.build_method(cfg, benchmark, torch.device("cpu"))
    view = TaskView(benchmark.tasks[0], benchmark.tasks[0].train, torch.device("cpu"))
    er.training_views(view.task, [view])
    er.before_task(view.task)
    small = list(Stream([view], 32, torch.Generator().manual_seed(0)).epoch())
    large = list(Stream([view], 64, torch.Generator().manual_seed(1)).epoch())
    for batch in small[:50]:  # fill the memory, warm up
        er.train_batch(batch)
    er_times, naive_times = [], []
    for i in range(repeats):
        start = time.perf_counter()
        er.train_batch(small[i % len(small)])
        er_times.append(time.perf_counter() - start)
        batch = large[i % len(large)]
        start = time.perf_counter()
        er.train_step(batch.inputs, batch.targets, batch.task_ids)  # Method.train_step: the naive step
        naive_times.append(time.perf_counter() - start)
    er_s, naive_s = statistics.median(er_times), statistics.median(naive_times)
    return ["| step | median ms | ratio to naive |", "|---|---:|---:|",
            f"| naive step, 64 rows | {1000 * naive_s:.3f} | 1.00 |",
            f"| er step, 32 incoming + 32 replayed (draw, prepare, store included) | {1000 * er_s:.3f} | "
            f"{er_s / naive_s:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="avalanche,grid,step")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(REHEARSAL), help="rehearsal methods to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--out", default=str(ROOT / "runs" / "rehearsal"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    jobs: dict[tuple, dict[str, Any]] = {}
    if "avalanche" in protocols:
        for method in ["naive", *methods]:
            for seed in seeds:
                jobs[("avalanche", method, seed)] = config("split-mnist", "class", method, 500, seed, args.data_dir,
                                                           args.out)
    if "grid" in protocols:
        for benchmark in ("split-mnist", "split-fmnist"):
            for scenario in ("class", "domain"):
                for seed in seeds:
                    for method in ["naive", "joint", *REGULARIZERS]:
                        jobs[("grid", benchmark, scenario, method, None, seed)] = config(
                            benchmark, scenario, method, 0, seed, args.data_dir, args.out)
                    for method in [m for m in methods if scenario in METHODS[m].scenarios]:
                        for memory in (200, 500):
                            jobs[("grid", benchmark, scenario, method, memory, seed)] = config(
                                benchmark, scenario, method, memory, seed, args.data_dir, args.out)
    if "seq-mnist" in protocols:
        for method, sizes in SEQ_MNIST_BEST.items():
            if method != "naive" and method not in methods:
                continue
            for memory in sizes:
                for seed in seeds:
                    jobs[("seq-mnist", method, memory, seed)] = seq_mnist_config(method, memory, seed, args.data_dir,
                                                                                args.out)
    started = time.perf_counter()
    failed: dict[tuple, str] = {}
    done = run_all(jobs, args.workers, args.threads, failed)
    command = "python benchmarks/rehearsal.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = (f"Command: `{command}` ({time.perf_counter() - started:.0f} s, torch threads per run: {args.threads}, "
              f"workers: {args.workers}). ACC and BWT: mean ± sample std over seeds {args.seeds}.")
    sections: dict[str, list[str]] = {}
    if "avalanche" in protocols:
        sections["rehearsal-avalanche"] = [
            "## Rehearsal: split MNIST class-incremental, side by side with Avalanche 0.6.0", "", header, "",
            "MLP 2×400 with one 10-way head, SGD lr 0.05, batch 32, 1 epoch per task, memory 500, replayed batch 32 "
            "(a-gem: 256), classes (1,2),(3,4),(5,6),(7,8),(9,0). Avalanche's figures: seed 0, measured on this "
            "machine with the same torch 2.13.0 (CPU, 2 threads), as our rehearsal issue reports them; speed-up = "
            "their train s / ours. Those Avalanche seconds are quoted from the issue, not measured by this script; "
            "measured by us on a quiet machine, alternating with our runs (section `peers`, "
            "benchmarks/peers/peers.py), Avalanche's training takes 8.9-18.8 s, not 19.9-44.3 s, and our training "
            "time leads by 1.1-1.7×, not the speed-ups of this table.", "", *avalanche_table(seeds, done)]
    if "grid" in protocols:
        lines = ["## Rehearsal: split MNIST and split Fashion-MNIST, class- and domain-incremental", "", header, "",
                 "Training as in the Avalanche side-by-side (MLP 2×400, SGD lr 0.05, batch 32, 1 epoch per task); "
                 "memories of 200 and 500 rows. A method that does not serve the scenario is left out (icarl: "
                 "class-incremental only; er-ace: no domain-incremental)."]
        for benchmark in ("split-mnist", "split-fmnist"):
            for scenario in ("class", "domain"):
                lines += ["", f"### {benchmark}, {scenario}-incremental", "",
                          *grid_table(benchmark, scenario, seeds, done)]
        failures = sorted({f"{key[3]}: {error}" for key, error in failed.items() if key[0] == "grid"})
        if failures:
            lines += ["", "Runs that stopped (left out of the tables above):", "", *[f"- {f}" for f in failures]]
        sections["rehearsal-grid"] = lines
    if "seq-mnist" in protocols:
        sections["rehearsal-seq-mnist"] = [
            "## Rehearsal: Seq-MNIST as Buzzega et al. 2020 run it (Mammoth's protocol and best arguments)", "",
            header, "", "Classes (0,1),(2,3),…, class-incremental, MLP 2×100, raw pixels, plain SGD, batch 10, "
            "1 epoch per task; learning rate, replayed batch and α/β per method and memory from Mammoth's "
            "utils/best_args.py. The paper's own Seq-MNIST table could not be read here (no copy of its text in "
            "the sources this project can reach), so no published figure stands beside ours.", "",
            *seq_mnist_table(seeds, done)]
    if "step" in protocols:
        sections["rehearsal-step"] = [
            "## Rehearsal: the cost of an ER step", "", f"Command: `{command}`.", "",
            f"Split MNIST task 1, MLP 2×400, {__import__('torch').get_num_threads()} torch threads; median over 500 "
            "interleaved steps on one network. Goal: at most 1.1× the naive step.", "", *step_speed(args.data_dir)]
    for name, lines in sections.items():
        print("\n".join(lines) + "\n")
        if not args.no_write:
            update_section(name, "\n".join(lines))

if __name__ == "__main__":
    main()
