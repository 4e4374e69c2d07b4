"""Optional sinks that receive every metrics.jsonl record as the loop logs it (config key ``logger``).

``none`` writes only metrics.jsonl. ``tensorboard`` also writes TensorBoard event files to ``RUN_DIR/tensorboard``
(the optional extra ``lifelong[tensorboard]``). The event files are rebuilt from metrics.jsonl when a run is
resumed, so a crash never leaves duplicated or missing points.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lifelong import store
from lifelong.errors import UserError

TENSORBOARD_DIR = "tensorboard"


class TensorBoardSink:
    """Scalars per record: ``train/loss`` and ``val/acc`` against the epoch count over the whole run,
    ``test_acc/task_<j>`` after every task (step = tasks trained so far; 0 = untrained network)."""

    def __init__(self, run_dir: Path, replay: bool):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger 'tensorboard' needs the tensorboard package: pip install 'lifelong[tensorboard]' "
                            "(or pip install tensorboard), or set logger: none") from None
        log_dir = run_dir / TENSORBOARD_DIR
        shutil.rmtree(log_dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.epochs = self.tasks = 0
        for record in store.read_metrics(run_dir) if replay else []:
            self(record)

    def __call__(self, record: dict[str, Any]) -> None:
        if record["event"] == "epoch":
            self.epochs += 1
            self.writer.add_scalar("train/loss", record["train_loss"], self.epochs)
            if "val_acc" in record:
                self.writer.add_scalar("val/acc", record["val_acc"], self.epochs)
        else:  # random_init (step 0) or task (step = tasks trained)
            self.tasks += record["event"] == "task"
            for j, acc in enumerate(record["acc"]):
                self.writer.add_scalar(f"test_acc/task_{j + 1}", acc, self.tasks)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoSink:
    """``logger: none``: metrics.jsonl only."""

    def __call__(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def open_sink(name: str, run_dir: Path, replay: bool) -> TensorBoardSink | NoSink:
    """The sink for ``logger: name``; ``replay`` feeds it the records already in metrics.jsonl (a resumed run)."""
    return TensorBoardSink(run_dir, replay) if name == "tensorboard" else NoSink()
