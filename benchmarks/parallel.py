"""Parallel comparisons: ``--jobs 2`` against one run after another, and Ray's overhead per run against ``--jobs``.

Every setting runs the same comparison (naive and EWC × seeds on split MNIST, MLP 2×400, one torch thread per
run) as its own ``lifelong compare`` command into a fresh folder, timed from the outside (start-up, data loading
and process starts included); the accuracy matrices must be equal across settings. Writes the ``parallel``
section of docs/RESULTS.md.

    .venv/bin/python benchmarks/parallel.py [--data-dir ../shared/data]   # about 6 min on two idle cores
    .venv/bin/python benchmarks/parallel.py --benchmark quickstart --seeds 0 --no-write   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def compare_command(out: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lifelong.cli", "compare", "--methods", "naive,ewc", "--seeds", args.seeds,
            "--benchmark", args.benchmark, "--data-dir", args.data_dir, "--epochs", str(args.epochs), "--out",
            str(out), "--set", "model.hidden=[400,400]", "--set", "train.threads=1", "--set", "device=cpu", *extra]


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def matrices(out: Path) -> dict[str, list]:
    """Accuracy matrix of every run under ``out``, by run directory name."""
    found = {}
    for results in sorted(out.glob("*/results.json")):
        found[results.parent.name] = json.loads(results.read_text())["acc_matrix"]
    return found


@contextmanager
def ray_cluster(cpus: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on 127.0.0.1 (``ray start --block`` in its own process group, stopped with it)."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = temp / "head.log"
    with open(log, "w") as f:
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address",
                                 "127.0.0.1", "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard",
                                 "false", "--disable-usage-stats", "--temp-dir", str(temp), "--block"],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.time() > deadline:
                raise SystemExit(f"ray start failed: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split-mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (runs = 2 methods × seeds)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray settings")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/RESULTS.md")
    args = parser.parse_args()
    runs = 2 * len(args.seeds.split(","))
    work = Path(tempfile.mkdtemp(prefix="parallel-"))
    try:
        timings = {"sequential": timed(compare_command(work / "sequential", args, []))}
        timings["--jobs 2"] = timed(compare_command(work / "jobs", args, ["--jobs", "2"]))
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                raise SystemExit("Ray is not installed: pip install 'lifelong[ray]', or pass --no-ray") from None
            timings["ray, local instance"] = timed(compare_command(work / "ray-local", args, ["--executor", "ray"]))
            with ray_cluster(cpus=2) as (address, env):
                timings["ray, running cluster"] = timed(
                    compare_command(work / "ray-cluster", args, ["--executor", "ray", "--address", address]), env)
        reference = matrices(work / "sequential")
        for name in ("jobs", "ray-local", "ray-cluster"):
            if (work / name).is_dir() and matrices(work / name) != reference:
                raise SystemExit(f"the accuracy matrices of {name} differ from the sequential ones")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = len(os.sched_getaffinity(0))
    lines = [f"`python benchmarks/parallel.py --benchmark {args.benchmark} --seeds {args.seeds} --epochs "
             f"{args.epochs}`: {runs} runs (naive, EWC × seeds {args.seeds}) on {args.benchmark}, MLP 2×400, "
             f"{args.epochs} epoch(s) per task, one torch thread "
             f"per run, {cores} cores; wall time of the whole `lifelong compare` command (process start, data, "
             "tables); accuracy matrices equal in every setting.", "",
             "| setting | wall s | × sequential | overhead per run vs --jobs 2 |", "|---|---|---|---|"]
    for name, seconds in timings.items():
        overhead = "" if not name.startswith("ray") else f"{(seconds - timings['--jobs 2']) / runs:+.2f} s"
        lines.append(f"| {name} | {seconds:.1f} | {seconds / timings['sequential']:.2f} | {overhead} |")
    lines += ["", "Goals (issue 17): `--jobs 2` at most 0.6× sequential; Ray's overhead per run under 2 s against "
              "`--jobs` (the running cluster is the fair comparison: a local instance also pays Ray's start once)."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("parallel", "## Parallel comparisons (benchmarks/parallel.py)\n\n" + text)


if __name__ == "__main__":
    main()
