"""The JSON vocabulary of the store: journal events, the manifest, canonical encoding.

One set of models serves writing and reading, so what the writer puts on disk is exactly what
recovery and verify accept. Parsing is strict (no coercion, no unknown keys) because these
files are evidence: a field of the wrong type is damage, not something to guess around.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from bodycam.daemon.evidence.errors import EvidenceError

MANIFEST_FORMAT_VERSION: Final = 1
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
UNKNOWN_TIMESTAMP: Final = 0  # never a real sensor timestamp: the monotonic domain starts later

ClipIdHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=4096)]
UtcText = Annotated[
    str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
]
SegmentName = Annotated[str, StringConstraints(pattern=r"^seg-\d{6}\.bcs$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
U63 = Annotated[int, Field(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, Field(allow_inf_nan=False)]
# A dock id as its certificate carries it (at most 64 UTF-8 bytes, so at most 64 characters).
MAX_DOCK_ID_CHARS: Final = 64
DockId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCK_ID_CHARS)]
ClockStatusText = Literal["unset", "provisional", "confirmed"]


def format_utc(when: dt.datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``, e.g. ``2026-11-22T10:15:00.000000Z``.

    Raises:
        ValueError: ``when`` is naive; footage times must never be guessed into a zone.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> dt.datetime:
    """Inverse of :func:`format_utc`."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def canonical_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, no insignificant whitespace, UTF-8, no NaN."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VideoInfo(_Model):
    codec: Literal["h264"] = "h264"
    container: Literal["mpegts"] = "mpegts"
    width: Annotated[int, Field(gt=0, le=16384)]
    height: Annotated[int, Field(gt=0, le=16384)]
    fps: Annotated[int, Field(gt=0, le=1000)]
    bitrate: Annotated[int, Field(gt=0)]
    gop: Annotated[int, Field(gt=0)]


class EncryptionInfo(_Model):
    aead: Literal["AES-256-GCM"] = "AES-256-GCM"
    kdf: Literal["HKDF-SHA256"] = "HKDF-SHA256"
    key_agreement: Literal["X25519"] = "X25519"
    segment_key_info: Literal["bodycam/v1/segment-key"] = "bodycam/v1/segment-key"
    wrap_key_info: Literal["bodycam/v1/clip-key-wrap"] = "bodycam/v1/clip-key-wrap"
    ephemeral_public_key: Base64
    wrapped_key: Base64
    force_key_fingerprint: Fingerprint


class IntegrityInfo(_Model):
    segment_hash: Literal["SHA-256"] = "SHA-256"
    chain: Literal["bodycam-chain-v1"] = "bodycam-chain-v1"
    signature: Literal["Ed25519"] = "Ed25519"


@dataclass(frozen=True)
class SealedSegment:
    """A segment as sealed: what the journal's ``seal`` line and the manifest record."""

    index: int
    name: str
    sha256: str
    chain: str
    size: int
    records: int
    first_timestamp_us: int
    last_timestamp_us: int
    frames: int
    recovered: bool


class SegmentEntry(_Model):
    index: U32
    name: SegmentName
    sha256: Sha256Hex
    chain: Sha256Hex
    size: U63
    records: U32
    first_timestamp_us: U63
    last_timestamp_us: U63
    frames: U32
    recovered: bool

    @classmethod
    def of(cls, segment: SealedSegment) -> SegmentEntry:
        return cls(**asdict(segment))

    def sealed(self) -> SealedSegment:
        return SealedSegment(**self.model_dump(exclude={"event"}))


class ClockSource(_Model):
    """Who set the clock that a clip's UTC times rest on (docs/evidence-format.md).

    Optional in the ``open`` line and the manifest (clips written before it existed lack it);
    omitted from the JSON when absent, so those files keep their exact bytes.
    """

    status: ClockStatusText
    # Provisional: the dock that set the clock; confirmed: the dock whose time was confirmed.
    set_by: DockId | None
    confirmed_by: DockId | None  # the other dock that agreed with it; only when confirmed
    corrected_by: DockId | None  # the dock whose TIME_SET was applied last
    offset_s: Seconds | None  # that last correction: new time minus the clock's old time
    corrections: U32  # TIME_SETs applied since the daemon started

    @model_validator(mode="after")
    def _consistent(self) -> ClockSource:
        named = (self.set_by, self.confirmed_by, self.corrected_by, self.offset_s)
        if self.status == "unset" and named != (None, None, None, None):
            raise ValueError("an unset clock names no dock and no correction")
        if self.status != "confirmed" and self.confirmed_by is not None:
            raise ValueError(f"confirmed_by given for a {self.status} clock")
        return self


def _is_none(value: object) -> bool:
    return value is None


def _clock_agrees(clock_set: bool, source: ClockSource | None) -> None:
    if source is not None and clock_set != (source.status != "unset"):
        shown = "true" if clock_set else "false"
        raise ValueError(f"clock_set is {shown} but clock_source.status is {source.status}")


class OpenEvent(_Model):
    """First journal line: everything known when the clip starts."""

    event: Literal["open"] = "open"
    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    segment_format_version: Literal[1] = 1
    clip_id: ClipIdHex
    device_id: ShortText
    officer_id: ShortText
    firmware_version: ShortText
    started_utc: UtcText
    clock_set: bool
    clock_offset_s: Seconds | None
    pre_event_s: Seconds
    trigger: ShortText
    video: VideoInfo
    encryption: EncryptionInfo
    continues: ClipIdHex | None
    continues_chain_head: Sha256Hex | None
    device_public_key: Base64
    clock_source: ClockSource | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="after")
    def _clock_consistent(self) -> OpenEvent:
        _clock_agrees(self.clock_set, self.clock_source)
        return self


class SealEvent(SegmentEntry):
    """One journal line per sealed segment."""

    event: Literal["seal"] = "seal"


class CloseEvent(_Model):
    """Last journal line: how the clip ended (written by close, or by recovery)."""

    event: Literal["close"] = "close"
    ended_utc: UtcText
    ended_utc_estimated: bool
    end_reason: ShortText
    trigger_timestamp_us: U63 | None
    pre_event_actual_s: Seconds | None
    continued_by: ClipIdHex | None
    recovered_utc: UtcText | None


JournalEvent = Annotated[OpenEvent | SealEvent | CloseEvent, Field(discriminator="event")]
_EVENT_ADAPTER: TypeAdapter[OpenEvent | SealEvent | CloseEvent] = TypeAdapter(JournalEvent)


def parse_event(line: bytes) -> OpenEvent | SealEvent | CloseEvent:
    """Parse one journal line (without its newline).

    Raises:
        ValueError: Not JSON, or not a valid event (pydantic's ValidationError is one).
    """
    return _EVENT_ADAPTER.validate_json(line, strict=True)


class Manifest(_Model):
    """The signed summary of a finished clip."""

    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    clip_id: ClipIdHex
    device_id: ShortText
    officer_id: ShortText
    firmware_version: ShortText
    started_utc: UtcText
    ended_utc: UtcText
    ended_utc_estimated: bool
    clock_set: bool
    clock_offset_s: Seconds | None
    pre_event_s: Seconds
    pre_event_actual_s: Seconds | None
    trigger: ShortText
    trigger_timestamp_us: U63 | None
    end_reason: ShortText
    video: VideoInfo
    encryption: EncryptionInfo
    integrity: IntegrityInfo
    continues: ClipIdHex | None
    continues_chain_head: Sha256Hex | None
    continued_by: ClipIdHex | None
    recovered: bool
    recovered_utc: UtcText | None
    segments: list[SegmentEntry]
    total_bytes: U63
    chain_head: Sha256Hex
    device_public_key: Base64
    device_key_fingerprint: Fingerprint
    clock_source: ClockSource | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="after")
    def _clock_consistent(self) -> Manifest:
        _clock_agrees(self.clock_set, self.clock_source)
        return self

    def encode(self) -> bytes:
        """The canonical bytes that are signed and stored as ``manifest.json``."""
        return canonical_json(self.model_dump(mode="json"))


def parse_manifest(data: bytes, *, source: str) -> Manifest:
    """Parse manifest bytes strictly.

    Raises:
        EvidenceError: Not JSON or not a well-formed manifest; names the first bad field.
    """
    try:
        return Manifest.model_validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise EvidenceError(f"{source}: malformed manifest: {where}: {first['msg']}") from None
