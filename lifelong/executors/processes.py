"""``--jobs N``: N runs at a time on this machine, each in a fresh process with cores // N torch threads."""

from __future__ import annotations

import multiprocessing
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from lifelong.errors import UserError
from lifelong.executors.base import Executor, Job, Outcome, Progress, cpu_count, run_job


def _child(conn: Connection, config: dict[str, Any], threads: int) -> None:
    """A worker process: one run, its outcome sent back; Ctrl-C ends it quietly (the run resumes later)."""
    try:
        conn.send(run_job(config, threads))
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


@dataclass
class _Worker:
    job: Job
    process: Any
    conn: Connection


class Processes(Executor):
    name = "processes"
    description = "N runs at a time in their own processes on this machine (--jobs N)"

    def __init__(self, jobs: int, retries: int = 2):
        if jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = min(jobs, cpu_count())  # never more processes than cores
        self.threads = max(1, cpu_count() // self.jobs)
        self.retries = retries

    def map(self, jobs: list[Job], progress: Progress | None = None) -> list[Outcome]:
        ctx = multiprocessing.get_context("spawn")  # no forked torch threads
        pending, running = deque(jobs), []
        attempts = {job.index: 0 for job in jobs}
        outcomes: dict[int, Outcome] = {}
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    job = pending.popleft()
                    attempts[job.index] += 1
                    receive, send = ctx.Pipe(duplex=False)
                    process = ctx.Process(target=_child, args=(send, job.config, self.threads), daemon=True)
                    process.start()
                    send.close()
                    running.append(_Worker(job, process, receive))
                ready = wait([w.conn for w in running] + [w.process.sentinel for w in running])
                for worker in [w for w in running if w.conn in ready or w.process.sentinel in ready]:
                    outcome = _receive(worker)
                    if outcome is None:
                        worker.process.join(10)  # the pipe may close just before the process exits
                        if worker.process.is_alive():
                            continue
                    running.remove(worker)
                    worker.conn.close()
                    worker.process.join()
                    index = worker.job.index
                    if outcome is None and attempts[index] <= self.retries:
                        pending.appendleft(worker.job)  # killed: again, resuming from its checkpoint
                        continue
                    if outcome is None:
                        outcome = Outcome(error=f"its worker died {attempts[index]} times "
                                                f"(last exit code {worker.process.exitcode})")
                    outcome.attempts = attempts[index]
                    outcomes[index] = outcome
                    if progress:
                        progress(len(outcomes), len(jobs), worker.job.label)
        finally:
            for worker in running:  # Ctrl-C or an error here: stop the workers; their runs resume next time
                worker.process.terminate()
                worker.process.join(30)
        return [outcomes[job.index] for job in jobs]


def _receive(worker: _Worker) -> Outcome | None:
    """The worker's outcome if it sent one, else None (it died before, or is about to exit)."""
    try:
        if worker.conn.poll():
            return worker.conn.recv()
    except (EOFError, OSError):
        pass
    return None
