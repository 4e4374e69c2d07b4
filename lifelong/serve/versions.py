"""Published model versions on disk: RUN_DIR/serve/versions/vNNNNNN/{checkpoint.pt, model.safetensors,
version.json}, each written whole into a hidden folder and renamed; current.json names the served one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lifelong import store
from lifelong.errors import UserError

INFO_FILE = "version.json"
CURRENT_FILE = "current.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Versions:
    """The folder of versions beside the journal."""

    def __init__(self, root: Path):
        self.root = root
        self.folder = root / "versions"
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".tmp-*"):  # writes a crash interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in root.glob(f".{CURRENT_FILE}.*"):
            leftover.unlink(missing_ok=True)

    def path(self, number: int) -> Path:
        return self.folder / f"v{number:06d}"

    def published(self) -> list[int]:
        """Numbers of the complete versions, ascending."""
        return sorted(int(p.name[1:]) for p in self.folder.glob("v[0-9]*") if (p / INFO_FILE).is_file())

    def write(self, number: int, state: bytes, model: torch.nn.Module, info: dict[str, Any]) -> Path:
        """Write version ``number`` completely, then make it visible with one rename."""
        final, tmp = self.path(number), self.folder / f".tmp-v{number:06d}-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            store.atomic_write_bytes(tmp / store.CHECKPOINT_FILE, state)
            weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(weights, str(tmp / store.WEIGHTS_FILE))
            _fsync(tmp / store.WEIGHTS_FILE)
            store.write_json(tmp / INFO_FILE, {"version": number, **info})
            _fsync(tmp)
            os.replace(tmp, final)
            _fsync(self.folder)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cannot write version {number} in '{self.folder}': {err.strerror or err}") from None
        return final

    def info(self, number: int) -> dict[str, Any]:
        try:
            return json.loads((self.path(number) / INFO_FILE).read_text())
        except (OSError, ValueError):
            raise UserError(f"version {number} is not a complete version in '{self.folder}'") from None

    def state(self, number: int) -> bytes:
        """The version's checkpoint.pt (a saved Learner), as bytes."""
        try:
            return (self.path(number) / store.CHECKPOINT_FILE).read_bytes()
        except OSError:
            raise UserError(f"version {number} has no readable {store.CHECKPOINT_FILE} in '{self.folder}'") from None

    def current(self) -> dict[str, Any] | None:
        """{"version", "resume_pos", "journal"}: the served version, and the journal position the learner continues
        after in the journal of that id (no id: written before ids were kept)."""
        path = self.root / CURRENT_FILE
        if not path.is_file():
            return None
        try:
            current = json.loads(path.read_text())
            int(current["version"]), int(current["resume_pos"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"'{path}' is damaged; write {{\"version\": N, \"resume_pos\": P}} naming a version in "
                            f"'{self.folder}'") from None
        return current

    def set_current(self, number: int, resume_pos: int, journal: str) -> None:
        """Serve version ``number``; the learner continues after position ``resume_pos`` of journal ``journal``."""
        store.write_json(self.root / CURRENT_FILE, {"version": number, "resume_pos": resume_pos, "journal": journal})

    def prune(self, keep: int, served: int) -> None:
        """Delete the oldest versions beyond ``keep``, never the served one."""
        numbers = [n for n in self.published() if n != served]
        for number in numbers[: max(0, len(numbers) - (keep - 1))]:
            shutil.rmtree(self.path(number), ignore_errors=True)
