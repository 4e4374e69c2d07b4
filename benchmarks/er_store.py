"""Our rehearsal methods with the settings in which Avalanche differs: ER's and DER++'s memory filled as the stream
goes (``store: stream``, the papers') or at each task's end (``task_end``, as Avalanche's Replay and DER; DER++ also
with a class-balanced memory, as Avalanche's DER), and the outputs of classes not reached yet masked (ours) or
trained (``train.unseen_outputs: trained``, Avalanche's), on benchmarks/peers' class-incremental protocol (split
MNIST, one 10-way head, memory 500, SGD 0.05, batch 32 + 32 replayed, 1 epoch); writes section ``er-store`` of
docs/RESULTS.md.

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


# (method, store, memory.policy, train.unseen_outputs); None: the method's own
VARIANTS = [("er", "stream", None, "masked"), ("er", "task_end", None, "masked"), ("er", "task_end", None, "trained"),
            ("der++", "stream", None, "masked"), ("der++", "task_end", None, "masked"),
            ("der++", "task_end", "balanced", "masked"), ("der++", "task_end", "balanced", "trained"),
            ("er-ace", None, None, "masked"), ("er-ace", None, None, "trained"),
            ("a-gem", None, None, "masked"), ("a-gem", None, None, "trained")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "runs" / "er-store"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = ["| method | store | memory.policy | train.unseen_outputs | seeds | ACC (each seed) | mean ± std |",
            "|---|---|---|---|---|---|---|"]
    for method, store, policy, unseen in VARIANTS:
        accs = []
        for seed in seeds:
            raw = our_config("class", method, seed, Path(args.data_dir), Path(args.out), 1, 5)
            if store is not None:
                raw[method] = {**raw.get(method, {}), "store": store}
            if policy is not None:
                raw["memory"] = {**raw.get("memory", {}), "policy": policy}
            raw["train"]["unseen_outputs"] = unseen
            _, results = lifelong.run(raw, progress=False)
            last = results["acc_matrix"][-1]
            accs.append(sum(last) / len(last))
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(f"| {method} | {store or 'n/a'} | {policy or 'its own'} | {unseen} | {len(seeds)} | "
                    f"{', '.join(f'{a:.4f}' for a in accs)} | {statistics.mean(accs):.4f} ± {spread:.4f} |")
        print(rows[-1], flush=True)
    title = "## Rehearsal settings against Avalanche's: storing time, trained outputs (benchmarks/er_store.py)"
    text = "\n".join([
        title, "",
        (f"`python benchmarks/er_store.py --data-dir DATA --seeds {args.seeds}`: our rehearsal methods on "
        "benchmarks/peers' class-incremental protocol (split MNIST, one 10-way head, memory 500, SGD lr 0.05, batch "
        "32 + 32 replayed, A-GEM's reference batch 256, 1 epoch per task; DER++ α 0.3 β 0.5), ACC over the 5 tasks "
        "after the last. `store`: `stream` is the papers' (and our default); `task_end` fills the memory with each "
        "finished task's rows at its end (DER++: with the finished network's logits, evaluation mode), so replay draws "
        "only earlier tasks, as Avalanche's Replay and DER do; Avalanche's DER buffer is also class-balanced "
        "(`memory.policy: balanced`). `train.unseen_outputs`: `masked` (our default) leaves the outputs of classes not "
        "reached yet out of the loss, `trained` trains them from the first task on, as Avalanche does. Section `peers` "
        "has Avalanche's figures on this protocol."), "", *rows])
    if not args.no_write:
        update_section("er-store", text)


if __name__ == "__main__":
    main()
