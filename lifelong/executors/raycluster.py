"""``--executor ray``: each run a Ray task with its CPU and GPU request, on a local Ray instance or a cluster.

Ray retries a task whose worker or node died; the retried run waits for the run's lock and resumes from its last
checkpoint. Run directories must be on storage every node sees (docs/compare.md).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from lifelong.errors import UserError
from lifelong.executors.base import Executor, Job, Outcome, Progress, cpu_count, run_job


def _task(config: dict[str, Any], threads: int) -> Outcome:
    return run_job(config, threads)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'lifelong[ray]'") from None
    return ray


class RayCluster(Executor):
    name = "ray"
    description = "each run a Ray task on a local Ray instance or the cluster at --address"

    def __init__(self, address: str | None = None, retries: int = 2, cpus_per_run: int = 1):
        self.address, self.retries, self.cpus_per_run = address, retries, cpus_per_run

    def map(self, jobs: list[Job], progress: Progress | None = None) -> list[Outcome]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            _connect(ray, self.address)
        try:
            task = ray.remote(_task)
            refs = {}
            for job in jobs:
                gpus = 1 if job.config.get("device") == "cuda" else 0
                options = {"num_cpus": self.cpus_per_run, "num_gpus": gpus, "max_retries": self.retries,
                           "retry_exceptions": False}  # errors come back as outcomes; only dead workers retry
                refs[task.options(**options).remote(job.config, self.cpus_per_run)] = job
            outcomes: dict[int, Outcome] = {}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                try:
                    outcomes[job.index] = ray.get(done[0])
                except ray.exceptions.RayError as err:  # retries used up: the worker or node kept dying
                    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    outcomes[job.index] = Outcome(error=f"{type(err).__name__}: {first[:300]}",
                                                  attempts=self.retries + 1)
                if progress:
                    progress(len(outcomes), len(jobs), job.label)
        finally:
            if started:
                ray.shutdown()
        return [outcomes[job.index] for job in jobs]


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (``auto``: the one this machine runs), or start a local instance."""
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    if address not in (None, "auto"):
        _check_reachable(address)  # Ray itself waits minutes for an address that does not answer
    try:
        if address is None:
            ray.init(num_cpus=cpu_count(), include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = "a local Ray instance" if address is None else f"the Ray cluster at '{address}'"
        raise UserError(f"cannot start or reach {where}: {str(err).splitlines()[0][:200] if str(err) else err}; "
                        "check --address (HOST:PORT of the head node, or auto with `ray start` run here)") from None


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address expects HOST:PORT of the Ray head node (or auto), got '{address[:100]}'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at '{address}' ({err.strerror or err}); start it with "
                        "`ray start --head` or check --address") from None
