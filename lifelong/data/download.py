"""Getting files from the network safely: mirrors in order, a progress bar, atomic writes, safe tar extraction.

Dataset-agnostic on purpose: `sources.py` knows which files and checksums a dataset has, this module only
moves bytes. A file appears under its final name only after the caller's check has accepted it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from lifelong.errors import UserError

TIMEOUT_S = 30  # seconds without data before a mirror is given up
CHUNK_BYTES = 1 << 20


def fetch(urls: Sequence[str], dest: Path, verify: Callable[[Path], None], progress: bool = True) -> None:
    """Download `dest` from the first mirror that works and whose content `verify` accepts (it raises UserError)."""
    errors = []
    for url in urls:
        try:
            _fetch_one(url, dest, verify, progress)
            return
        except (UserError, OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts: OSError
            errors.append(f"{url}: {err}")
    raise UserError(
        f"could not download {dest.name}: {'; '.join(errors)}; check your network, "
        f"or download the file by hand into {dest.parent}"
    )


def _fetch_one(url: str, dest: Path, verify: Callable[[Path], None], progress: bool) -> None:
    """Stream one URL into a temporary file beside `dest`, check it, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    if progress:  # said before connecting, so a stalled network is not silent
        Console(stderr=True).print(f"downloading {dest.name} from {url} (gives up after {TIMEOUT_S} s without data)")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
                task = bar.add_task(dest.name, total=total)
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
            received = out.tell()
        if total is not None and received != total:
            raise UserError(f"connection closed after {received} of {total} bytes")
        verify(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def extract_tar(archive: Path, dest: Path) -> None:
    """Unpack a (compressed) tar into `dest`, refusing links, devices and any path that would leave `dest`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                target = _member_target(archive, dest, member)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # regular files always have content
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise UserError(f"corrupt archive {archive}: {err}; delete it and download it again") from err


def _member_target(archive: Path, dest: Path, member: tarfile.TarInfo) -> Path:
    """Where a tar member may be written: only plain files and folders with relative paths inside `dest`."""
    parts = PurePosixPath(member.name).parts
    if not (member.isfile() or member.isdir()) or not parts or parts[0] == "/" or ".." in parts:
        raise UserError(
            f"refusing to extract {member.name!r} from {archive}: archives may only hold plain files and folders "
            "inside the destination; delete the archive and download it again from the official site"
        )
    return dest.joinpath(*parts)
