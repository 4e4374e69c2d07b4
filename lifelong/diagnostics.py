"""A run's diagnostics files: after each task, the method's diagnostic tensors (``Method.diagnostics``) in
``RUN_DIR/diagnostics/task-<k>.safetensors``, written atomically; what they hold: docs/inspect.md."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from lifelong import store
from lifelong.errors import UserError

DIAGNOSTICS_DIR = "diagnostics"
_NAME = re.compile(r"task-(\d+)\.safetensors")


def path(run_dir: Path, task: int) -> Path:
    return run_dir / DIAGNOSTICS_DIR / f"task-{task}.safetensors"


def save_task(run_dir: Path, task: int, tensors: dict[str, torch.Tensor], method: str) -> None:
    """Write task ``task``'s tensors (nothing when there are none); a killed write leaves no partial file."""
    if not tensors:
        return
    target = path(run_dir, task)
    if target.parent.is_dir():  # the hidden temporary file of an earlier write that was killed
        for stale in target.parent.glob(f".{target.name}.*"):
            stale.unlink(missing_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    store.atomic_write_bytes(target, save(cpu, metadata={"task": str(task), "method": method}))


def clear(run_dir: Path) -> None:
    """Remove the diagnostics of an earlier attempt (a run that starts over)."""
    shutil.rmtree(run_dir / DIAGNOSTICS_DIR, ignore_errors=True)


def load_run(run_dir: Path) -> dict[int, dict[str, torch.Tensor]]:
    """Every saved task's tensors, by task id; a damaged file is a user error naming it."""
    folder, found = run_dir / DIAGNOSTICS_DIR, {}
    for file in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _NAME.fullmatch(file.name)
        if match is None:
            continue
        try:
            found[int(match.group(1))] = load(file.read_bytes())
        except (SafetensorError, ValueError, OSError) as err:
            raise UserError(f"diagnostics file '{file}' cannot be read ({type(err).__name__}); delete it (the run's "
                            "other results stay valid)") from None
    return dict(sorted(found.items()))
