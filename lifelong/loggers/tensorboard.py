"""TensorBoard event files in ``RUN_DIR/tensorboard`` (the optional extra ``lifelong[tensorboard]``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lifelong.errors import UserError
from lifelong.loggers.base import Logger

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger(Logger):
    """Scalars ``train/loss`` and ``val/acc`` against the epoch count over the whole run, ``test_acc/task_<j>`` (and
    ``probe_acc/task_<j>``) after every task (step = tasks trained so far; 0 = untrained network), ``anytime/acc``
    against the training rows seen; rebuilt from the history on resume."""

    name = "tensorboard"
    description = "TensorBoard event files in RUN_DIR/tensorboard (pip install 'lifelong[tensorboard]')"

    def start(self, run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger 'tensorboard' needs the tensorboard package: pip install 'lifelong[tensorboard]' "
                            "(or pip install tensorboard), or set logger: none") from None
        log_dir = run_dir / TENSORBOARD_DIR
        shutil.rmtree(log_dir, ignore_errors=True)  # rebuilt from the history: no duplicated points after a crash
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.epochs = self.tasks = 0
        for record in history:
            self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        if record["event"] == "epoch":
            self.epochs += 1
            self.writer.add_scalar("train/loss", record["train_loss"], self.epochs)
            if "val_acc" in record:
                self.writer.add_scalar("val/acc", record["val_acc"], self.epochs)
        elif record["event"] == "anytime":  # step = training rows seen (train.eval_every)
            self.writer.add_scalar("anytime/acc", sum(record["acc"]) / len(record["acc"]), record["samples"])
        elif record["event"] in ("random_init", "task"):  # step 0, then the number of tasks trained
            self.tasks += record["event"] == "task"
            for j, acc in enumerate(record["acc"]):
                self.writer.add_scalar(f"test_acc/task_{j + 1}", acc, self.tasks)
            for j, acc in enumerate(record.get("probe", [])):  # train.probe
                self.writer.add_scalar(f"probe_acc/task_{j + 1}", acc, self.tasks)
        self.writer.flush()

    def finish(self, results: dict[str, Any] | None, files: dict[str, Path]) -> None:
        if results is not None:
            self.writer.add_scalar("summary/acc", results["acc"], self.tasks)
            if results["bwt"] is not None:
                self.writer.add_scalar("summary/bwt", results["bwt"], self.tasks)
        self.writer.close()
