"""Load on loopback: concurrent /predict and /learn clients against a real `lifelong serve` process.

The service serves the 2×400 MLP on the quickstart benchmark (class-incremental, ``er``; its default settings:
one torch thread for the learner, a version every ``--publish-every`` samples, the guard on). The clients are
httpx coroutines in this process, every request body encoded beforehand:

* phase **idle** — ``--predict-clients`` closed-loop clients, each sending single-sample /predict requests one
  after another, while nothing is learnt;
* phase **learning** — the same clients, plus ``--learn-clients`` closed-loop clients posting batches of
  ``--learn-batch`` labelled samples to /learn, so the learner trains throughout (the queue never empties).

Latency is measured by the client (request sent → reply read); throughput is replies per second. Goal on
2 cores: p99 of a single-sample /predict under 20 ms while the learner trains. The clients share the CPUs
with the server, and other processes' share of the CPUs is reported with the figures.

    python benchmarks/serve_load.py [--seconds 20] [--predict-clients 2] [--learn-clients 1] [--learn-batch 64]
                                    [--publish-every 1000] [--learn-format raw|arrays] [--no-write]

/learn bodies are `raw` (base64 of the rows' bytes) by default: nested JSON arrays cost a few milliseconds of
parsing per 64 images, during which the server's other threads wait for Python's GIL.

Writes the section ``serve-load`` of docs/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout's lifelong, not another installed copy
sys.path.insert(1, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from lifelong.data.benchmarks import load_embedded_fashion_subset  # noqa: E402
from results_md import update_section  # noqa: E402

GOAL_MS = 20.0
TOKEN = "serve-load-benchmark-token-0123456789"


def config(out: str, port: int, publish_every: int) -> dict:
    return {"method": "er", "device": "cpu", "out": out, "seed": 0,
            "data": {"benchmark": "quickstart", "scenario": "class", "validation": 0.0},
            "model": {"name": "mlp", "hidden": [400, 400]}, "train": {"batch_size": 128},
            "serve": {"port": port, "publish_every": publish_every}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ticks() -> tuple[int, int]:
    """(all, idle) clock ticks since boot over every CPU (zeros without /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields), fields[3] + fields[4]


def process_ticks(pid: int) -> int:
    """User + system clock ticks of a process (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def own_ticks() -> int:
    t = os.times()
    return round((t.user + t.system) * os.sysconf("SC_CLK_TCK"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def phase(url: str, seconds: float, predict_bodies: list[bytes], learn_bodies: list[bytes],
                predict_clients: int, learn_clients: int) -> dict:
    """Run the clients for ``seconds``; returns latencies (s) and counts."""
    latencies: list[float] = []
    learn_latencies: list[float] = []
    errors = {"predict": 0, "learn": 0}
    json_type = {"Content-Type": "application/json"}
    auth = {**json_type, "Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=predict_clients + learn_clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def predictor(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                reply = await client.post("/predict", content=predict_bodies[i % len(predict_bodies)], headers=json_type)
                if reply.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors["predict"] += 1
                i += predict_clients

        async def learner(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                reply = await client.post("/learn", content=learn_bodies[i % len(learn_bodies)], headers=auth)
                if reply.status_code == 202:
                    learn_latencies.append(time.perf_counter() - start)
                else:
                    errors["learn"] += 1
                i += learn_clients

        await asyncio.gather(*[predictor(k) for k in range(predict_clients)],
                             *[learner(k) for k in range(learn_clients)])
    return {"latencies": latencies, "learn_latencies": learn_latencies, "errors": errors}


def status(url: str) -> dict:
    return httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()


def measure(args: argparse.Namespace, log) -> dict:
    data = load_embedded_fashion_subset()
    x, y = data.train.images.numpy(), data.train.labels.numpy()
    xt = data.test.images.numpy()
    predict_bodies = [json.dumps({"inputs": [xt[i, 0].tolist()]}).encode() for i in range(200)]
    order = np.random.default_rng(0).permutation(len(x))
    learn_bodies = [json.dumps({**({"raw": base64.b64encode(x[idx].tobytes()).decode()} if args.learn_format == "raw"
                                   else {"inputs": x[idx].tolist()}), "labels": y[idx].tolist()}).encode()
                    for idx in np.array_split(order, len(order) // args.learn_batch)]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = Path(tmp) / "serve.yml"
        path.write_text(yaml.safe_dump(config(str(Path(tmp) / "runs"), port, args.publish_every)))
        env = {**os.environ, "LIFELONG_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", "--config", str(path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {server.stdout.read() if server.stdout else ''}")
                time.sleep(0.2)
            asyncio.run(phase(url, 2.0, predict_bodies, learn_bodies[:4], args.predict_clients, 1))  # warm-up
            results = {}
            for name, learners in (("idle", 0), ("learning", args.learn_clients)):
                while status(url)["samples"]["queued"]:  # the idle phase starts with nothing to learn
                    time.sleep(0.5)
                before = status(url)
                ticks, server_ticks, mine, load = cpu_ticks(), process_ticks(server.pid), own_ticks(), os.getloadavg()
                log(f"phase {name}: {args.seconds:.0f} s, {args.predict_clients} predict + {learners} learn clients")
                start = time.perf_counter()
                found = asyncio.run(phase(url, args.seconds, predict_bodies, learn_bodies, args.predict_clients,
                                          learners))
                elapsed = time.perf_counter() - start
                after_ticks = cpu_ticks()
                total = after_ticks[0] - ticks[0]
                busy = total - (after_ticks[1] - ticks[1])
                ours = process_ticks(server.pid) - server_ticks + own_ticks() - mine
                after = status(url)
                found.update(seconds=elapsed, load=load, before=before, after=after,
                             others=max(0.0, busy - ours) / total if total > 0 else None,
                             server_cpu=(process_ticks(server.pid) - server_ticks) / os.sysconf("SC_CLK_TCK") / elapsed)
                results[name] = found
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    return results


def percentiles(latencies: list[float]) -> tuple[float, float, float, float]:
    ms = np.array(latencies) * 1000
    return tuple(float(np.percentile(ms, q)) for q in (50, 90, 99)) + (float(ms.max()),)


def markdown(args: argparse.Namespace, results: dict, minutes: float) -> str:
    today = datetime.date.today().isoformat()
    command = "python benchmarks/serve_load.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--seconds", args.seconds, 20.0), ("--predict-clients", args.predict_clients, 2),
            ("--learn-clients", args.learn_clients, 1), ("--learn-batch", args.learn_batch, 64),
            ("--publish-every", args.publish_every, 1000), ("--learn-format", args.learn_format, "raw"))
        if value != default)
    lines = [
        "## lifelong serve: /predict latency while the learner trains",
        "",
        f"Measured {today} on {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}; the server, its learner thread and the clients share these CPUs.",
        "",
        f"Command: `{shlex.join(command.split())}` (run from the repository root; took {minutes:.1f} min)",
        "",
        "`lifelong serve --config` of the quickstart benchmark, class-incremental, `er`, the 2×400 MLP (batch 128, "
        f"one torch thread for the learner, a version every {args.publish_every} samples, the guard on), on "
        f"127.0.0.1. {args.predict_clients} closed-loop clients send single-sample /predict requests (one 28×28 "
        f"image as a JSON array); in the *learning* phase {args.learn_clients} closed-loop client(s) also post "
        f"batches of {args.learn_batch} labelled images to /learn ({'as `raw` base64 row bytes' if args.learn_format == 'raw' else 'as JSON arrays'}). httpx coroutines in one process, bodies encoded "
        f"beforehand; latency measured by the client; {args.seconds:.0f} s per phase after a 2 s warm-up.",
        "",
        "| phase | /predict replies/s | p50 | p90 | p99 | max | /learn samples accepted/s | samples learnt/s | "
        "versions published | queue at the end | server CPU | others' CPU share | load average before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, found in results.items():
        p50, p90, p99, top = percentiles(found["latencies"])
        before, after, seconds = found["before"], found["after"], found["seconds"]
        accepted = (after["samples"]["accepted"] - before["samples"]["accepted"]) / seconds
        learnt = (after["positions"]["learned"] - before["positions"]["learned"]) * \
            (1 - after["samples"]["canary"] / max(1, after["samples"]["accepted"])) / seconds
        others = "n/a" if found["others"] is None else f"{found['others']:.0%}"
        lines.append(f"| {name} | {len(found['latencies']) / seconds:,.0f} | {p50:.1f} ms | {p90:.1f} ms | "
                     f"**{p99:.1f} ms** | {top:.1f} ms | {accepted:,.0f} | {learnt:,.0f} | "
                     f"{after['version'] - before['version']} | {after['samples']['queued']} | "
                     f"{found['server_cpu']:.0%} | {others} | {found['load'][0]:.2f} |")
    p99 = percentiles(results["learning"]["latencies"])[2]
    errors = {name: found["errors"] for name, found in results.items()}
    busy = [found["others"] for found in results.values() if found["others"] is not None]
    if busy and max(busy) > 0.1:
        lines += ["", f"**Other processes used up to {max(busy):.0%} of the CPUs during these phases: the figures are "
                  "from a busy machine, not the conditions of the goal.**"]
    lines += ["", f"Goal p99 of a single-sample /predict < {GOAL_MS:.0f} ms while the learner trains: "
              f"{'met' if p99 < GOAL_MS else '**not met**'} ({p99:.1f} ms). Requests refused: {errors}. "
              "Samples learnt/s counts training samples (the canaries are held out); server CPU is the server "
              "process's CPU time over the phase (1.0 = one core)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--predict-clients", type=int, default=2)
    parser.add_argument("--learn-clients", type=int, default=1)
    parser.add_argument("--learn-batch", type=int, default=64, help="labelled samples per /learn request")
    parser.add_argument("--publish-every", type=int, default=1000)
    parser.add_argument("--learn-format", choices=["raw", "arrays"], default="raw",
                        help="/learn bodies as base64 row bytes (raw) or nested JSON arrays")
    parser.add_argument("--no-write", action="store_true", help="print the section without writing RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure(args, lambda msg: print(msg, file=sys.stderr, flush=True))
    text = markdown(args, results, (time.monotonic() - started) / 60)
    print(text)
    if not args.no_write:
        print(f"written to {update_section('serve-load', text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
