"""The shipped best configs: each sweep of configs/sweeps/ is run (finished runs are reused) and its winner written
to configs/best/<sweep name>.yml, then every best config is measured over 3 seeds; the trial tables and the test
figures make the section ``best-configs`` of docs/RESULTS.md.

    .venv/bin/python benchmarks/best_configs.py --data-dir DATA [--jobs 2] [--seeds 0,1,2] [--out runs/best]

``--only GLOB`` (e.g. ``'*-domain-*'``) runs the matching sweeps and best configs alone and writes nothing to
RESULTS.md: a campaign can go in parts, and a last full pass (reusing every finished run) writes the section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import update_section  # noqa: E402

from lifelong import compare, sweep  # noqa: E402
from lifelong.config import read_yaml  # noqa: E402
from lifelong.executors import make_executor  # noqa: E402
from lifelong.metrics import mean_std  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def sweeps(args: argparse.Namespace) -> list[str]:
    """Run every sweep of configs/sweeps/ (its runs under ``args.out``) and write its winner to configs/best/."""
    lines = []
    for path in sorted((ROOT / "configs" / "sweeps").glob(f"{args.only}.yml")):
        raw = sweep.read_sweep_file(path)
        raw["base"].setdefault("data", {})["data_dir"] = args.data_dir
        raw["base"]["out"] = args.out
        spec = sweep.sweep_from_dict(raw)
        rows, best = sweep.run_sweep(spec, make_executor(None, args.jobs))
        if best is None:
            raise SystemExit(f"{path.name}: every trial failed")
        best_path = ROOT / "configs" / "best" / f"{spec.name}.yml"
        sweep.write_outputs(spec, rows, best, best_path, str(path.relative_to(ROOT)))
        lines += [f"Sweep `{path.relative_to(ROOT)}` ({spec.search}, seeds {spec.seeds}); winner → "
                  f"`{best_path.relative_to(ROOT)}`:", "", sweep.to_markdown(rows).strip(), ""]
        print("\n".join(lines[-4:]), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "runs" / "best"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--only", default="*", help="a glob of sweep names (file stems); implies --no-write")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = sweeps(args)
    lines += [f"`python benchmarks/best_configs.py --data-dir DATA --seeds {args.seeds}`: each shipped best config "
              "(`lifelong run --config configs/best/FILE`) over the seeds; mean ± std. Validation ACC is what sweeps "
              "choose on (every task's validation split after the last task); test figures are never used to "
              "choose. `train s` is each run's training time as measured, on whatever load the machine had (trials and "
              "seeds ran two at a time, at idle priority beside other work): not a speed figure.", "", "| config | runs | val ACC | test ACC | BWT | avg forgetting | train s |",
              "|---|---|---|---|---|---|---|"]
    for path in sorted((ROOT / "configs" / "best").glob(f"{args.only}.yml")):
        base = read_yaml(path)
        base.setdefault("data", {})["data_dir"] = args.data_dir
        base["out"] = args.out
        exp = compare.experiment_from_dict({"base": base, "variants": [{"name": path.stem}], "seeds": seeds})
        entries = compare.run_experiment(exp, executor=make_executor(None, args.jobs),
                                         progress=lambda i, n, what: print(f"  [{i}/{n}] {what}", flush=True))
        failed = compare.failures(entries)
        if failed:
            raise SystemExit(f"{path.name}: {failed[0]['error']}")
        row = compare.summarize(entries)[0]
        val = [sweep.final_validation_accuracy(e["run_dir"], e["results"]) for e in entries]
        lines.append(f"| configs/best/{path.name} | {row['runs']} | {compare.fmt(mean_std(val))} | "
                     f"{compare.fmt(row['acc'])} | {compare.fmt(row['bwt'])} | {compare.fmt(row['avg_forgetting'])} "
                     f"| {compare.fmt(row['train_seconds'], 1)} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_write and args.only == "*":
        update_section("best-configs", "## Best configs (benchmarks/best_configs.py)\n\n" + text)


if __name__ == "__main__":
    main()
