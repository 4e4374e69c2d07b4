"""Where gs-mask's filter norms settle under plain SGD, against where they are (docs/methods.md, gs-mask).

BatchNorm makes the task loss blind to a filter's scale, so its gradient g_f is orthogonal to W_f and each SGD
step lengthens the filter by ≈ lr²‖g_f‖²/(2‖W_f‖), while the regularizer's step shortens it by
lr·c·(β_l + a_l·‖W_f‖/‖W_l‖_F), a_l = max(0.5, 1−β_l)/2. They balance at the ‖W_f‖ this script predicts from
E‖g_f‖² over the task's training rows, for the filters a task owns, from a finished (or interrupted) run directory:

    python benchmarks/gs_mask_equilibrium.py RUN_DIR [--task 0] [--batches 200]

A filter settles below τ only when its E‖g_f‖², taken at ‖W_f‖ = τ, is under 2·c·β_l·τ / lr; the script prints
that bound per layer beside the smallest E‖g_f‖² at the current norms (under BatchNorm it grows as 1/‖W_f‖² as a
filter shrinks). The checkpoint holds the run's last state: for a task before the last finished one, later tasks
have moved the filters it does not own, and so its gradients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lifelong import store
from lifelong.data.batches import TaskView
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.learner import Learner


def predicted_norms(mean_square: torch.Tensor, lr: float, c: float, beta: float, layer_norm: float) -> torch.Tensor:
    """The ‖W_f‖ at which lr·E‖g_f‖²/(2‖W_f‖) = c·(β + a‖W_f‖/‖W_l‖_F): the positive root of a quadratic."""
    a = max(0.5, 1.0 - beta) / 2 / layer_norm
    target = lr * mean_square / (2 * c)
    return (-beta + torch.sqrt(beta * beta + 4 * a * target)) / (2 * a) if a > 0 else target / beta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--task", type=int, default=0, help="the task whose filters are compared (default 0)")
    parser.add_argument("--batches", type=int, default=200, help="mini-batches averaged for E‖g_f‖²")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = store.load_checkpoint(args.run_dir)
    if ckpt is None:
        raise UserError(f"no checkpoint.pt in '{args.run_dir}'; give a gs-mask run directory")
    cfg = store.read_config(args.run_dir)
    train = cfg.train
    if cfg.method != "gs-mask" or train.optimizer != "sgd" or train.momentum or train.weight_decay:
        raise UserError("the balance holds for gs-mask runs with plain SGD (momentum 0, weight decay 0); "
                        f"this run has method {cfg.method}, optimizer {train.optimizer}")
    benchmark = build_benchmark(cfg.data, cfg.seed)
    method = Learner.for_benchmark(cfg, benchmark, torch.device("cpu")).method
    method.load_state_dict(ckpt["method"])
    if args.task >= method.done:
        raise UserError(f"task {args.task} has not finished in this run ({method.done} finished); pick an earlier one")
    view = TaskView(benchmark.tasks[args.task], benchmark.tasks[args.task].train, torch.device("cpu"))
    weights, masks = [conv.weight for conv in method.net.convs], method.ownership.masks(args.task, training=False)
    owned = [owner == args.task for owner in method.ownership.owner]
    method.model.train()  # BatchNorm on batch statistics, as in training
    mean_square = [torch.zeros(w.shape[0]) for w in weights]
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(args.batches):
        index = torch.randint(0, len(view), (train.batch_size,), generator=generator)
        logits = method.model.logits(method.net(view.inputs(index), args.task, masks), args.task)
        grads = torch.autograd.grad(F.cross_entropy(logits, view.targets[index]), weights)
        for total, g in zip(mean_square, grads):
            total += g.flatten(1).square().sum(1) / args.batches
    p = method.params
    print(f"{args.run_dir}: task {args.task}, lr {train.lr}, c {p.c}, τ {p.tau}, {args.batches} batches of "
          f"{train.batch_size}")
    for layer, (w, ms, beta, mine) in enumerate(zip(weights, mean_square, p.betas, owned)):
        if not mine.any():
            print(f"layer {layer + 1}: task {args.task} owns no filter")
            continue
        actual = w.detach().flatten(1).norm(dim=1)
        guess = predicted_norms(ms, train.lr, p.c, beta, float(w.detach().norm()))
        actual, guess, ms = actual[mine], guess[mine], ms[mine]
        corr = float(torch.corrcoef(torch.stack([actual, guess]))[0, 1]) if len(actual) > 1 else float("nan")
        print(f"layer {layer + 1}: {int(mine.sum())} filters; norm {actual.min():.3f}-{actual.max():.3f}, predicted "
              f"{guess.min():.3f}-{guess.max():.3f}, correlation {corr:.2f}; smallest E‖g_f‖² {ms.min():.3g}, "
              f"below τ needs < {2 * p.c * beta * p.tau / train.lr:.3g}")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
