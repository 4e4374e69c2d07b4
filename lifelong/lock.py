"""One trainer per run directory: an exclusive lock file beside it (``.<run>.lock``) naming its owner.

The lock is ``flock`` on that file, so the system releases it when its owner dies (on NFS, flock is a POSIX lock
the server releases when the client's lease ends); a file left behind by a killed owner is a stale lock, taken
over by the next worker. docs/compare.md explains the protocol.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lifelong.errors import UserError

_held: dict[tuple[str, int], int] = {}  # (lock path, thread) → depth: a thread may lock a run it holds again
_guard = threading.Lock()
PROBE_GRACE = 0.2  # seconds a refused lock is retried without ``wait``: ``is_held`` probes hold it for a moment


class RunLocked(UserError):
    """Another worker holds the run's lock."""


def lock_path(run_dir: Path) -> Path:
    """The lock file of a run directory: hidden, beside it (a run that fails to start leaves no directory). The
    path is resolved first, so a symlink, `.` or `..` reaching the directory takes the same lock."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


def owner(run_dir: Path) -> dict[str, Any] | None:
    """The recorded owner of the run's lock file ({host, pid, since}), or None when there is no readable one."""
    try:
        data = json.loads(lock_path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_held(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock now (a killed owner's file is left behind, unlocked)."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while a holder has it exclusively
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's shared lock


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another worker"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')} (since {since})"


@contextmanager
def run_lock(run_dir: Path, wait: bool = False, poll: float = 0.2) -> Iterator[dict[str, Any] | None]:
    """Hold the run's lock for the block; yields the stale owner it took over (None for a free lock).

    ``wait``: block until the other worker releases it (False: raise ``RunLocked`` naming the owner).
    """
    path = lock_path(run_dir)
    key = (str(path.absolute()), threading.get_ident())
    with _guard:
        if key in _held:
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield None
        finally:
            with _guard:
                _held[key] -= 1
        return
    created = _make_parents(path.parent)
    try:
        fd, stale = _acquire(Path(run_dir), path, wait, poll)
    except BaseException:
        _remove_empty(created)
        raise
    with _guard:
        _held[key] = 1
    try:
        yield stale
    finally:
        with _guard:
            del _held[key]
        try:
            path.unlink(missing_ok=True)  # while still held: a waiter then finds the file gone and retries
        finally:
            os.close(fd)
            _remove_empty(created)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
    except OSError as err:
        _remove_empty(missing)
        raise UserError(f"cannot create '{err.filename or made}': {err.strerror or err}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders the lock created if nothing else was put in them (a run that did not start)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _acquire(run_dir: Path, path: Path, wait: bool, poll: float) -> tuple[int, dict[str, Any] | None]:
    grace = time.monotonic() + PROBE_GRACE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"cannot create the lock file '{path}': {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError(f"cannot lock '{path}' ({err.strerror or err}); the file system must support "
                                "file locks for runs to be shared by workers") from None
            if not wait and time.monotonic() >= grace:
                raise RunLocked(f"'{run_dir}' is being trained by {describe(owner(run_dir))}; wait for it to "
                                "finish (its results are then reused) or stop that process") from None
            time.sleep(poll if wait else 0.01)
            continue
        if not _same_file(fd, path):  # its holder removed it between our open and our lock: try the new one
            os.close(fd)
            continue
        stale = _read(fd)
        _write(fd, {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        return fd, stale


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, current = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


def _read(fd: int) -> dict[str, Any] | None:
    """What a previous owner left in the file (it died holding the lock), or None for a fresh file."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    if not data:
        return None
    try:
        info = json.loads(data)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _write(fd: int, info: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())
    os.fsync(fd)
