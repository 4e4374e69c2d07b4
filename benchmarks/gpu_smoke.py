"""GPU smoke test: every registered method for a few steps on CUDA (fp32 and bf16), then training throughput of
the conv backbones (fp32, bf16; channels_last on CUDA). For a machine with a GPU; ``--device cpu`` checks the
script itself anywhere.

    bash benchmarks/gpu_smoke.sh [--device cuda] [--write]       # about 2-4 min on one GPU

Prints a markdown report; ``--write`` also puts it in docs/RESULTS.md (section ``gpu-smoke``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from results_md import update_section  # noqa: E402

import lifelong  # noqa: E402
from lifelong.methods import METHODS  # noqa: E402

# What a method needs beyond the small MLP config: tests/test_method_contract.py's NEEDS.
from test_method_contract import NEEDS  # noqa: E402

BACKBONES = {"alexnet": {"name": "alexnet"}, "resnet18-reduced": {"name": "resnet18-reduced"}}


def method_config(name: str, device: str, precision: str, out: Path) -> dict:
    """Two quickstart tasks of 5 steps each, a small MLP (or the method's own backbone)."""
    cfg = {"method": name, "device": device, "out": str(out), "seed": 0,
           "data": {"benchmark": "quickstart", "max_tasks": 2, "train_fraction": 0.1, "validation": 0.0},
           "model": {"name": "mlp", "hidden": [64]}, "train": {"iterations": 5, "batch_size": 32,
                                                               "precision": precision}}
    if "task" not in METHODS[name].scenarios:
        cfg["data"]["scenario"] = METHODS[name].scenarios[0]
    if "memory" in METHODS[name].extra_sections:
        cfg["memory"] = {"size": 64, "batch_size": 16}
    for key, value in NEEDS.get(name, {}).items():
        merge = isinstance(cfg.get(key), dict) and key != "model"
        cfg[key] = {**cfg[key], **value} if merge else value
    return cfg


def every_method(device: str, precisions: list[str], out: Path) -> list[str]:
    lines = ["| method | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for name in METHODS:
        cells = []
        for precision in precisions:
            start = time.perf_counter()
            try:
                _, results = lifelong.run(method_config(name, device, precision, out / precision))
                cells.append(f"ok {time.perf_counter() - start:.1f} s, ACC {results['acc']:.3f}")
            except Exception as err:  # report every method, then fail at the end
                cells.append(f"**FAILED** {type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}")
                traceback.print_exc()
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def throughput(device: str, precisions: list[str], steps: int) -> list[str]:
    """Samples/s of naive's train_step on 3×32×32 batches of 128 (synthetic data: the network's speed alone)."""
    from lifelong.config import build_config
    from lifelong.learner import Learner
    from lifelong.data.benchmarks import build_benchmark

    lines = ["| backbone | " + " | ".join(f"{p} samples/s" for p in precisions) + " |",
             "|---|" + "---|" * len(precisions)]
    for label, model in BACKBONES.items():
        cells = []
        for precision in precisions:
            cfg = build_config({"method": "naive", "device": device, "model": model,
                                "data": {"benchmark": "quickstart", "rgb32": True, "max_tasks": 1,
                                         "train_fraction": 0.05}, "train": {"precision": precision}})
            benchmark = build_benchmark(cfg.data, 0)
            learner = Learner.for_benchmark(cfg, benchmark, torch.device(device))
            method = learner.method
            method.before_task(benchmark.tasks[0])
            x = torch.randn(128, 3, 32, 32, device=device)
            y = torch.randint(0, 2, (128,), device=device)
            for _ in range(5):  # warm-up: cuDNN autotuning, allocator
                with method.train_context():
                    method.train_step(x, y, 0)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                with method.train_context():
                    method.train_step(x, y, 0)
            if device == "cuda":
                torch.cuda.synchronize()
            cells.append(f"{steps * 128 / (time.perf_counter() - start):,.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per backbone and precision")
    parser.add_argument("--write", action="store_true", help="put the report in docs/RESULTS.md (gpu-smoke)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; run with --device cpu to check the script")
    precisions = ["fp32", "bf16"] + (["fp16"] if args.device == "cuda" else [])
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    with tempfile.TemporaryDirectory() as out:
        methods = every_method(args.device, precisions, Path(out))
    speed = throughput(args.device, precisions, args.steps)
    report = "\n".join([f"`bash benchmarks/gpu_smoke.sh --device {args.device}` on {name}, torch {torch.__version__}.",
                        "", "Every method, 2 tasks × 5 steps:", "", *methods, "",
                        f"Training throughput (naive, batch 128, 3×32×32, {args.steps} steps, channels_last on CUDA):",
                        "", *speed])
    print(report)
    if args.write:
        update_section("gpu-smoke", "## GPU smoke test (benchmarks/gpu_smoke.sh)\n\n" + report)
    if "FAILED" in "\n".join(methods):
        raise SystemExit("some methods failed (above)")


if __name__ == "__main__":
    main()
