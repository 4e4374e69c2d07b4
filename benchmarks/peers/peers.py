"""Our methods and Avalanche 0.6.0's strategies side by side, on the same protocol, in one invocation.

Each run is a fresh process, timed from its start to its exit (imports, data, training, evaluation, and for
ours the run directory it writes), and ours and theirs alternate (ours, theirs, ours, theirs, ...) so that a
change of the machine's load falls on both. Protocols (benchmarks/peers/README.md has the details):

- ``task``: split MNIST task-incremental, classes (1,2),(3,4),(5,6),(7,8),(9,0), MLP 2×400 with a head of two
  outputs per task, SGD lr 0.01, batch 64, 1 epoch per task; naive, ewc, si, lwf, mas.
- ``class``: the protocol of benchmarks/rehearsal.py's ``avalanche`` table: split MNIST class-incremental, the
  same classes, one 10-way head, SGD lr 0.05, batch 32, 1 epoch per task, memory 500; er, der++, er-ace, a-gem.

Avalanche runs in a scratch virtual environment outside the repository (``--venv``, default
~/.cache/lifelong-peers/venv), which this script builds on first use: the project's torch (2.13.0, CPU), then
avalanche-lib 0.6.0 and the torchvision it needs under the constraint torch==<that version>, after a dry run
that stops if pip would replace torch. Avalanche is never a dependency of lifelong and never runs in CI or
tests. It reads the same MNIST files: this script reads them with lifelong's reader and saves the arrays as an
.npz that benchmarks/peers/theirs.py loads (no download).

    python benchmarks/peers/peers.py [--protocols task,class] [--seeds 0,1,2] [--threads 2]
        [--task-methods naive,ewc,si,lwf,mas] [--class-methods er,der++,er-ace,a-gem] [--tasks 5]
        [--data-dir ../shared/data] [--venv ~/.cache/lifelong-peers/venv] [--work runs/peers] [--no-write]

Writes section ``peers`` of docs/RESULTS.md unless ``--no-write``; ``--setup-only`` builds the environment and
stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's lifelong
sys.path.insert(1, str(HERE.parent))

from rehearsal import config as rehearsal_config  # noqa: E402
from results_md import update_section  # noqa: E402

from lifelong import metrics  # noqa: E402
from lifelong.data.benchmarks import MNIST_PAIRS  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
DEFAULT_VENV = Path.home() / ".cache" / "lifelong-peers" / "venv"
AVALANCHE_VERSION = "0.6.0"
SECTION = "peers"
GOAL = {"task": 4.0, "class": 3.0}  # issue 20: whole runs ≥ 4× faster (rehearsal ≥ 3×) at equal or better ACC

# Training settings of each protocol, the same on both sides.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "task": {"lr": 0.01, "batch": 64, "epochs": 1, "title": "split MNIST task-incremental (a head per task)"},
    "class": {"lr": 0.05, "batch": 32, "epochs": 1, "title": "split MNIST class-incremental (one 10-way head), "
              "memory 500"},
}
# Our method → (Avalanche strategy, its arguments), the same objective where the two libraries can express it
# (README.md: how each λ maps, and what differs). Ours run at their documented defaults (docs/methods.md);
# the class-incremental ones at benchmarks/rehearsal.py's settings.
STRATEGIES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "task": {
        "naive": ("Naive", {}),
        # ours: (λ/2) Σ F (θ−θ*)², λ 1e4; Avalanche: ewc_lambda Σ F (θ−θ*)²
        "ewc": ("EWC", {"ewc_lambda": 5000.0}),
        # ours: c Σ Ω (θ−θ*)², c 1, ξ 0.1; Avalanche: (si_lambda/2) Σ Ω (θ−θ*)², eps = ξ
        "si": ("SynapticIntelligence", {"si_lambda": 2.0, "eps": 0.1}),
        "lwf": ("LwF", {"alpha": 1.0, "temperature": 2.0}),  # both: λ Σ_old heads KL at T, no T²
        "mas": ("MAS", {"lambda_reg": 1.0, "alpha": 0.5}),  # λ 1 both; alpha: Avalanche's default
    },
    "class": {
        "naive": ("Naive", {}),
        "er": ("Replay", {"mem_size": 500}),  # replayed batch = train batch (32)
        "der++": ("DER", {"mem_size": 500, "batch_size_mem": 32, "alpha": 0.3, "beta": 0.5}),
        "er-ace": ("ER_ACE", {"mem_size": 500, "batch_size_mem": 32}),
        "a-gem": ("AGEM", {"patterns_per_exp": 100, "sample_size": 256}),
    },
}


def log(message: str) -> None:
    print(message, flush=True)


def project_torch() -> str:
    import torch

    return torch.__version__.split("+")[0]


def ensure_venv(venv: Path) -> Path:
    """The scratch environment's interpreter; builds the environment the first time.

    Steps: ``python -m venv`` with the interpreter behind this one; ``pip install torch==T`` (T = the project's
    torch; pip takes the CPU wheel it is configured to find); a ``--dry-run --report`` of avalanche-lib with the
    constraint torch==T, stopping if pip plans to install any torch; the real install; then theirs.py --check,
    which imports everything a run imports. A file ``lifelong-peers.json`` in the environment marks it done.
    """
    python = venv / "bin" / "python"
    marker = venv / "lifelong-peers.json"
    torch_version = project_torch()
    if marker.exists() and python.exists():
        built = json.loads(marker.read_text())
        if built.get("torch", "").split("+")[0] != torch_version or built.get("avalanche") != AVALANCHE_VERSION:
            raise SystemExit(f"{venv} was built for torch {built.get('torch')} and avalanche {built.get('avalanche')}; "
                             f"this checkout needs torch {torch_version} and avalanche {AVALANCHE_VERSION}: "
                             f"delete {venv} and run again")
        return python
    log(f"building the scratch environment {venv} (avalanche-lib {AVALANCHE_VERSION}, torch {torch_version})")
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints)]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True)
    report = venv / "avalanche-dry-run.json"
    subprocess.run([*pip, "--dry-run", "--report", str(report), f"avalanche-lib=={AVALANCHE_VERSION}"], check=True)
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    if "torch" in planned:
        raise SystemExit(f"pip would replace torch {torch_version} by torch {planned['torch']} in {venv}; stopped "
                         f"(see {report})")
    log(f"pip plans avalanche-lib {planned.get('avalanche-lib')}, torchvision {planned.get('torchvision')}, "
        f"keeps torch {torch_version}")
    subprocess.run([*pip, f"avalanche-lib=={AVALANCHE_VERSION}"], check=True)
    check = subprocess.run([str(python), str(HERE / "theirs.py"), "--check"], capture_output=True, text=True,
                           env=their_env(1), check=False)
    if check.returncode != 0:
        raise SystemExit(f"the scratch environment does not import Avalanche:\n{check.stderr[-3000:]}")
    versions = json.loads(check.stdout.strip().splitlines()[-1])["versions"]
    if versions["torch"].split("+")[0] != torch_version or "+cpu" not in versions["torch"]:
        raise SystemExit(f"the scratch environment has torch {versions['torch']}, not the CPU torch {torch_version}")
    marker.write_text(json.dumps(versions, indent=1) + "\n")
    log(f"scratch environment ready: {versions}")
    return python


def write_npz(data_dir: Path, path: Path) -> None:
    """MNIST as lifelong reads it (uint8 images, labels) and the training images' mean and std, for theirs.py."""
    import numpy as np

    from lifelong.data.readers import read_mnist
    from lifelong.data.scenarios import channel_stats

    dataset = read_mnist(data_dir / "mnist")
    mean, std = channel_stats(dataset.train.images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, train_images=dataset.train.images.numpy(), train_labels=dataset.train.labels.numpy(),
             test_images=dataset.test.images.numpy(), test_labels=dataset.test.labels.numpy(),
             mean=np.array(mean), std=np.array(std))
    os.replace(tmp, path)


def thread_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    return env


def their_env(threads: int) -> dict[str, str]:
    return thread_env(threads)


def our_env(threads: int) -> dict[str, str]:
    return {**thread_env(threads), "PYTHONPATH": str(ROOT)}


def our_config(protocol: str, method: str, seed: int, data_dir: Path, out: Path, threads: int,
               tasks: int) -> dict[str, Any]:
    if protocol == "class":
        raw = rehearsal_config("split-mnist", "class", method, 500, seed, str(data_dir), str(out))
        raw["train"]["unseen_outputs"] = "trained"  # as Avalanche: every output trained from the first task
        for section, settings in AS_AVALANCHE.get(method, {}).items():
            raw[section] = {**raw.get(section, {}), **settings}
    else:
        settings = PROTOCOLS["task"]
        raw = {"method": method, "seed": seed, "device": "cpu", "out": str(out),
               "data": {"benchmark": "split-mnist", "data_dir": str(data_dir), "scenario": "task",
                        "validation": 0.0, "class_order": MNIST_PAIRS},
               "model": {"name": "mlp", "hidden": [400, 400]},
               "train": {"epochs": settings["epochs"], "batch_size": settings["batch"], "optimizer": "sgd",
                         "lr": settings["lr"]}}
    raw["train"]["threads"] = threads
    if tasks < 5:
        raw["data"]["max_tasks"] = tasks
    return raw


def timed(command: list[str], env: dict[str, str], log_path: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    log_path.write_text(f"$ {shlex.join(command)}\nexit {done.returncode}, {seconds:.2f} s\n--- stdout\n"
                        f"{done.stdout}\n--- stderr\n{done.stderr}")
    return seconds, done


def run_ours(protocol: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    job = args.work / "ours" / f"{protocol}-{method}-seed{seed}"
    shutil.rmtree(job, ignore_errors=True)  # a fresh run, never a resumed one
    job.mkdir(parents=True)
    raw = our_config(protocol, method, seed, args.data_dir, job / "runs", args.threads, args.tasks)
    (job / "config.yml").write_text(json.dumps(raw, indent=1))  # JSON is YAML
    command = [sys.executable, "-c", "import sys; from lifelong.cli import main; sys.exit(main())",
               "run", "--config", str(job / "config.yml"), "--quiet"]
    seconds, done = timed(command, our_env(args.threads), job / "log.txt")
    found = sorted((job / "runs").glob("*/results.json"))
    if done.returncode != 0 or not found:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "process_seconds": seconds}
    results = json.loads(found[0].read_text())
    return {"matrix": results["acc_matrix"], "acc": results["acc"], "bwt": results["bwt"],
            "train_seconds": results["train_seconds"], "process_seconds": seconds}


def run_theirs(protocol: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    job = args.work / "theirs" / f"{protocol}-{method}-seed{seed}"
    job.mkdir(parents=True, exist_ok=True)
    strategy, kwargs = STRATEGIES[protocol][method]
    settings = PROTOCOLS[protocol]
    command = [str(args.python), str(HERE / "theirs.py"), "--npz", str(args.work / "mnist.npz"),
               "--scenario", protocol, "--strategy", strategy, "--kwargs", json.dumps(kwargs),
               "--seed", str(seed), "--threads", str(args.threads), "--lr", str(settings["lr"]),
               "--batch", str(settings["batch"]), "--epochs", str(settings["epochs"]), "--tasks", str(args.tasks),
               "--order", ",".join(str(c) for pair in MNIST_PAIRS for c in pair)]
    seconds, done = timed(command, their_env(args.threads), job / "log.txt")
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "process_seconds": seconds}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # ACC and BWT read the last row and the diagonal only; task-IL leaves the tasks not yet learnt unevaluated
    full = [[0.0 if a is None else a for a in row] for row in out["matrix"]]
    return {"matrix": out["matrix"], "acc": metrics.average_accuracy(full), "bwt": metrics.backward_transfer(full),
            "train_seconds": out["train_seconds"], "process_seconds": seconds, "versions": out["versions"]}


def warm_up(args: argparse.Namespace) -> None:
    """One untimed start of each side, so that neither pays for a cold file cache in the first timed run."""
    subprocess.run([sys.executable, "-c", "import lifelong.cli, lifelong.loop"], env=our_env(args.threads),
                   cwd=ROOT, check=True)
    subprocess.run([str(args.python), str(HERE / "theirs.py"), "--check"], env=their_env(args.threads), cwd=ROOT,
                   check=True, capture_output=True)


def mean_std(values: list[float], digits: int = 2) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def table(protocol: str, methods: list[str], pairs: dict[tuple, dict[str, dict[str, Any]]],
          seeds: list[int]) -> tuple[list[str], list[str]]:
    """The protocol's markdown table and one line per method on the goal."""
    head = ("| method | Avalanche strategy | pairs | ACC % ours / Avalanche | BWT % ours / Avalanche | "
            "train s ours / Avalanche | train speed-up | whole process s ours / Avalanche | "
            "whole speed-up (lowest pair) |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for method in methods:
        strategy, kwargs = STRATEGIES[protocol][method]
        done = [pairs[(protocol, method, s)] for s in seeds if (protocol, method, s) in pairs]
        done = [p for p in done if "error" not in p["ours"] and "error" not in p["theirs"]]
        if not done:
            continue
        ours, theirs = [p["ours"] for p in done], [p["theirs"] for p in done]
        cells = {key: f"{mean_std([scale * r[key] for r in ours], digits)} / "
                      f"{mean_std([scale * r[key] for r in theirs], digits)}"
                 for key, scale, digits in (("acc", 100.0, 2), ("bwt", 100.0, 2), ("train_seconds", 1.0, 1),
                                            ("process_seconds", 1.0, 1))}
        train_ratio = [t["train_seconds"] / o["train_seconds"] for o, t in zip(ours, theirs)]
        whole_ratio = [t["process_seconds"] / o["process_seconds"] for o, t in zip(ours, theirs)]
        settings = ", ".join(f"{k} {v}" for k, v in kwargs.items())
        lines.append(f"| {method} | {strategy}{f' ({settings})' if settings else ''} | {len(done)} | {cells['acc']} | "
                     f"{cells['bwt']} | {cells['train_seconds']} | {statistics.fmean(train_ratio):.1f}× | "
                     f"{cells['process_seconds']} | {statistics.fmean(whole_ratio):.1f}× "
                     f"({min(whole_ratio):.1f}×) |")
        our_acc, their_acc = [100 * r["acc"] for r in ours], [100 * r["acc"] for r in theirs]
        d_acc = statistics.fmean(our_acc) - statistics.fmean(their_acc)
        spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (our_acc, their_acc))
        fast = statistics.fmean(whole_ratio) >= GOAL[protocol]
        accuracy = ("better" if d_acc > 0 else "equal" if d_acc == 0 else
                    "equal within one std" if -d_acc <= spread else "lower")
        verdict = "met" if fast and accuracy != "lower" else "not met"
        verdicts.append(f"- {method}: {verdict} — whole run {statistics.fmean(whole_ratio):.1f}× faster "
                        f"(goal ≥ {GOAL[protocol]:.0f}×), ACC {d_acc:+.2f} points against Avalanche's ({accuracy}).")
    return lines, verdicts


# our settings that do what Avalanche 0.6.0's strategies do (benchmarks/er_store.py measures each)
AS_AVALANCHE: dict[str, dict[str, dict[str, Any]]] = {
    "er": {"er": {"store": "task_end"}},  # Replay updates its buffer after each experience
    "der++": {"der++": {"store": "task_end"}, "memory": {"policy": "balanced"}},  # DER: class-balanced, at the end
}

SETTINGS_NOTE = {
    "task": ("Ours at their defaults (docs/methods.md: ewc λ 1e4, si c 1 ξ 0.1, lwf λ 1 T 2, mas λ 1); Avalanche's "
             "arguments give the same penalty where its formula differs by a factor."),
    "class": ("Ours as in benchmarks/rehearsal.py's `avalanche` protocol (memory 500, replayed batch 32, a-gem's "
              "reference batch 256, der++ α 0.3 β 0.5), with the settings that do what Avalanche's strategies do: "
              "`train.unseen_outputs: trained` (Avalanche trains every output from the first task on; ours masks "
              "classes not reached yet by default), `er.store: task_end` (Replay fills its buffer after each "
              "experience), `der++.store: task_end` and `memory.policy: balanced` (DER's buffer is class-balanced "
              "and filled after each experience, with eval-mode logits). benchmarks/er_store.py (section "
              "`er-store`) measures each of these settings against our defaults."),
}
DIFFERENCES = (
    "What differs between the two sides (benchmarks/peers/README.md has the whole list): EWC's Fisher is per "
    "sample here and the squared batch-mean gradient there; Avalanche's SI on a CPU keeps its anchor and its "
    "θ before and after each step as views of the live parameters (`.cpu()` copies nothing there), so its path "
    "integral, its Ω and its penalty stay 0 and it trains as naive does, at SI's cost; MAS's Ω is per sample "
    "and summed over tasks here, per batch and averaged with α 0.5 there; Avalanche's Replay and AGEM keep an equal "
    "share per experience, ours a reservoir (DER: class-balanced on both sides here); ours evaluate every task "
    "after each task (and the untrained network), Avalanche's the tasks seen so far (task-incremental) or every "
    "task (class-incremental), with an evaluator that records experience accuracy only and logs nothing; "
    "Avalanche's process loads the .npz the script made from the same files before timing, ours reads the IDX .gz "
    "files itself.")


def section(args: argparse.Namespace, pairs: dict[tuple, dict[str, dict[str, Any]]], how: str) -> str:
    """The markdown of section ``peers``; ``how`` is its first sentence (the command, its time and load)."""
    versions = next((p["theirs"]["versions"] for p in pairs.values() if "versions" in p["theirs"]), {})
    their_versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    header = (
        f"{how} Ours: torch {project_torch()} (CPU); Avalanche's: "
        f"{their_versions}, in a scratch environment built by the script (benchmarks/peers/README.md). torch "
        f"threads: {args.threads} on both sides. Every run is a fresh process; ours and Avalanche's alternate, "
        f"seed by seed, method by method (seeds {','.join(map(str, args.seeds))}). ACC and BWT: mean ± sample std "
        "over seeds; seconds: mean ± std; speed-up: Avalanche's seconds / ours, mean over the pairs (each pair ran "
        "back to back), with the lowest pair's. Whole process: from the process's start to its exit (imports, data, "
        "training, evaluation, and for ours the run directory with its checkpoints); train: the training alone, "
        "as each library's loop counts it (ours: results.json's train_seconds; Avalanche's: its `train()` calls).")
    lines = [f"## Side by side with Avalanche {AVALANCHE_VERSION}: whole runs, alternating on one machine", "",
             header, ""]
    for protocol in args.protocols:
        settings = PROTOCOLS[protocol]
        methods = args.task_methods if protocol == "task" else args.class_methods
        rows, verdicts = table(protocol, methods, pairs, args.seeds)
        failed = sorted({f"{key[1]} seed {key[2]} ({side}): {result[side]['error']}"
                         for key, result in pairs.items() if key[0] == protocol
                         for side in ("ours", "theirs") if "error" in result[side]})
        first = f", first {args.tasks} tasks" if args.tasks < 5 else ""
        training = (f"MLP 2×400, SGD lr {settings['lr']}, batch {settings['batch']}, {settings['epochs']} epoch per "
                    f"task, classes (1,2),(3,4),(5,6),(7,8),(9,0){first}. {SETTINGS_NOTE[protocol]}")
        goal = (f"Goal (issue 20): whole run ≥ {GOAL[protocol]:.0f}× faster than Avalanche's (mean speed-up) at "
                "equal or better ACC (mean over seeds; equal: within the larger sample std of the two sides):")
        lines += [f"### {settings['title']}", "", training, "", *rows, "", goal, "", *verdicts]
        if failed:
            lines += ["", "Runs that failed (left out of the table):", "", *[f"- {f}" for f in failed]]
        lines.append("")
    lines.append(DIFFERENCES)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="task,class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--task-methods", default=",".join(m for m in STRATEGIES["task"]))
    parser.add_argument("--class-methods", default="er,der++,er-ace,a-gem")
    parser.add_argument("--tasks", type=int, default=5, help="only the first N tasks (a quick check of the script)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "peers", help="logs, run directories, .npz")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-pairs", type=Path, help="write the section from the pairs.jsonl of an earlier "
                        "(e.g. interrupted) invocation instead of running anything")
    parser.add_argument("--note", default="", help="a sentence added after the command (e.g. the machine's state)")
    args = parser.parse_args()
    args.protocols = [p for p in args.protocols.split(",") if p]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.task_methods = [m for m in args.task_methods.split(",") if m]
    args.class_methods = [m for m in args.class_methods.split(",") if m]
    for protocol in args.protocols:
        if protocol not in PROTOCOLS:
            parser.error(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
        for method in args.task_methods if protocol == "task" else args.class_methods:
            if method not in STRATEGIES[protocol]:
                parser.error(f"no Avalanche counterpart for {method!r} in protocol {protocol!r}; choose from "
                             f"{', '.join(STRATEGIES[protocol])}")
    if not 1 <= args.tasks <= 5:
        parser.error("--tasks must be 1 to 5")
    args.work = args.work.resolve()
    args.data_dir = args.data_dir.resolve()
    shown = [a for i, a in enumerate(sys.argv[1:]) if not (a == "--note" or a.startswith("--note=")
                                                            or (i and sys.argv[i] == "--note"))]
    command = shlex.join(["python", "benchmarks/peers/peers.py", *shown])  # the note is printed after it
    if args.from_pairs:
        write(args, *from_pairs(args, command))
        return
    args.python = ensure_venv(args.venv.expanduser())
    if args.setup_only:
        return
    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    write_npz(args.data_dir, args.work / "mnist.npz")
    warm_up(args)
    jobs = [(p, m, s) for s in args.seeds for p in args.protocols
            for m in (args.task_methods if p == "task" else args.class_methods)]
    pairs: dict[tuple, dict[str, dict[str, Any]]] = {}
    with open(args.work / "pairs.jsonl", "w") as record:
        record.write(json.dumps({"meta": {"command": command, "load": loads[0], "threads": args.threads,
                                          "tasks": args.tasks, "pairs": len(jobs)}}) + "\n")
        for i, (protocol, method, seed) in enumerate(jobs, 1):
            ours = run_ours(protocol, method, seed, args)
            theirs = run_theirs(protocol, method, seed, args)
            pairs[(protocol, method, seed)] = {"ours": ours, "theirs": theirs}
            record.write(json.dumps({"protocol": protocol, "method": method, "seed": seed, "ours": ours,
                                     "theirs": theirs}) + "\n")
            record.flush()
            summary = [f"{side} " + (f"FAILED {r['error']}" if "error" in r else
                                     f"ACC {100 * r['acc']:.2f} train {r['train_seconds']:.1f} s "
                                     f"whole {r['process_seconds']:.1f} s")
                       for side, r in (("ours", ours), ("Avalanche", theirs))]
            log(f"[{i}/{len(jobs)}] {protocol} {method} seed {seed}: {'; '.join(summary)}")
    loads.append(os.getloadavg()[0])
    how = (f"Command: `{command}` ({time.perf_counter() - started:.0f} s; 1-minute load average {loads[0]:.1f} at "
           f"the start, {loads[1]:.1f} at the end, on {os.cpu_count()} cores).")
    write(args, pairs, how)


def from_pairs(args: argparse.Namespace, command: str) -> tuple[dict[tuple, dict[str, dict[str, Any]]], str]:
    """The pairs recorded in ``args.from_pairs`` and the section's first sentence saying where they come from;
    seeds, protocols and methods narrowed to those recorded."""
    meta: dict[str, Any] = {}
    pairs: dict[tuple, dict[str, dict[str, Any]]] = {}
    for line in args.from_pairs.read_text().splitlines():
        row = json.loads(line)
        if "meta" in row:
            meta = row["meta"]
            continue
        pairs[(row["protocol"], row["method"], row["seed"])] = {"ours": row["ours"], "theirs": row["theirs"]}
    args.threads, args.tasks = meta.get("threads", args.threads), meta.get("tasks", args.tasks)
    args.seeds = sorted({key[2] for key in pairs})
    args.protocols = [p for p in args.protocols if any(key[0] == p for key in pairs)]
    args.task_methods = [m for m in args.task_methods if any(key[:2] == ("task", m) for key in pairs)]
    args.class_methods = [m for m in args.class_methods if any(key[:2] == ("class", m) for key in pairs)]
    recorded = f"`{meta['command']}`" if "command" in meta else "an earlier invocation"
    planned = f" of the {meta['pairs']} it planned" if "pairs" in meta else ""
    load = f", 1-minute load average {meta['load']:.1f} at its start" if "load" in meta else ""
    how = (f"Rebuilt by `{command}` from the {len(pairs)} pairs{planned} that {recorded} recorded in "
           f"{args.from_pairs.name}{load}, on {os.cpu_count()} cores.")
    return pairs, how


def write(args: argparse.Namespace, pairs: dict[tuple, dict[str, dict[str, Any]]], how: str) -> None:
    text = section(args, pairs, f"{how} {args.note}".strip())
    print("\n" + text)
    if not args.no_write:
        update_section(SECTION, text)
        log(f"wrote section {SECTION} of docs/RESULTS.md")


if __name__ == "__main__":
    main()
