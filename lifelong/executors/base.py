"""What every executor shares: a job (one planned run), its outcome, and ``run_job``, the function a worker calls."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from lifelong.errors import UserError

Progress = Callable[[int, int, str], None]  # (runs done, runs in all, what just happened)


@dataclass
class Job:
    """One run of a plan: its position, a label for progress lines, and its config as plain data."""

    index: int
    label: str
    config: dict[str, Any]


@dataclass
class Outcome:
    """What became of a job: its run directory and results, or the error that stopped it (not retried)."""

    run_dir: str | None = None
    results: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1


class Executor:
    """Runs jobs and returns one Outcome per job, in the jobs' order; a killed worker's run is retried."""

    name = ""
    description = ""

    def map(self, jobs: list[Job], progress: Progress | None = None) -> list[Outcome]:
        raise NotImplementedError


def cpu_count() -> int:
    """The cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_job(config: dict[str, Any], threads: int | None = None,
            on_checkpoint: Callable[[Any], None] | None = None) -> Outcome:
    """Train (or find) one run in this process: wait for its lock, then ``lifelong.run``; errors become outcomes.

    ``threads`` caps torch's CPU threads (the run's ``train.threads`` is lowered to it, never raised);
    ``on_checkpoint`` goes to ``lifelong.run`` (it sees the loop's state after every checkpoint).
    """
    import torch

    from lifelong import store
    from lifelong.config import build_config
    from lifelong.lock import run_lock
    from lifelong.loop import run

    run_dir = None
    try:
        cfg = build_config(config)
        if threads is not None:
            torch.set_num_threads(threads)
            if cfg.train.threads is not None and cfg.train.threads > threads:
                cfg.train.threads = threads
        run_dir = store.run_directory(cfg)
        with run_lock(run_dir, wait=True):  # another worker training it: wait, then reuse its results
            run_dir, results = run(cfg, on_checkpoint=on_checkpoint)
        return Outcome(str(run_dir), results)
    except UserError as err:
        return Outcome(None if run_dir is None else str(run_dir), error=str(err))
    except Exception as err:  # a bug or a resource error: reported with the run, not retried
        return Outcome(None if run_dir is None else str(run_dir), error=f"{type(err).__name__}: {err}")
