"""Executors: where a comparison's runs train (this process, N local processes, a Ray cluster), by name."""

from __future__ import annotations

from lifelong.errors import UserError
from lifelong.executors.base import Executor, Job, Outcome, cpu_count, run_job
from lifelong.executors.processes import Processes
from lifelong.executors.raycluster import RayCluster
from lifelong.executors.serial import Serial

EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (Serial, Processes, RayCluster)}

__all__ = ["EXECUTORS", "Executor", "Job", "Outcome", "cpu_count", "make_executor", "run_job"]


def make_executor(name: str | None = None, jobs: int = 1, address: str | None = None, retries: int = 2) -> Executor:
    """The executor the compare flags name: ``serial`` for one job, ``processes`` for more, or ``ray``."""
    name = name or ("serial" if jobs == 1 else "processes")
    if name not in EXECUTORS:
        raise UserError(f"unknown executor '{name}'; valid: {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise UserError("--address names a Ray cluster; add --executor ray")
    if name == "serial":
        if jobs != 1:
            raise UserError(f"the serial executor runs one job at a time; drop --jobs {jobs} or use processes")
        return Serial()
    if name == "processes":
        return Processes(jobs, retries)
    return RayCluster(address, retries)
