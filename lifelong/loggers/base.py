"""The logger interface: a run's records go to metrics.jsonl and to every logger the config names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class Logger:
    """Receives one run: ``start`` once, ``log`` per metrics.jsonl record, ``finish`` once (also after a crash)."""

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""

    def start(self, run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Open the sink; ``history`` holds the records already logged (a resumed run), to replay or skip."""

    def log(self, record: dict[str, Any]) -> None:
        """One record as the loop writes it to metrics.jsonl (events ``random_init``, ``epoch``, ``task``)."""

    def finish(self, results: dict[str, Any] | None, files: dict[str, Path]) -> None:
        """Close the sink; ``results`` is results.json and ``files`` the run's files by name (config.yaml,
        metrics.jsonl, results.json, the weights), or None and {} when the run stopped before its end."""


class Loggers:
    """Several loggers as one: each call goes to every logger, in the config's order."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def start(self, run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        for logger in self.loggers:
            logger.start(run_dir, config, history)

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def finish(self, results: dict[str, Any] | None, files: dict[str, Path]) -> None:
        """Finish every logger, even when one fails (its sink still closes); the first failure is raised after."""
        failed: Exception | None = None
        for logger in self.loggers:
            try:
                logger.finish(results, files)
            except Exception as err:
                failed = failed or err
        if failed is not None:
            raise failed
