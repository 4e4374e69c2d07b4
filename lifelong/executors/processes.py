"""``--jobs N``: N runs at a time on this machine, in N worker processes with cores // N torch threads each.

A worker process trains one run after another; workers are forked from a server process that imported lifelong
once (and never ran a torch operation, so no thread pool is forked). A worker that dies is replaced and its run
started again, resuming from the run's last checkpoint.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from lifelong.errors import UserError
from lifelong.executors.base import Executor, Job, Outcome, Progress, cpu_count, run_job


def _serve(conn: Connection, threads: int) -> None:
    """A worker process: runs the configs it receives until it receives None; Ctrl-C ends it quietly."""
    try:
        while True:
            config = conn.recv()
            if config is None:
                return
            conn.send(run_job(config, threads))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        conn.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: Job | None = None


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
        ctx = multiprocessing.get_context("forkserver")  # workers forked from a server that never ran torch
        ctx.set_forkserver_preload(["lifelong.executors.base", "lifelong.loop"])  # imported once, not per worker
        pending = deque(jobs)
        attempts = {job.index: 0 for job in jobs}
        outcomes: dict[int, Outcome] = {}
        workers: list[_Worker] = []

        def start() -> _Worker:
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(theirs, self.threads), daemon=True)
            process.start()
            theirs.close()
            return _Worker(process, mine)

        try:
            while pending or any(w.job for w in workers):
                while pending and (len(workers) < min(self.jobs, len(jobs)) or any(w.job is None for w in workers)):
                    idle = next((w for w in workers if w.job is None), None)
                    if idle is None:
                        idle = start()
                        workers.append(idle)
                    job = pending.popleft()
                    attempts[job.index] += 1
                    idle.job = job
                    try:
                        idle.conn.send(job.config)
                    except (BrokenPipeError, OSError):
                        pass  # it died while idle: noticed below as a death during this job
                busy = [w for w in workers if w.job is not None]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                    outcome = _receive(worker)
                    if outcome is None:
                        worker.process.join(10)  # the pipe may close just before the process exits
                        if worker.process.is_alive():
                            continue
                    job, worker.job = worker.job, None
                    if outcome is None:  # killed: replace the worker; the run resumes from its checkpoint
                        workers.remove(worker)
                        worker.conn.close()
                        if attempts[job.index] <= self.retries:
                            pending.appendleft(job)
                            continue
                        outcome = Outcome(error=f"its worker died {attempts[job.index]} times "
                                                f"(last exit code {worker.process.exitcode})")
                    outcome.attempts = attempts[job.index]
                    outcomes[job.index] = outcome
                    if progress:
                        progress(len(outcomes), len(jobs), job.label)
        finally:
            _stop(workers)
        return [outcomes[job.index] for job in jobs]


def _receive(worker: _Worker) -> Outcome | None:
    """The worker's outcome if it sent one, else None (it died, or is about to exit)."""
    try:
        if worker.conn.poll():
            return worker.conn.recv()
    except (EOFError, OSError):
        pass
    return None


def _stop(workers: list[_Worker]) -> None:
    """Idle workers are told to finish; busy ones (Ctrl-C, an error here) are terminated: their runs resume later."""
    for worker in workers:
        if worker.job is None:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        else:
            worker.process.terminate()
    for worker in workers:
        worker.process.join(30)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(10)
        worker.conn.close()
