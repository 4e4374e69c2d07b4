"""Runs one after another in this process (``--jobs 1``, the default)."""

from __future__ import annotations

from lifelong.executors.base import Executor, Job, Outcome, Progress, run_job


class Serial(Executor):
    name = "serial"
    description = "one run after another in this process (--jobs 1)"

    def map(self, jobs: list[Job], progress: Progress | None = None) -> list[Outcome]:
        outcomes = []
        for job in jobs:
            if progress:
                progress(len(outcomes), len(jobs), job.label)
            outcomes.append(run_job(job.config))
        return outcomes
