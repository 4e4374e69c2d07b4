"""Run the origin documents' experiments from their shipped experiment files and record the tables.

- ``configs/mas_alpha_split_mnist.yml`` (document 003): MAS against MAS-alpha with Σα = N, 1.5N, 2N, 3N on split
  MNIST, forgetting against single-task references.
- ``configs/mas_alpha_order_split_mnist.yml`` (document 003): the task (1, 2) moved from the first to the fifth
  position; the final accuracy of that task at each position and its spread, per method.
- ``configs/slni_pmnist.yml`` (Selfless Sequential Learning demo): MAS and EWC with and without SLNI/SLNID on
  5-task permuted MNIST with a shared head.

Each is exactly ``lifelong compare --config FILE --data-dir DATA --out OUT``; runs already finished under ``--out``
are reused, not trained again.

    python benchmarks/seed_experiments.py [--data-dir ../shared/data] [--out runs/seed-experiments]
                                          [--only mas_alpha_split_mnist,...] [--no-write]

Writes the section ``seed-experiments`` of docs/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's lifelong
sys.path.insert(1, str(Path(__file__).resolve().parent))

from lifelong import compare  # noqa: E402
from lifelong.config import read_yaml  # noqa: E402
from results_md import update_section  # noqa: E402

EXPERIMENTS = {
    "mas_alpha_split_mnist": "Document 003: MAS against MAS-alpha on split MNIST (task-incremental)",
    "mas_alpha_order_split_mnist": "Document 003: task (1, 2) moved from the first to the fifth position",
    "slni_pmnist": "Selfless Sequential Learning demo: SLNI/SLNID with MAS and EWC, permuted MNIST, shared head",
}
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"


def run(name: str, data_dir: str, out: str) -> tuple[list[str], float]:
    raw = read_yaml(ROOT / "configs" / f"{name}.yml")
    raw["base"].setdefault("data", {})["data_dir"] = data_dir
    raw["base"]["out"] = out
    exp = compare.experiment_from_dict(raw)
    started = time.perf_counter()
    entries = compare.run_experiment(exp, progress=lambda i, n, what: print(f"  {name} [{i}/{n}] {what}", flush=True))
    seconds = time.perf_counter() - started
    rows = compare.summarize(entries)
    sweep = compare.order_sweep_table(entries, exp.order_sweep.task) if exp.order_sweep else None
    folder = Path(out) / name  # tables and runs.json, so that `lifelong report` finds the runs
    compare.write_tables(folder, rows, sweep)
    compare.write_manifest(folder, entries, exp.order_sweep.task if exp.order_sweep else None)
    lines = [f"### {EXPERIMENTS[name]}", "",
             f"`lifelong compare --config configs/{name}.yml --data-dir DATA`; figures: `lifelong report "
             f"{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}`; seeds {exp.seeds}; metrics are "
             "fractions, mean±std over seeds (avg/max F: Chaudhry forgetting; (ref): against the single-task "
             "reference a_t − R[T][t]); train s = training seconds of one run.", "",
             compare.to_markdown(rows).strip()]
    if exp.order_sweep:
        lines += ["", f"Final accuracy of task {exp.order_sweep.task} by its position (mean over seeds) and the "
                      "spread (max − min over positions):", "",
                  "| variant | " + " | ".join(f"position {p}" for p in exp.order_sweep.positions or []) + " | spread |",
                  "|---|" + "---:|" * (len(exp.order_sweep.positions or []) + 1)]
        for row in sweep:
            cells = " | ".join(f"{v:.4f}" for v in row["final_acc_by_position"].values())
            lines.append(f"| {row['variant']} | {cells} | {row['spread']:.4f} |")
    return lines, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--out", default=str(ROOT / "runs" / "seed-experiments"))
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated experiment names")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    command = "python benchmarks/seed_experiments.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = ["## Experiments of the origin documents", "",
             f"Measured {datetime.date.today().isoformat()} with `{command.strip()}` (CPU)."]
    for name in args.only.split(","):
        if name not in EXPERIMENTS:
            parser.error(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        section, seconds = run(name, args.data_dir, args.out)
        lines += ["", *section, "", f"Wall time of this step: {seconds / 60:.1f} min (0 when every run was "
                                    "already finished)."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("seed-experiments", text)


if __name__ == "__main__":
    main()
