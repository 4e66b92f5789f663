"""The custody log's bytes and meaning: the line format, its chain, and each clip's state.

No file access here (bytes in; entries, problems and clip states out), so the format can be
checked, and tested, apart from the durability and locking of :mod:`bodycam.dock.custody`.
``docs/dock-store.md`` is the specification.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from bodycam.daemon.evidence.schema import canonical_json

__all__ = [
    "EVENTS",
    "GENESIS",
    "MAX_LINE_BYTES",
    "NOT_CLIP_STATE",
    "BadLineError",
    "ClipRecord",
    "CustodyEntry",
    "LogScan",
    "decode_line",
    "encode_head",
    "entry_hash",
    "head_problems",
    "parse_head",
    "replay",
    "scan_lines",
]

EVENTS: Final = (
    "received",
    "verified",
    "rejected",
    "committed",
    "flagged",
    "unflagged",
    "exported",
    "deleted",
    "clip_id_conflict",
    "clock",
    "refused",
)
# Events that never change what the store holds (and, but for the conflict, name no stored clip).
NOT_CLIP_STATE: Final = frozenset({"rejected", "clip_id_conflict", "clock", "refused"})
GENESIS: Final = "0" * 64
MAX_LINE_BYTES: Final = 64 * 1024
FIELDS: Final = ("seq", "utc", "event", "clip_id", "device_id", "detail", "prev", "hash")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_UTC: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def entry_hash(body: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of an entry without its ``hash`` field."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class CustodyEntry:
    """One custody event, exactly as it is stored."""

    seq: int
    utc: str
    event: str
    clip_id: str
    device_id: str
    detail: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field but ``hash``: what the hash is computed over."""
        return {
            "seq": self.seq,
            "utc": self.utc,
            "event": self.event,
            "clip_id": self.clip_id,
            "device_id": self.device_id,
            "detail": self.detail,
            "prev": self.prev,
        }

    def line(self) -> bytes:
        """The stored line, newline included."""
        return canonical_json({**self.body(), "hash": self.hash}) + b"\n"


class BadLineError(Exception):
    """A line that is not a well-formed entry (the message says why)."""


def decode_line(raw: bytes) -> CustodyEntry:
    """Parse one line (without its newline), checking form but not the chain."""
    if len(raw) > MAX_LINE_BYTES:
        raise BadLineError(f"longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise BadLineError("not valid JSON (edited or damaged?)") from None
    if not isinstance(obj, dict) or sorted(obj) != sorted(FIELDS):
        raise BadLineError(f"not a custody entry (fields must be {', '.join(FIELDS)})")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadLineError("seq is not a positive integer")
    if not isinstance(obj["utc"], str) or not _UTC.match(obj["utc"]):
        raise BadLineError("utc is not a UTC timestamp")
    if obj["event"] not in EVENTS:
        raise BadLineError(f"unknown event {obj['event']!r}")
    if not isinstance(obj["clip_id"], str) or not isinstance(obj["device_id"], str):
        raise BadLineError("clip_id and device_id must be strings")
    if not isinstance(obj["detail"], dict):
        raise BadLineError("detail is not an object")
    for name in ("prev", "hash"):
        if not isinstance(obj[name], str) or not _HEX64.match(obj[name]):
            raise BadLineError(f"{name} is not 64 hex digits")
    if canonical_json(obj) != raw:
        # Same content, other bytes (spaces, key order, escapes): the hash would not see it.
        raise BadLineError("not in canonical form (edited?)")
    return CustodyEntry(**obj)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


@dataclass
class LogScan:
    """What a read of the log found: entries that parsed, problems, and a torn tail."""

    entries: list[CustodyEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complete_bytes: int = 0  # offset just after the last complete line
    torn: bool = False  # a final fragment without its newline
    head: tuple[int, str] | None = None  # (seq, hash) from custody.head, if present


def scan_lines(
    data: bytes, name: str, *, seq: int = 1, prev: str = GENESIS, line: int = 1
) -> LogScan:
    """Check complete lines of ``data`` (which continue a chain at ``seq``/``prev``)."""
    scan = LogScan()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when data ends with a newline
    scan.torn = bool(tail)
    scan.complete_bytes = len(data) - len(tail)
    expected_seq: int | None = seq
    expected_prev: str | None = prev
    for number, raw in enumerate(lines, start=line):
        try:
            entry = decode_line(raw)
        except BadLineError as exc:
            scan.problems.append(f"{name} line {number}: {exc}")
            expected_seq = expected_prev = None  # go on checking the lines after it
            continue
        why: list[str] = []
        if expected_seq is not None and entry.seq != expected_seq:
            why.append(f"seq {entry.seq}, expected {expected_seq} (lines deleted or reordered?)")
        if expected_prev is not None and entry.prev != expected_prev:
            before = "64 zeros for the first entry" if number == 1 else f"line {number - 1}"
            why.append(f"prev does not match {before} (lines deleted, added or reordered?)")
        if entry_hash(entry.body()) != entry.hash:
            why.append("hash does not match the line's content (edited?)")
        if why:
            scan.problems.append(f"{name} line {number}: {'; '.join(why)}")
        expected_seq, expected_prev = entry.seq + 1, entry.hash
        scan.entries.append(entry)
    return scan


def head_problems(scan: LogScan, name: str, head_name: str) -> list[str]:
    """Disagreements between the log and the head file (truncation, rewriting)."""
    if scan.head is None:
        if scan.entries:
            return [f"{head_name} is missing: a truncated {name} would go unnoticed"]
        return []
    seq, head = scan.head
    count = len(scan.entries)
    if seq > count:
        cut = "is cut short" if scan.torn else "and after it are missing"
        return [
            f"{name} line {count + 1} {cut}: {head_name} records {seq} entries, the file "
            f"holds {count} (truncated or lines deleted?)"
        ]
    if seq > 0 and scan.entries[seq - 1].hash != head:
        return [f"{name} line {seq}: hash differs from the one in {head_name} (rewritten?)"]
    return []


def encode_head(seq: int, head: str) -> bytes:
    """The bytes of ``custody.head``: canonical JSON of the last seq and hash, and a newline."""
    return canonical_json({"seq": seq, "hash": head}) + b"\n"


def parse_head(data: bytes) -> tuple[int, str]:
    """``(seq, hash)`` from the bytes of ``custody.head``.

    Raises:
        ValueError: Not a head record.
    """
    obj = json.loads(data.decode("utf-8"))
    if (
        not isinstance(obj, dict)
        or sorted(obj) != ["hash", "seq"]
        or not isinstance(obj["seq"], int)
        or isinstance(obj["seq"], bool)
        or obj["seq"] < 0
        or not isinstance(obj["hash"], str)
        or not _HEX64.match(obj["hash"])
    ):
        raise ValueError("not a custody head record")
    return obj["seq"], obj["hash"]


@dataclass
class ClipRecord:
    """What the custody log says about one clip (see "Events" in docs/dock-store.md)."""

    clip_id: str
    device_id: str
    name: str | None = None
    verified_utc: str | None = None
    order: int = 0
    stored: bool = False
    committed: bool = False
    flagged: bool = False
    flag_reason: str | None = None
    exported: int = 0


def replay(entries: list[CustodyEntry]) -> dict[tuple[str, str], ClipRecord]:
    """Every clip's state after ``entries``, by ``(device_id, clip_id)``.

    A clip is identified by both: two cameras listing one clip id (one of them forging) are
    two records, each stored, committed and deleted on its own.
    """
    records: dict[tuple[str, str], ClipRecord] = {}
    for entry in entries:
        if entry.event in NOT_CLIP_STATE or not entry.clip_id:
            continue  # quarantine, refusals, conflicts and clock notes never change a clip
        key = (entry.device_id, entry.clip_id)
        rec = records.setdefault(key, ClipRecord(entry.clip_id, entry.device_id))
        if entry.event == "received":
            name = entry.detail.get("name")
            rec.name = name if isinstance(name, str) else None
        elif entry.event == "verified":
            rec.stored, rec.verified_utc, rec.order = True, entry.utc, entry.seq
        elif entry.event == "committed":
            rec.committed = True
        elif entry.event in ("flagged", "unflagged"):
            rec.flagged = entry.event == "flagged"
            reason = entry.detail.get("reason")
            rec.flag_reason = str(reason) if rec.flagged else None
        elif entry.event == "exported":
            rec.exported += 1
        elif entry.event == "deleted":
            rec.stored = False
    return records
