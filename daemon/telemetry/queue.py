"""A bounded FIFO of events waiting for the broker, optionally kept across restarts.

Every call returns at once and never raises: the daemon calls ``put`` from the event loop
while recording. With a path, a sqlite file mirrors the queue (written off the loop, see
:mod:`.store`); with ``path=None`` it lives in memory only, which is what the fleet
simulator wants for thousands of cameras in one process.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from itertools import islice
from pathlib import Path

from bodycam.daemon.telemetry.store import QueuedEvent, QueueStore, open_store

__all__ = ["EventQueue", "QueuedEvent"]

log = logging.getLogger(__name__)

SEQ_BLOCK = 1000
"""Sequence numbers are promised to the file this many at a time, not one write each."""


class EventQueue:
    """Events in FIFO order; when full the oldest non-critical one gives way first.

    An event stays queued until :meth:`remove` is called for it, which the publisher does
    only once the broker acknowledged it (QoS 1 PUBACK). Sequence numbers come from here
    too (:meth:`next_seq`), so they keep increasing across restarts when a file is used.

    Not thread-safe: call it from one thread (the event loop's).
    """

    def __init__(self, path: Path | None = None, max_events: int = 10_000) -> None:
        """Open the queue; a damaged or unusable file is logged, counted and replaced."""
        self._max = max(1, int(max_events))
        self._events: dict[int, QueuedEvent] = {}  # insertion order == seq order
        self._noncritical: deque[int] = deque()  # seqs, oldest first; may hold removed ones
        self._dropped: Counter[str] = Counter()
        self._warned_full = False
        self._store: QueueStore | None = None
        self._open_failures = 0
        self._next_seq = 1
        self._reserved = 0
        if path is not None:
            self._store, events, self._next_seq, self._open_failures = open_store(path)
            for event in events:
                self._admit(event)
            # The next allocation writes a new reservation before its number is used.
            self._reserved = self._next_seq

    # ----- state --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._events)

    @property
    def max_events(self) -> int:
        """The bound: at most this many events are held."""
        return self._max

    @property
    def persistent(self) -> bool:
        """True while a file mirrors the queue (False for memory-only or after a failure)."""
        return self._store is not None and not self._store.failed

    @property
    def storage_failures(self) -> int:
        """How often the file could not be opened or written (each logged once)."""
        return self._open_failures + (self._store.failures if self._store else 0)

    @property
    def dropped(self) -> Mapping[str, int]:
        """Events dropped because the queue was full, by kind."""
        return dict(self._dropped)

    # ----- use ----------------------------------------------------------------------------

    def next_seq(self) -> int:
        """Allocate the next sequence number of this publisher (for any message type)."""
        seq = self._next_seq
        self._next_seq += 1
        if self._store is not None and seq >= self._reserved:
            self._reserved = seq + SEQ_BLOCK
            self._store.reserve(self._reserved)
        return seq

    def put(self, kind: str, build: Callable[[int], bytes], *, critical: bool = True) -> int:
        """Queue an event whose payload ``build(seq)`` makes; return its sequence number.

        When the queue is full, the oldest non-critical event is dropped (possibly this
        new one, if every queued event is critical); only when all are critical does the
        oldest critical one go. Drops are counted by kind.
        """
        seq = self.next_seq()
        event = QueuedEvent(seq, kind, critical, build(seq))
        if len(self._events) >= self._max and not self._make_room(event):
            self._count_drop(event)
            return seq
        self._admit(event)
        if self._store is not None:
            self._store.insert(event)
        return seq

    def head(self, limit: int) -> list[QueuedEvent]:
        """The oldest ``limit`` events, oldest first (they stay queued)."""
        return list(islice(self._events.values(), max(0, limit)))

    def remove(self, seq: int) -> bool:
        """Forget event ``seq`` (the broker has it); False if it was not queued."""
        if self._events.pop(seq, None) is None:
            return False
        nc = self._noncritical
        while nc and nc[0] not in self._events:
            nc.popleft()  # delivery is FIFO, so stale entries collect at the left
        if self._store is not None:
            self._store.delete(seq)
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (blocking) until the file has every change so far; True when it has."""
        if self._store is None or self._store.failed:
            return True
        return self._store.flush(timeout)

    def close(self) -> None:
        """Write what is pending and close the file; the memory queue stays usable."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # ----- inside -------------------------------------------------------------------------

    def _admit(self, event: QueuedEvent) -> None:
        while len(self._events) >= self._max:  # a file from a larger configured bound
            victim = self._oldest_noncritical() or next(iter(self._events.values()))
            self._drop(victim)
        self._events[event.seq] = event
        if not event.critical:
            self._noncritical.append(event.seq)

    def _make_room(self, incoming: QueuedEvent) -> bool:
        """Drop one queued event for ``incoming``; False if ``incoming`` is the one to go."""
        victim = self._oldest_noncritical()
        if victim is None:
            if not incoming.critical:
                return False
            victim = next(iter(self._events.values()))
        self._drop(victim)
        return True

    def _oldest_noncritical(self) -> QueuedEvent | None:
        nc = self._noncritical
        while nc:
            event = self._events.get(nc[0])
            if event is not None:
                return event
            nc.popleft()
        return None

    def _drop(self, event: QueuedEvent) -> None:
        del self._events[event.seq]
        if self._store is not None:
            self._store.delete(event.seq)
        self._count_drop(event)

    def _count_drop(self, event: QueuedEvent) -> None:
        self._dropped[event.kind] += 1
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "telemetry queue full (%d events): dropping the oldest non-critical events "
                "first; drops are counted by kind",
                self._max,
            )
