"""The clip journal: append-only JSON lines, each one fsynced before the writer moves on.

The journal is the camera's own record of a clip in progress (``open``, one ``seal`` per
segment, ``close``). It is not signed; the manifest built from it is. A power cut can tear
only the line being written, so a reader accepts a damaged *last* line as torn (recovery cuts
it away) and treats damage anywhere else as corruption.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ValidationError

from bodycam.daemon.evidence.chain import chain_next, chain_start
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded
from bodycam.daemon.evidence.schema import (
    CloseEvent,
    OpenEvent,
    SealEvent,
    canonical_json,
    parse_event,
)

JOURNAL_NAME: Final = "journal.jsonl"
MAX_JOURNAL_BYTES: Final = 64 * 1024 * 1024


class JournalError(EvidenceError):
    """A journal cannot be read or makes no sense; the message names the file and line."""


class JournalWriter:
    """Appends events to a journal file; each line is written whole and fsynced."""

    def __init__(self, path: Path, fd: int, length: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._length = length

    @classmethod
    def create(cls, path: Path) -> JournalWriter:
        """Create a new journal (fails if one exists)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        return cls(path, fd, 0)

    @classmethod
    def reopen(cls, path: Path, length: int) -> JournalWriter:
        """Open an existing journal for appending; ``length`` is its intact size."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        return cls(path, fd, length)

    def append(self, event: BaseModel) -> None:
        """Write one event as a line and fsync it.

        On an error the file is cut back to its last whole line before the error propagates,
        so a later append cannot land after half a line.
        """
        if self._fd is None:
            raise JournalError(f"{self.path}: journal is closed")
        line = canonical_json(event.model_dump(mode="json")) + b"\n"
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._length)
            raise
        self._length += len(line)

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class ClipJournal:
    """A journal read back and checked: its events in order, and any torn tail."""

    path: Path
    open: OpenEvent
    seals: list[SealEvent]
    close: CloseEvent | None
    intact_length: int  # bytes of whole, valid lines
    torn_bytes: int  # bytes after them (a torn last line), 0 if none

    @property
    def clip_id(self) -> bytes:
        return bytes.fromhex(self.open.clip_id)

    @property
    def chain_head(self) -> str:
        return self.seals[-1].chain if self.seals else chain_start(self.clip_id)


def read_journal(path: Path) -> ClipJournal:
    """Read and check a journal, tolerating a torn last line.

    Raises:
        JournalError: Missing, oversized, damaged before its last line, without a valid
            ``open`` line, or with events out of order or a broken chain.
    """
    try:
        data = read_bounded(path, MAX_JOURNAL_BYTES, what="journal")
    except FileNotFoundError:
        raise JournalError(f"{path}: no journal") from None
    events: list[OpenEvent | SealEvent | CloseEvent] = []
    intact = 0
    line_no = 0
    while intact < len(data):
        line_no += 1
        end = data.find(b"\n", intact)
        if end < 0:
            break  # no newline: the line being written when power went
        try:
            events.append(parse_event(data[intact:end]))
        except ValueError as exc:
            if end + 1 == len(data):
                break  # a damaged final line is a torn write, whatever its bytes say
            raise JournalError(f"{path}: line {line_no}: not a valid event: {_why(exc)}") from None
        intact = end + 1
    return _check_sequence(path, events, intact, len(data) - intact)


def _why(exc: ValueError) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_sequence(
    path: Path,
    events: list[OpenEvent | SealEvent | CloseEvent],
    intact: int,
    torn: int,
) -> ClipJournal:
    if not events or not isinstance(events[0], OpenEvent):
        state = "torn" if torn else "missing"
        raise JournalError(f"{path}: the open line is {state}; the clip cannot be recovered")
    opened = events[0]
    journal = ClipJournal(path, opened, [], None, intact, torn)
    chain = chain_start(journal.clip_id)
    for line_no, event in enumerate(events[1:], start=2):
        if journal.close is not None:
            raise JournalError(f"{path}: line {line_no}: event after close")
        if isinstance(event, OpenEvent):
            raise JournalError(f"{path}: line {line_no}: a second open line")
        if isinstance(event, CloseEvent):
            journal.close = event
            continue
        expected = len(journal.seals)
        if event.index != expected:
            raise JournalError(
                f"{path}: line {line_no}: seal of segment {event.index}, expected {expected}"
            )
        if event.name != f"seg-{event.index:06d}.bcs":
            raise JournalError(f"{path}: line {line_no}: seal names {event.name}")
        chain = chain_next(chain, event.index, event.sha256, event.size)
        if event.chain != chain:
            raise JournalError(f"{path}: line {line_no}: chain does not follow from line before")
        journal.seals.append(event)
    return journal
