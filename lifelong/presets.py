"""The origin document's command line, translated into our config.

Document 000 runs ``python main.py --dataset [cifar100|multi|pmnist] --meta-learn [True|False] --task-reg gs_mask
--num-iterations N``. ``lifelong run`` accepts the same four flags: ``--dataset`` starts from the paper's protocol
for that dataset (the same settings as the shipped ``configs/gs_mask_<dataset>.yml``), the others set the
method and its meta-iteration; every other flag and ``--set`` still override them.
"""

from __future__ import annotations

import copy
from typing import Any

from lifelong.errors import UserError

# The paper's training protocol: 50 epochs, plain SGD lr 0.003, batch 64, 15% of the training data for validation;
# its regularizer weight c 0.05 and (sub)gradient step (the method's defaults are for short runs: docs/methods.md).
_PROTOCOL: dict[str, Any] = {
    "method": "gs-mask",
    "model": {"name": "gs-conv"},
    "train": {"epochs": 50, "optimizer": "sgd", "lr": 0.003, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64},
    "gs-mask": {"c": 0.05, "proximal": False},
}
GS_MASK_DATASETS: dict[str, dict[str, Any]] = {
    "pmnist": {"benchmark": "pmnist", "num_tasks": 10, "scenario": "task", "validation": 0.15},
    "cifar100": {"benchmark": "split-cifar100", "num_tasks": 20, "validation": 0.15},
    "multi": {"benchmark": "multi", "validation": 0.15},
}
TASK_REGULARIZERS = {"gs_mask": "gs-mask"}


def gs_mask_preset(dataset: str) -> dict[str, Any]:
    """The config of ``--dataset dataset``: the paper's protocol on our benchmark of that name."""
    if dataset not in GS_MASK_DATASETS:
        raise UserError(f"--dataset must be one of {', '.join(GS_MASK_DATASETS)} (document 000's datasets), "
                        f"got '{dataset}'")
    return {**copy.deepcopy(_PROTOCOL), "data": dict(GS_MASK_DATASETS[dataset])}


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise UserError(f"--meta-learn expects True or False, got '{text}'")


def origin_assignments(meta_learn: str | None, task_reg: str | None, num_iterations: str | None
                       ) -> dict[str, Any]:
    """Dotted config keys set by the origin command's --meta-learn, --task-reg and --num-iterations."""
    keys: dict[str, Any] = {}
    if task_reg is not None:
        if task_reg not in TASK_REGULARIZERS:
            raise UserError(f"--task-reg must be {', '.join(TASK_REGULARIZERS)}, got '{task_reg}' (other methods: "
                            "--method, see `lifelong list methods`)")
        keys["method"] = TASK_REGULARIZERS[task_reg]
    if meta_learn is not None:
        keys["gs-mask.meta_learn"] = _boolean(meta_learn)
    if num_iterations is not None:
        try:
            keys["gs-mask.num_iterations"] = int(num_iterations)
        except ValueError:
            raise UserError(f"--num-iterations expects a positive integer, got '{num_iterations}'") from None
    return keys
