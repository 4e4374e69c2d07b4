"""The logger registry: where a run's records go besides metrics.jsonl (config key ``logger``, one or several)."""

from __future__ import annotations

from lifelong.errors import UserError
from lifelong.loggers.base import Logger, Loggers
from lifelong.loggers.mlflow import MlflowLogger
from lifelong.loggers.tensorboard import TensorBoardLogger

LOGGERS: dict[str, type[Logger]] = {m.name: m for m in (TensorBoardLogger, MlflowLogger)}


def open_loggers(names: list[str]) -> Loggers:
    """The loggers a config names, not yet started."""
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise UserError(f"unknown logger '{unknown[0]}'; valid: none, {', '.join(LOGGERS)}")
    return Loggers([LOGGERS[name]() for name in names])


__all__ = ["LOGGERS", "Logger", "Loggers", "open_loggers"]
