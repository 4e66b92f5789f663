"""Telemetry payloads: JSON with ``v``, ``seq``, ``t`` and a body; encoders and strict decoders.

Encoders never raise: whatever a caller hands in (a ``Path``, a NaN battery reading, a
huge dict) becomes valid JSON within :data:`MAX_PAYLOAD_BYTES`, because a telemetry hiccup
must not reach the recorder. Decoders are the opposite: consumers read what other devices
(or anyone with broker access) wrote, so every field is checked and bounded, and anything
malformed raises :class:`PayloadError` for the caller to count and skip.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any, TypeGuard

VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest payload a publisher sends and a decoder accepts (far above a real state)."""
ONLINE = b"1"
OFFLINE = b"0"

_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_T_LEN = 40
_MAX_DEPTH = 32


class PayloadError(ValueError):
    """A received payload is not a valid ``v1`` telemetry message; the message says why."""


@dataclasses.dataclass(frozen=True)
class StateMessage:
    """A retained state (``.../state``, or a dock's ``.../bay/<n>``)."""

    seq: int
    t: datetime
    state: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class EventMessage:
    """One event (``.../event``)."""

    seq: int
    t: datetime
    kind: str
    critical: bool
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ProgressMessage:
    """The latest offload progress (``.../progress``)."""

    seq: int
    t: datetime
    progress: dict[str, Any]


# ----- encoding -------------------------------------------------------------------------


def utc_iso(t: float) -> str:
    """Format a Unix time as UTC ISO 8601 with milliseconds, e.g. ``2025-01-31T08:00:00.125Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_kind(kind: object) -> str:
    """An event kind fit for the wire: bad characters become ``_``, at most 64 characters."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", str(kind))[:64]
    return text or "unknown"


def is_valid_kind(kind: object) -> TypeGuard[str]:
    """True if ``kind`` needs no changes from :func:`safe_kind`."""
    return isinstance(kind, str) and _KIND.fullmatch(kind) is not None


def plain(value: Any, depth: int = 0) -> Any:
    """Turn ``value`` into JSON-safe data: str keys, finite floats, lists, str for the rest."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN/inf are not JSON
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, enum.Enum):
        return plain(value.value, depth + 1)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [plain(v, depth + 1) for v in items]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def body_json(body: Mapping[str, Any] | None) -> str:
    """Canonical JSON of a body (sorted keys): equal text means an unchanged state."""
    return json.dumps(plain(body or {}), sort_keys=True, separators=(",", ":"))


def _envelope(seq: int, t: float, field: str, body_text: str, extra: str = "") -> bytes:
    # The body is already canonical JSON: splice it instead of parsing and dumping again.
    head = f'{{"v":{VERSION},"seq":{int(seq)},"t":"{utc_iso(t)}",{extra}"{field}":'
    out = (head + body_text + "}").encode("utf-8")
    if len(out) > MAX_PAYLOAD_BYTES:
        marker = json.dumps({"truncated": True, "bytes": len(out)}, sort_keys=True)
        out = (head + marker + "}").encode("utf-8")
    return out


def encode_state(seq: int, t: float, state_json: str) -> bytes:
    """A state payload from :func:`body_json` text: ``{"v","seq","t","state"}``."""
    return _envelope(seq, t, "state", state_json)


def encode_event(
    seq: int, t: float, kind: str, data: Mapping[str, Any] | None, *, critical: bool
) -> bytes:
    """An event payload: ``{"v","seq","t","kind","critical","data"}``."""
    extra = f'"kind":{json.dumps(safe_kind(kind))},"critical":{json.dumps(bool(critical))},'
    return _envelope(seq, t, "data", body_json(data), extra)


def encode_progress(seq: int, t: float, progress_json: str) -> bytes:
    """A progress payload from :func:`body_json` text: ``{"v","seq","t","progress"}``."""
    return _envelope(seq, t, "progress", progress_json)


# ----- decoding -------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and break other readers.
    raise PayloadError(f"payload holds {name}, which is not JSON")


def _load(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise PayloadError(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        doc = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise PayloadError("payload nests too deeply") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"payload must be a JSON object, not {type(doc).__name__}")
    version = doc.get("v")
    if type(version) is not int:
        raise PayloadError("payload has no integer 'v' (protocol version)")
    if version != VERSION:
        raise PayloadError(f"payload version {version} is not supported (expected {VERSION})")
    return doc


def _seq(doc: Mapping[str, Any]) -> int:
    seq = doc.get("seq")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise PayloadError("'seq' must be a non-negative integer")
    return seq


def _time(doc: Mapping[str, Any]) -> datetime:
    text = doc.get("t")
    if not isinstance(text, str) or len(text) > _MAX_T_LEN:
        raise PayloadError("'t' must be an ISO 8601 time string")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(f"'t' is not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise PayloadError(f"'t' must carry a UTC offset: {text!r}")
    return t.astimezone(UTC)


def _object(doc: Mapping[str, Any], field: str) -> dict[str, Any]:
    value = doc.get(field)
    if not isinstance(value, dict):
        raise PayloadError(f"'{field}' must be a JSON object")
    return value


def decode_state(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> StateMessage:
    """Decode a state (or bay) payload; :class:`PayloadError` if it is malformed."""
    doc = _load(payload, max_bytes)
    return StateMessage(_seq(doc), _time(doc), _object(doc, "state"))


def decode_event(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> EventMessage:
    """Decode an event payload; :class:`PayloadError` if it is malformed."""
    doc = _load(payload, max_bytes)
    kind = doc.get("kind")
    if not is_valid_kind(kind):
        raise PayloadError("'kind' must be 1-64 characters from A-Z a-z 0-9 . _ -")
    critical = doc.get("critical")
    if not isinstance(critical, bool):
        raise PayloadError("'critical' must be true or false")
    return EventMessage(_seq(doc), _time(doc), kind, critical, _object(doc, "data"))


def decode_progress(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> ProgressMessage:
    """Decode a progress payload; :class:`PayloadError` if it is malformed."""
    doc = _load(payload, max_bytes)
    return ProgressMessage(_seq(doc), _time(doc), _object(doc, "progress"))


def decode_online(payload: bytes) -> bool:
    """``b"1"`` is online, ``b"0"`` offline; anything else raises :class:`PayloadError`."""
    if payload == ONLINE:
        return True
    if payload == OFFLINE:
        return False
    raise PayloadError(f"online must be b'1' or b'0', not {bytes(payload[:16])!r}")


def decode(channel: str, payload: bytes) -> StateMessage | EventMessage | ProgressMessage | bool:
    """Decode by channel (``TopicInfo.channel``): state/bay, event, progress or online."""
    if channel in ("state", "bay"):
        return decode_state(payload)
    if channel == "event":
        return decode_event(payload)
    if channel == "progress":
        return decode_progress(payload)
    if channel == "online":
        return decode_online(payload)
    raise PayloadError(f"unknown channel {channel!r}")
