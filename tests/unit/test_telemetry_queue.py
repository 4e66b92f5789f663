"""The telemetry event queue: bound, drop policy, FIFO order, persistence, damaged files."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.daemon.telemetry.queue import SEQ_BLOCK, EventQueue


def _payload(seq: int) -> bytes:
    return f"event {seq}".encode()


def _put(queue: EventQueue, kind: str, *, critical: bool = True) -> int:
    return queue.put(kind, _payload, critical=critical)


def _kinds(queue: EventQueue) -> list[str]:
    return [e.kind for e in queue.head(len(queue))]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "telemetry.sqlite"


@pytest.fixture
def opened() -> Iterator[list[EventQueue]]:
    """Queues a test opens on files; each is closed afterwards (its worker thread too)."""
    queues: list[EventQueue] = []
    yield queues
    for queue in queues:
        queue.close()


def _open(opened: list[EventQueue], path: Path, max_events: int = 100) -> EventQueue:
    queue = EventQueue(path, max_events)
    opened.append(queue)
    return queue


def test_fifo_and_removed_only_when_acknowledged() -> None:
    queue = EventQueue(None, 10)
    seqs = [_put(queue, f"k{i}") for i in range(5)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    # Looking at the head does not remove anything: only an acknowledgement does.
    assert [e.seq for e in queue.head(3)] == seqs[:3]
    assert [e.seq for e in queue.head(3)] == seqs[:3]
    assert queue.head(1)[0].payload == _payload(seqs[0])
    assert queue.remove(seqs[0])
    assert not queue.remove(seqs[0])
    assert [e.seq for e in queue.head(10)] == seqs[1:]
    assert not queue.persistent
    assert queue.storage_failures == 0


def test_full_queue_drops_oldest_noncritical_first() -> None:
    queue = EventQueue(None, 4)
    _put(queue, "clip_closed")
    _put(queue, "battery", critical=False)
    _put(queue, "docked")
    _put(queue, "signal", critical=False)
    _put(queue, "undocked")  # full: the oldest non-critical (battery) goes
    assert _kinds(queue) == ["clip_closed", "docked", "signal", "undocked"]
    _put(queue, "clip_offloaded")  # then the next non-critical (signal)
    assert _kinds(queue) == ["clip_closed", "docked", "undocked", "clip_offloaded"]
    assert queue.dropped == {"battery": 1, "signal": 1}
    assert len(queue) == queue.max_events == 4


def test_all_critical_drops_oldest_critical() -> None:
    queue = EventQueue(None, 3)
    for i in range(5):
        _put(queue, f"c{i}")
    assert _kinds(queue) == ["c2", "c3", "c4"]
    assert queue.dropped == {"c0": 1, "c1": 1}


def test_noncritical_event_into_all_critical_queue_is_the_one_dropped() -> None:
    # The oldest non-critical event is the new one itself: no critical event gives way.
    queue = EventQueue(None, 2)
    _put(queue, "a")
    _put(queue, "b")
    _put(queue, "noise", critical=False)
    assert _kinds(queue) == ["a", "b"]
    assert queue.dropped == {"noise": 1}


def test_drop_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    queue = EventQueue(None, 1)
    with caplog.at_level(logging.WARNING, logger="bodycam.daemon.telemetry"):
        for _ in range(50):
            _put(queue, "x", critical=False)
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    assert queue.dropped == {"x": 49}


def test_noncritical_bookkeeping_does_not_grow_with_delivery() -> None:
    queue = EventQueue(None, 10)
    for _ in range(1000):
        seq = _put(queue, "n", critical=False)
        queue.remove(seq)
    assert len(queue) == 0
    assert len(queue._noncritical) == 0  # delivered entries do not pile up


def test_persists_across_reopen_in_order(db: Path, opened: list[EventQueue]) -> None:
    first = EventQueue(db, 100)
    seqs = [_put(first, f"k{i}", critical=i % 2 == 0) for i in range(6)]
    first.remove(seqs[0])
    first.remove(seqs[1])
    assert first.persistent
    first.close()

    again = _open(opened, db)
    assert again.persistent
    assert [(e.seq, e.kind, e.payload) for e in again.head(10)] == [
        (s, f"k{i}", _payload(s)) for i, s in enumerate(seqs) if i >= 2
    ]
    assert [e.critical for e in again.head(10)] == [True, False, True, False]
    # Sequence numbers go on increasing across the restart.
    assert _put(again, "later") > seqs[-1]


def test_seq_survives_restart_without_events(db: Path, opened: list[EventQueue]) -> None:
    # Sequence numbers of states (no event stored) must not repeat after a restart either.
    first = EventQueue(db, 100)
    used = [first.next_seq() for _ in range(SEQ_BLOCK + 5)]
    first.close()
    again = _open(opened, db)
    assert again.next_seq() > max(used)


def test_crash_without_close_keeps_committed_events(db: Path, opened: list[EventQueue]) -> None:
    first = _open(opened, db)
    seqs = [_put(first, "k") for _ in range(3)]
    assert first.flush()
    # A second process opens the same file while the first never closed it (a crash).
    again = _open(opened, db)
    assert [e.seq for e in again.head(10)] == seqs


def test_smaller_bound_on_reopen_applies_drop_policy(db: Path, opened: list[EventQueue]) -> None:
    first = EventQueue(db, 100)
    for i in range(6):
        _put(first, f"k{i}", critical=i >= 3)
    first.close()
    again = _open(opened, db, max_events=4)
    assert _kinds(again) == ["k2", "k3", "k4", "k5"]
    assert again.dropped == {"k0": 1, "k1": 1}


def test_damaged_file_is_moved_aside_and_counted(
    db: Path, opened: list[EventQueue], caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 500)
    with caplog.at_level(logging.WARNING, logger="bodycam.daemon.telemetry"):
        queue = _open(opened, db)
    assert queue.storage_failures == 1
    assert queue.persistent  # a fresh file replaced it
    assert db.with_name(db.name + ".damaged").read_bytes().startswith(b"this is not sqlite")
    assert any("moved aside" in r.getMessage() for r in caplog.records)
    seq = _put(queue, "after")
    assert queue.head(1)[0].seq == seq


def test_truncated_database_is_handled(db: Path, opened: list[EventQueue]) -> None:
    first = EventQueue(db, 1000)
    for _ in range(200):
        _put(first, "k" * 50)
    first.close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] + b"\xff" * 100)
    queue = _open(opened, db)
    # quick_check notices the missing pages: the file is moved aside, never a raise.
    assert queue.storage_failures == 1
    assert queue.persistent
    _put(queue, "after")
    assert queue.head(1000)[-1].kind == "after"


def test_unusable_location_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    queue = EventQueue(blocker / "telemetry.sqlite", 10)
    assert not queue.persistent
    assert queue.storage_failures == 1
    seq = _put(queue, "k")
    assert queue.remove(seq)
    queue.close()


def test_full_disk_mid_run_falls_back_to_memory(
    db: Path, opened: list[EventQueue], caplog: pytest.LogCaptureFixture
) -> None:
    queue = _open(opened, db)
    _put(queue, "before")
    assert queue.flush()
    store = queue._store
    assert store is not None
    # sqlite's own "database or disk is full" path: cap the file at its current size.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.WARNING, logger="bodycam.daemon.telemetry"):
        for _ in range(20):
            queue.put("big", lambda seq: bytes(64 * 1024))
        assert queue.flush()
        for _ in range(20):
            queue.put("big", lambda seq: bytes(64 * 1024))
        assert queue.flush()
    assert not queue.persistent
    assert queue.storage_failures == 1
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    assert len(queue) == 41  # memory still holds everything
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT kind FROM events").fetchall() == [("before",)]
    check.close()
