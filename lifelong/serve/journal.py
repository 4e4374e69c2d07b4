"""The journal of accepted samples: SQLite in WAL mode, each batch committed (and synced) before the reply."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifelong.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    task INTEGER NOT NULL,
    label INTEGER NOT NULL,
    canary INTEGER NOT NULL,
    data BLOB NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_canary ON samples (canary, pos);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class Sample:
    pos: int
    task: int
    label: int
    row: np.ndarray


class Journal:
    """Append-only samples with increasing positions; every Nth sample of a (task, label) is a canary."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str, canary_every: int, canary_cap: int):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.canary_every, self.canary_cap = canary_every, canary_cap
        self.lock = threading.Lock()  # the writer's
        self.read_lock = threading.Lock()
        self.db = self._connect()
        self.reader = self._connect()
        self._check_layout()
        rows = self.db.execute("SELECT task, label, COUNT(*), SUM(canary) FROM samples GROUP BY task, label")
        self.counts = {(t, y): (n, c) for t, y, n, c in rows}  # (task, label) → (accepted, canaries)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before /learn replies
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise UserError(f"the journal '{self.path}' cannot be opened ({err}); move it away to start a new one") from None
        return db

    def _check_layout(self) -> None:
        layout = f"{self.dtype.str} {list(self.shape)}"
        found = self.db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        if found is None:
            self.db.execute("INSERT INTO meta VALUES ('layout', ?)", (layout,))
        elif found[0] != layout:
            raise UserError(f"the journal '{self.path}' holds rows {found[0]}, not this model's {layout}")
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('id', ?)", (uuid.uuid4().hex,))
        self.id: str = self.db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()[0]  # which journal

    def append(self, tasks: list[int], labels: list[int], rows: np.ndarray) -> list[int]:
        """Commit the samples in one transaction; returns their positions (after the commit is synced)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        with self.lock:
            counts = dict(self.counts)
            records = []
            for task, label, row in zip(tasks, labels, rows):
                seen, canaries = counts.get((task, label), (0, 0))
                canary = int((seen + 1) % self.canary_every == 0 and canaries < self.canary_cap)
                counts[(task, label)] = (seen + 1, canaries + canary)
                records.append((task, label, canary, row.tobytes(), time.time()))
            try:
                self.db.execute("BEGIN IMMEDIATE")
                positions = [self.db.execute("INSERT INTO samples (task, label, canary, data, received) VALUES "
                                             "(?, ?, ?, ?, ?)", record).lastrowid for record in records]
                self.db.execute("COMMIT")
            except sqlite3.Error as err:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise OSError(f"the journal cannot store samples ({err})") from None
            self.counts = counts
        return positions

    def _samples(self, query: str, args: tuple) -> list[Sample]:
        with self.read_lock:
            found = self.reader.execute(query, args).fetchall()
        return [Sample(p, t, y, np.frombuffer(d, self.dtype).reshape(self.shape)) for p, t, y, d in found]

    def pending(self, after: int, limit: int) -> list[Sample]:
        """Training samples after position ``after``, oldest first."""
        return self._samples("SELECT pos, task, label, data FROM samples WHERE pos > ? AND canary = 0 ORDER BY pos "
                             "LIMIT ?", (after, limit))

    def canaries(self, after: int) -> list[Sample]:
        """Canary samples after position ``after``."""
        return self._samples("SELECT pos, task, label, data FROM samples WHERE canary = 1 AND pos > ? ORDER BY pos",
                             (after,))

    def task_rows(self, task: int, upto: int) -> tuple[np.ndarray, list[int]]:
        """Rows and labels of task ``task``'s training samples up to position ``upto`` (what it consolidates on)."""
        with self.read_lock:
            found = self.reader.execute("SELECT data, label FROM samples WHERE task = ? AND canary = 0 AND pos <= ? "
                                        "ORDER BY pos", (task, upto)).fetchall()
        rows = np.stack([np.frombuffer(d, self.dtype).reshape(self.shape) for d, _ in found]) if found else \
            np.zeros((0, *self.shape), self.dtype)
        return rows, [y for _, y in found]

    def count(self, after: int = 0, upto: int | None = None, canary: bool | None = None) -> int:
        """Samples with ``after < pos <= upto`` (training ones, canaries, or both)."""
        query, args = "SELECT COUNT(*) FROM samples WHERE pos > ?", [after]
        if upto is not None:
            query, args = query + " AND pos <= ?", [*args, upto]
        if canary is not None:
            query, args = query + " AND canary = ?", [*args, int(canary)]
        with self.read_lock:
            return self.reader.execute(query, args).fetchone()[0]

    def last(self) -> int:
        with self.read_lock:
            return self.reader.execute("SELECT COALESCE(MAX(pos), 0) FROM samples").fetchone()[0]

    def latest_task(self) -> int | None:
        """The highest task id accepted so far (None for an empty journal)."""
        return max((task for task, _ in self.counts), default=None)

    def close(self) -> None:
        with self.lock, self.read_lock:
            self.db.close()
            self.reader.close()
