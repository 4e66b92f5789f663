"""The event queue's copy on disk: sqlite in WAL mode, written by one worker thread.

Why a thread: the recorder keeps the card busy, and Linux may hold back any writer of a
busy filesystem (dirty-page throttling) for tens of milliseconds, so no sqlite write runs
on the event loop. While the process runs, the in-memory queue is the truth; the worker
applies the same inserts and deletes to the file, in order, batching whatever piled up
into one transaction. The file only matters at the next start.

Why ``synchronous=NORMAL``: in WAL mode a commit then survives a process crash and the
file stays consistent through a power cut (only the last commits may be lost). Telemetry
is a report, not the evidence record, so no per-event ``fsync`` on a card that records.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    critical INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_DAMAGED = ("file is not a database", "malformed", "corrupt")


@dataclass(frozen=True)
class QueuedEvent:
    """One event waiting for the broker's acknowledgement; ``payload`` is ready to send."""

    seq: int
    kind: str
    critical: bool
    payload: bytes


class StoreError(Exception):
    """The file cannot be used; ``damaged`` says whether its content is at fault."""

    def __init__(self, message: str, *, damaged: bool) -> None:
        super().__init__(message)
        self.damaged = damaged


_Op = tuple[str, object]


class QueueStore:
    """One sqlite file holding the queued events and the sequence-number reservation."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the file and check it; ``StoreError`` if it cannot serve."""
        self.path = path
        self.failed = False
        self.failures = 0
        self._ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The worker thread takes the connection over once this constructor is done.
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path}: {exc}", damaged=False) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            check = self._db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {check[:3]}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._db.close()
            damaged = any(word in str(exc).lower() for word in _DAMAGED)
            raise StoreError(f"cannot use {path}: {exc}", damaged=damaged) from exc

    def load(self) -> tuple[list[QueuedEvent], int]:
        """Return the stored events, oldest first, and the first unused sequence number."""
        try:
            rows = self._db.execute(
                "SELECT seq, kind, critical, payload FROM events ORDER BY seq"
            ).fetchall()
            meta = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._db.close()
            damaged = any(word in str(exc).lower() for word in _DAMAGED)
            raise StoreError(f"cannot read {self.path}: {exc}", damaged=damaged) from exc
        events = [QueuedEvent(int(s), str(k), bool(c), bytes(p)) for s, k, c, p in rows]
        next_seq = max([1, int(meta[0]) if meta else 1] + [e.seq + 1 for e in events])
        return events, next_seq

    # ----- writes: queued here, applied in order by the worker ----------------------------

    def insert(self, event: QueuedEvent) -> None:
        """Store ``event`` (returns at once)."""
        self._submit(("insert", event))

    def delete(self, seq: int) -> None:
        """Forget event ``seq`` (returns at once)."""
        self._submit(("delete", seq))

    def reserve(self, next_seq: int) -> None:
        """Promise that no sequence number below ``next_seq`` is used after a restart."""
        self._submit(("reserve", next_seq))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write submitted so far is committed (or given up); True if done."""
        done = threading.Event()
        self._submit(("flush", done))
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending, stop the worker and close the file."""
        if self._thread is None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            return
        self._ops.put(("stop", None))
        self._thread.join(timeout)

    def _submit(self, op: _Op) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"telemetry-queue:{self.path.name}", daemon=True
            )
            self._thread.start()
        self._ops.put(op)

    def _work(self) -> None:
        stop = False
        while not stop:
            batch = [self._ops.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self._ops.get_nowait())
            if not self.failed:
                self._apply(batch)
            for name, arg in batch:
                if name == "flush" and isinstance(arg, threading.Event):
                    arg.set()
                stop = stop or name == "stop"
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def _apply(self, batch: list[_Op]) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            for name, arg in batch:
                if name == "insert" and isinstance(arg, QueuedEvent):
                    db.execute(
                        "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)",
                        (arg.seq, arg.kind, int(arg.critical), arg.payload),
                    )
                elif name == "delete":
                    db.execute("DELETE FROM events WHERE seq = ?", (arg,))
                elif name == "reserve":
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (arg,))
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            # A full card or a file damaged under us: memory stays the truth for this run.
            # The file keeps what it had: replays at the next start are exact duplicates
            # (same seq and t), which consumers drop, and nothing queued there is lost.
            self.failed = True
            self.failures += 1
            log.warning(
                "telemetry queue: cannot write %s (%s); queued events stay in memory only "
                "until restart",
                self.path,
                exc,
            )
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                db.close()


def open_store(path: Path) -> tuple[QueueStore | None, list[QueuedEvent], int, int]:
    """Open ``path`` for a queue: ``(store or None, stored events, next seq, failures)``.

    A damaged file is moved aside to ``<name>.damaged`` (kept for inspection) and a fresh
    one started, so one bad file does not cost persistence for the rest of the camera's
    life. If even that fails (read-only or full card), the queue runs in memory (None).
    """
    failures = 0
    for attempt in range(2):
        try:
            store = QueueStore(path)
            events, next_seq = store.load()
        except StoreError as exc:
            failures += 1
            if exc.damaged and attempt == 0:
                log.warning("telemetry queue: %s; moved aside, starting a new file", exc)
                if _move_aside(path):
                    continue
            log.warning("telemetry queue: %s; queued events are kept in memory only", exc)
            return None, [], 1, failures
        return store, events, next_seq, failures
    return None, [], 1, failures


def _move_aside(path: Path) -> bool:
    try:
        path.replace(path.with_name(path.name + ".damaged"))
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("telemetry queue: cannot move %s aside: %s", path, exc)
        return False
    return True
