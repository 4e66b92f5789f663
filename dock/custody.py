"""The dock's custody log: every step a clip takes at the dock, as an append-only hash chain.

One line per event, canonical JSON, each line carrying the SHA-256 of its own content and the
hash of the line before it, so an edited, deleted, inserted or reordered line is found and
named. The file is only ever appended to (one ``write`` on an ``O_APPEND`` descriptor, then
``fsync``); the one exception is a final line torn by a power cut, which is cut off.

A line cut short looks the same whether a power cut tore it or someone truncated the file, so
the last entry's ``seq`` and hash are also kept in ``custody.head`` (replaced atomically after
each append). A log that ends before the entry the head file records was truncated, not torn.
``docs/dock-store.md`` specifies the bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from bodycam.daemon.evidence.fsio import fsync_dir, write_file_durably
from bodycam.daemon.evidence.schema import canonical_json, format_utc
from bodycam.dock.custody_format import (
    EVENTS,
    GENESIS,
    BadLineError,
    CustodyEntry,
    LogScan,
    decode_line,
    encode_head,
    entry_hash,
    head_problems,
    parse_head,
    scan_lines,
)

_log = logging.getLogger(__name__)

# CustodyEntry, LogScan and GENESIS are re-exported: callers need only this module.
__all__ = ["GENESIS", "CustodyEntry", "CustodyLog", "LogScan", "scan_log"]


def _fail(message: str) -> NoReturn:
    # store.py defines StoreError and imports this module, so it is fetched when needed.
    from bodycam.dock.store import StoreError

    raise StoreError(message)


def _read_anchor(path: Path) -> tuple[int, str] | None:
    try:
        return parse_head(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        _fail(f"{path}: unreadable, or not a custody head record")


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return _pread(fd, 0, size)


def _pread(fd: int, offset: int, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 20), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def head_path_of(path: Path) -> Path:
    """Where the head record of the log at ``path`` lives (``custody.head``)."""
    return path.with_suffix(".head")


def scan_log(path: Path) -> LogScan:
    """Read and check the whole log from disk without changing anything (for audits).

    Raises:
        StoreError: The log cannot be read, or the head file is malformed.
    """
    anchor = _read_anchor(head_path_of(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
        if anchor is not None and anchor[0] > 0:
            scan = LogScan(head=anchor)
            scan.problems.append(f"{path.name} is missing but its head file records entries")
            return scan
    except OSError as exc:
        _fail(f"{path}: cannot read the custody log: {exc.strerror}")
    scan = scan_lines(data, path.name)
    scan.head = anchor
    scan.problems += head_problems(scan, path.name, head_path_of(path).name)
    return scan


class CustodyLog:
    """The append-only, hash-chained custody log (safe across threads and processes).

    Every operation takes an ``flock`` on the file, so dock bays in other processes can share
    one log; entries they append are read and checked before the next append here.
    """

    EVENTS: ClassVar[tuple[str, ...]] = EVENTS

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open the log at ``path`` (absent means empty) and check its whole chain.

        A torn final line (a power cut during an append) is dropped with a warning and the
        file cut back durably, and a head record one entry behind is brought up to date.

        Args:
            path: The log file.
            read_only: Only read: repair nothing, write nothing, append nothing. What a
                reader who is not the store's owner (an operator's ``store list``) uses, so
                that reading never leaves a file the dock agent's user cannot write.

        Raises:
            StoreError: Any other damage; the message names the first bad line.
        """
        self.path = path
        self.head_path = head_path_of(path)
        self.read_only = read_only
        self._mutex = threading.Lock()
        self._entries: list[CustodyEntry] = []
        self._offset = 0  # bytes of complete, checked lines
        self._ident: tuple[int, int] | None = None
        how = fcntl.LOCK_SH if read_only else fcntl.LOCK_EX
        with self._mutex, self._locked(how, create=False) as fd:
            if fd is None:
                anchor = _read_anchor(self.head_path)
                if anchor is not None and anchor[0] > 0:
                    _fail(f"{path}: missing, but {self.head_path.name} records {anchor[0]} entries")
                return
            self._reload(fd, repair=not read_only)

    @contextlib.contextmanager
    def _locked(self, how: int, *, create: bool) -> Iterator[int | None]:
        """An open descriptor of the log holding an flock (None if absent and not created)."""
        flags = os.O_RDONLY if self.read_only else os.O_RDWR | os.O_APPEND
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            if not create:
                yield None
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                _fail(f"{self.path}: cannot create the custody log: {exc.strerror}")
            fsync_dir(self.path.parent)  # the new name must survive a power cut too
        except OSError as exc:
            _fail(f"{self.path}: cannot open the custody log: {exc.strerror}")
        try:
            fcntl.flock(fd, how)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def _reload(self, fd: int, *, repair: bool) -> bool:
        """Read and check the whole file; return whether a torn tail remains."""
        stat = os.fstat(fd)
        scan = scan_lines(_read_all(fd), self.path.name)
        scan.head = _read_anchor(self.head_path)
        problems = scan.problems + head_problems(scan, self.path.name, self.head_path.name)
        if scan.head is None and scan.entries and not scan.problems:
            _log.warning("%s: missing; it is written again at the next append", self.head_path)
            problems = []
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            _fail(f"{self.path}: custody log is broken: {problems[0]}{more}")
        known = len(self._entries)
        if known and (
            len(scan.entries) < known or scan.entries[known - 1].hash != self._entries[-1].hash
        ):
            _fail(f"{self.path}: the custody log was rewritten while open (entry {known} changed)")
        self._entries, self._offset = scan.entries, scan.complete_bytes
        self._ident = (stat.st_dev, stat.st_ino)
        if scan.torn and repair:
            self._drop_torn_tail(fd)
        if repair and scan.head is not None and len(self._entries) > scan.head[0]:
            # A power cut between an append and the head update leaves the log one ahead.
            ahead = len(self._entries) - scan.head[0]
            if ahead > 1:
                _log.warning("%s: %d entries past the head record", self.path, ahead)
            self._write_anchor()
        return scan.torn and not repair

    def _drop_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        _log.warning(
            "%s: dropping a torn final line (%d bytes; a power cut during an append)",
            self.path,
            size - self._offset,
        )
        os.ftruncate(fd, self._offset)
        os.fsync(fd)

    def _refresh(self, fd: int) -> bool:
        """Take in lines other processes appended; return whether a torn tail follows them."""
        stat = os.fstat(fd)
        if (stat.st_dev, stat.st_ino) != self._ident or stat.st_size < self._offset:
            return self._reload(fd, repair=False)
        if stat.st_size == self._offset:
            return False
        data = _pread(fd, self._offset, stat.st_size - self._offset)
        last = self._entries[-1] if self._entries else None
        scan = scan_lines(
            data,
            self.path.name,
            seq=last.seq + 1 if last else 1,
            prev=last.hash if last else GENESIS,
            line=len(self._entries) + 1,
        )
        if scan.problems:
            _fail(f"{self.path}: custody log is broken: {scan.problems[0]}")
        self._entries += scan.entries
        self._offset += scan.complete_bytes
        return scan.torn

    def _write_anchor(self) -> None:
        record = encode_head(len(self._entries), self._head())
        try:
            write_file_durably(self.head_path, record, mode=0o600, overwrite=True)
        except OSError as exc:
            # The line itself is durable; a stale head only means the log is ahead of it.
            _log.error("%s: cannot update: %s", self.head_path, exc.strerror)

    def _head(self) -> str:
        return self._entries[-1].hash if self._entries else GENESIS

    def append(
        self,
        event: str,
        *,
        clip_id: str,
        device_id: str,
        utc: dt.datetime | None = None,
        **detail: Any,
    ) -> CustodyEntry:
        """Append one event and fsync it before returning.

        Args:
            event: One of :attr:`EVENTS`.
            clip_id: The clip (32 hex digits; "" for an entry about no clip, such as
                ``clock``, or a rejected or refused transfer that named none).
            device_id: The camera it came from.
            utc: When it happened (timezone-aware); now when omitted.
            **detail: Event-specific facts; must be JSON (stored as they round-trip).

        Raises:
            ValueError: Unknown event, or the entry is not JSON or too large.
            StoreError: The log is damaged or cannot be written.
        """
        if event not in self.EVENTS:
            raise ValueError(f"unknown custody event {event!r} (known: {', '.join(self.EVENTS)})")
        if self.read_only:
            _fail(f"{self.path}: opened read-only; nothing may be appended")
        when = format_utc(utc if utc is not None else dt.datetime.now(dt.UTC))
        with self._mutex, self._locked(fcntl.LOCK_EX, create=True) as fd:
            assert fd is not None  # created above
            if self._ident is None:
                self._reload(fd, repair=True)
            elif self._refresh(fd):
                self._drop_torn_tail(fd)
            body: dict[str, Any] = {
                "seq": len(self._entries) + 1,
                "utc": when,
                "event": event,
                "clip_id": clip_id,
                "device_id": device_id,
                "detail": detail,
                "prev": self._head(),
            }
            try:
                line = canonical_json({**body, "hash": entry_hash(body)})
                # Exactly what a reader will see (tuples become lists, ...).
                entry = decode_line(line)
            except (TypeError, BadLineError) as exc:
                raise ValueError(f"not a valid custody entry: {exc}") from None
            self._write_line(fd, line + b"\n")
            self._entries.append(entry)
            self._offset += len(line) + 1
            self._write_anchor()
        _log.debug("custody %d: %s %s", entry.seq, event, clip_id)
        return entry

    def _write_line(self, fd: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            # Cut off whatever part reached the file, so the log stays whole.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._offset)
                os.fsync(fd)
            _fail(f"{self.path}: cannot append to the custody log: {exc.strerror}")

    def entries(self) -> list[CustodyEntry]:
        """Every entry, oldest first (including those other processes appended)."""
        with self._mutex, self._locked(fcntl.LOCK_SH, create=False) as fd:
            if fd is not None:
                if self._ident is None:
                    self._reload(fd, repair=False)
                else:
                    self._refresh(fd)
            return list(self._entries)

    def head(self) -> str:
        """Hash of the last entry (64 zeros when the log is empty)."""
        entries = self.entries()
        return entries[-1].hash if entries else GENESIS

    def verify(self) -> list[str]:
        """Re-read the file from disk and list every problem ([] means intact)."""
        with self._mutex, self._locked(fcntl.LOCK_SH, create=False):
            scan = scan_log(self.path)
            known = list(self._entries)
        problems = scan.problems
        on_disk = {entry.seq: entry.hash for entry in scan.entries}
        for old in known:
            if on_disk.get(old.seq, old.hash) != old.hash:
                problems.append(f"{self.path.name} line {old.seq}: changed since it was read")
                break
        if len(scan.entries) < len(known):
            problems.append(
                f"{self.path.name}: holds {len(scan.entries)} entries, {len(known)} were read"
            )
        return problems
