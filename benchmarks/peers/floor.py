"""The least time any torch program needs for the peers protocol's naive run (docs: benchmarks/peers/README.md,
"The floor"): importing torch and torch._dynamo (torch.optim's step imports it), then a bare loop of the same SGD
steps with no library around it. Run from the repository root: ``python benchmarks/peers/floor.py --data-dir DATA``.
"""

from __future__ import annotations

import argparse
import time

started = time.perf_counter()
import torch  # noqa: E402  (its import is what is timed)

imported = time.perf_counter()
import torch._dynamo  # noqa: E402,F401  (torch.optim.Optimizer.step imports it on its first call)

dynamo = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lifelong.config import build_config
    from lifelong.data.batches import TaskView
    from lifelong.data.benchmarks import build_benchmark

    cfg = build_config({"data": {"benchmark": "split-mnist", "data_dir": args.data_dir, "scenario": "task",
                                 "validation": 0.0}})
    views = [TaskView(t, t.train, torch.device("cpu")) for t in build_benchmark(cfg.data, 0).tasks]
    tasks = [(v.inputs(slice(None)).flatten(1), v.targets) for v in views]
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(784, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU())
    heads = torch.nn.ModuleList(torch.nn.Linear(400, 2) for _ in tasks)
    steps, start = 0, time.perf_counter()
    for head, (x, y) in zip(heads, tasks):
        optimizer = torch.optim.SGD([*body.parameters(), *head.parameters()], lr=0.01)
        for index in torch.randperm(len(y)).split(64):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(head(body(x[index])), y[index]).backward()
            optimizer.step()
            steps += 1
    train = time.perf_counter() - start
    print(f"import torch {imported - started:.2f} s, torch._dynamo {dynamo - imported:.2f} s, bare training "
          f"{train:.2f} s ({steps} SGD steps of 64 rows, {1000 * train / steps:.2f} ms each, {args.threads} threads)")


if __name__ == "__main__":
    main()
