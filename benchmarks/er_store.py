"""ER's memory filled as the stream goes (``er.store: stream``, the papers') or at each task's end (``task_end``,
as Avalanche's Replay), on benchmarks/peers' class-incremental protocol (split MNIST, one 10-way head, memory 500,
SGD 0.05, batch 32 + 32 replayed, 1 epoch); writes section ``er-store`` of docs/RESULTS.md.

    python benchmarks/er_store.py [--data-dir ../shared/data] [--seeds 0,1,2] [--out runs/er-store] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))
sys.path.insert(2, str(Path(__file__).resolve().parent / "peers"))

import lifelong  # noqa: E402
from peers import our_config  # noqa: E402
from results_md import update_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "runs" / "er-store"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = ["| er.store | seeds | ACC (each seed) | mean ± std |", "|---|---|---|---|"]
    for store in ("stream", "task_end"):
        accs = []
        for seed in seeds:
            raw = our_config("class", "er", seed, Path(args.data_dir), Path(args.out), 1, 5)
            raw["er"] = {"store": store}
            _, results = lifelong.run(raw, progress=False)
            last = results["acc_matrix"][-1]
            accs.append(sum(last) / len(last))
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(f"| {store} | {len(seeds)} | {', '.join(f'{a:.4f}' for a in accs)} | "
                    f"{statistics.mean(accs):.4f} ± {spread:.4f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "## ER: memory filled during the stream or at each task's end (benchmarks/er_store.py)", "",
        f"`python benchmarks/er_store.py --data-dir DATA --seeds {args.seeds}`: our ER on benchmarks/peers' "
        "class-incremental protocol (split MNIST, one 10-way head, memory 500, SGD lr 0.05, batch 32 + 32 replayed, "
        "1 epoch per task), ACC over the 5 tasks after the last. `stream` is the papers' ER (and ours by default); "
        "`task_end` fills the memory with each finished task's rows at its end, so replay draws only earlier tasks, "
        "as Avalanche's Replay does (section `peers`: Avalanche's ER on this protocol).", "", *rows])
    if not args.no_write:
        update_section("er-store", text)


if __name__ == "__main__":
    main()
