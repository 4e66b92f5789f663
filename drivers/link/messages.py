"""Messages of the dock link: one frozen dataclass per type, each declared once with construct.

A message's ``SPEC`` is the specification of its payload; ``docs/protocol.md`` describes the
same fields in prose and its test vectors are checked against these declarations both ways.
Every size read from the wire is bounded before anything is allocated, and any payload that
does not parse exactly raises :class:`ProtocolError` (never another exception). DATA, the bulk
path, has a hand-written :mod:`struct` twin that leaves the chunk as a memoryview.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, fields
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Final

from construct import Bytes, Const, GreedyBytes, Int8ul, Int16ul, Int32ul, Int64sl, Int64ul, Struct

# Explicit re-exports (mypy --strict): ERROR messages and their users need both.
from bodycam.drivers.link.errors import ErrorCode as ErrorCode  # noqa: PLC0414
from bodycam.drivers.link.errors import ProtocolError as ProtocolError  # noqa: PLC0414
from bodycam.drivers.link.frame import (
    CHUNK_SIZE,
    FLAG_IGNORABLE,
    FRAME_VERSION,
    HEADER_SPEC,
    MAGIC,
    MAX_PAYLOAD,
)
from bodycam.drivers.link.spec import (
    BoundedArray,
    Checked,
    EnumField,
    Record,
    Str,
    StrictFlag,
    at_most,
    build,
    describe_fields,
    field_values,
    max_len,
    parse_exact,
    prefixed_bytes,
)

PROTOCOL_VERSION: Final = 1
CERT_VERSION: Final = 1
# Domain separation: a force-authority signature over a certificate can never be replayed as
# its signature over anything else.
CERT_CONTEXT: Final = b"bodycam/v1/dock-cert\x00"
FW_RESERVED: Final = range(0x0F00, 0x1000)  # FW_OFFER, FW_READ, FW_DATA, FW_STATUS (later)
MAX_LIST_ENTRIES: Final = 64
MAX_POLICY_SIZE: Final = 8192


class MsgType(IntEnum):
    """The ``type`` field of a frame (u16)."""

    HELLO = 0x0001
    ACK = 0x0002
    ERROR = 0x0003
    BYE = 0x0004
    BYE_ACK = 0x0005
    AUTH_DOCK = 0x0010
    AUTH_DEVICE = 0x0011
    TIME_SET = 0x0020
    TIME_ACK = 0x0021
    CONFIG_PUSH = 0x0022
    CONFIG_ACK = 0x0023
    LIST = 0x0030
    LIST_REPLY = 0x0031
    READ = 0x0040
    DATA = 0x0041
    COMMIT = 0x0050
    COMMIT_ACK = 0x0051
    STATUS_REQ = 0x0060
    STATUS = 0x0061


# Direction of each message; ACK goes both ways.
_M = MsgType
DOCK_TO_CAMERA: Final = frozenset((
    _M.HELLO, _M.AUTH_DOCK, _M.TIME_SET, _M.CONFIG_PUSH, _M.LIST, _M.READ, _M.COMMIT,
    _M.STATUS_REQ, _M.BYE, _M.ACK,
))  # fmt: skip
CAMERA_TO_DOCK: Final = frozenset((
    _M.HELLO, _M.AUTH_DEVICE, _M.TIME_ACK, _M.CONFIG_ACK, _M.LIST_REPLY, _M.DATA,
    _M.COMMIT_ACK, _M.STATUS, _M.BYE_ACK, _M.ERROR, _M.ACK,
))  # fmt: skip


class Role(IntEnum):
    """Which end of the link sent a HELLO."""

    DOCK = 1
    CAMERA = 2


class Capability(IntFlag):
    """Optional features a side supports; bits a side does not know are kept and ignored."""

    RESUME = 1
    TIME = 2
    CONFIG = 4
    FIRMWARE = 8


class ByeReason(IntEnum):
    """Why the dock ends the session."""

    DONE = 0
    SHUTDOWN = 1
    ERROR = 2
    UNDOCKED = 3


class FileKind(IntEnum):
    """Which file of a clip a READ or DATA is about."""

    MANIFEST = 1
    SIGNATURE = 2
    JOURNAL = 3
    SEGMENT = 4


class CommitStatus(IntEnum):
    """What the camera did with a committed clip."""

    DELETED = 1
    ALREADY_GONE = 2


@dataclass(frozen=True, slots=True)
class ClipEntry:
    """One clip as LIST_REPLY describes it: enough for the dock to plan and check its reads."""

    SPEC: ClassVar[Any] = Struct(
        "clip_id" / Bytes(16),
        "name" / Str(64),
        "started_utc_us" / Int64sl,
        "segments" / Int32ul,
        "total_bytes" / Int64ul,
        "manifest_size" / Int32ul,
        "manifest_sha256" / Bytes(32),
        "signature_size" / Int16ul,
        "journal_size" / Int32ul,
        "chain_head" / Bytes(32),
    )
    clip_id: bytes
    name: str
    started_utc_us: int
    segments: int
    total_bytes: int
    manifest_size: int
    manifest_sha256: bytes
    signature_size: int
    journal_size: int
    chain_head: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DockCertificate:
    """A dock's Ed25519 public key signed by the force authority (verified elsewhere)."""

    SPEC: ClassVar[Any] = Struct(
        "version" / Const(CERT_VERSION, Int8ul),
        "dock_id" / Str(64),
        "public_key" / Bytes(32),
        "not_before_s" / Int64sl,
        "not_after_s" / Int64sl,
        "issuer" / Bytes(8),
        "signature" / Bytes(64),
    )
    version: int = CERT_VERSION
    dock_id: str
    public_key: bytes
    not_before_s: int
    not_after_s: int
    issuer: bytes  # SHA-256 of the force authority's raw public key, first 8 bytes
    signature: bytes

    def encode(self) -> bytes:
        """The certificate's wire encoding.

        Raises:
            ValueError: A field does not fit its declaration.
        """
        return build("DockCertificate", self.SPEC, field_values(self))

    def signed_part(self) -> bytes:
        """What the force authority signs: the context, then every field before ``signature``.

        Raises:
            ValueError: A field does not fit its declaration.
        """
        # The signature is the last field and has a fixed size, so cutting it off is exact.
        return CERT_CONTEXT + self.encode()[:-64]

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> DockCertificate:
        """Parse a certificate that fills ``data`` exactly.

        Raises:
            ProtocolError: MALFORMED, naming the offending field.
        """
        obj = parse_exact("DockCertificate", cls.SPEC, data)
        return cls(**{f.name: obj[f.name] for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message: ``TYPE`` is the frame type, ``SPEC`` declares the payload."""

    TYPE: ClassVar[MsgType]
    SPEC: ClassVar[Any]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Opens a session: the dock's request and the camera's answer have the same shape."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    SPEC: ClassVar[Any] = Struct(
        "protocol_version" / Int16ul,
        "schema_hash" / Bytes(8),
        "role" / EnumField(Int8ul, Role),
        "node_id" / Str(64),
        "firmware" / Str(64),
        "capabilities" / EnumField(Int32ul, Capability),
        "max_payload" / Int32ul,
        "window" / Int16ul,
        "nonce" / Bytes(32),
    )
    protocol_version: int
    schema_hash: bytes
    role: Role
    node_id: str
    firmware: str
    capabilities: Capability
    max_payload: int
    window: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """A standalone cumulative acknowledgement: the frame's ``ack`` field is the message."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    SPEC: ClassVar[Any] = Struct()


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """The camera's answer to a request it did not carry out."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    SPEC: ClassVar[Any] = Struct(
        "code" / EnumField(Int16ul, ErrorCode), "ref_type" / Int16ul, "detail" / Str(200)
    )
    code: ErrorCode
    ref_type: int  # type of the offending message, 0 if unknown
    detail: str


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """The dock ends the session."""

    TYPE: ClassVar[MsgType] = MsgType.BYE
    SPEC: ClassVar[Any] = Struct("reason" / EnumField(Int8ul, ByeReason))
    reason: ByeReason


@dataclass(frozen=True, slots=True)
class ByeAck(Message):
    """The camera's answer to BYE."""

    TYPE: ClassVar[MsgType] = MsgType.BYE_ACK
    SPEC: ClassVar[Any] = Struct()


@dataclass(frozen=True, slots=True)
class AuthDock(Message):
    """The dock proves who it is: its certificate and a signature by its key."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH_DOCK
    SPEC: ClassVar[Any] = Struct("certificate" / Record(DockCertificate), "signature" / Bytes(64))
    certificate: DockCertificate
    signature: bytes


@dataclass(frozen=True, slots=True)
class AuthDevice(Message):
    """The camera proves who it is with its device key."""

    TYPE: ClassVar[MsgType] = MsgType.AUTH_DEVICE
    SPEC: ClassVar[Any] = Struct(
        "device_id" / Str(64), "public_key" / Bytes(32), "signature" / Bytes(64)
    )
    device_id: str
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class TimeSet(Message):
    """The dock sets the camera's clock."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_SET
    SPEC: ClassVar[Any] = Struct("utc_us" / Int64sl, "signature" / Bytes(64))
    utc_us: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class TimeAck(Message):
    """The camera's clock before a TIME_SET, and how far the TIME_SET moved it."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_ACK
    SPEC: ClassVar[Any] = Struct(
        "previous_utc_us" / Int64sl, "offset_us" / Int64sl, "was_set" / StrictFlag()
    )
    previous_utc_us: int
    offset_us: int
    was_set: bool


@dataclass(frozen=True, slots=True)
class ConfigPush(Message):
    """The dock sends a signed recording policy."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIG_PUSH
    SPEC: ClassVar[Any] = Struct(
        "policy" / prefixed_bytes(Int16ul, MAX_POLICY_SIZE), "signature" / Bytes(64)
    )
    policy: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ConfigAck(Message):
    """The camera's answer to CONFIG_PUSH."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIG_ACK
    SPEC: ClassVar[Any] = Struct("serial" / Int32ul, "applied" / StrictFlag())
    serial: int
    applied: bool


@dataclass(frozen=True, slots=True)
class ListClips(Message):
    """The dock asks for the next page of clips, starting at ``cursor``."""

    TYPE: ClassVar[MsgType] = MsgType.LIST
    SPEC: ClassVar[Any] = Struct("cursor" / Int32ul, "max_entries" / Int16ul)
    cursor: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class ListReply(Message):
    """One page of clips; ``next_cursor`` 0 means there are no more."""

    TYPE: ClassVar[MsgType] = MsgType.LIST_REPLY
    SPEC: ClassVar[Any] = Struct(
        "total" / Int32ul,
        "next_cursor" / Int32ul,
        "entries" / BoundedArray(Int16ul, MAX_LIST_ENTRIES, Record(ClipEntry)),
    )
    total: int
    next_cursor: int
    entries: tuple[ClipEntry, ...]


@dataclass(frozen=True, slots=True)
class Read(Message):
    """The dock asks for up to one chunk of a clip's file."""

    TYPE: ClassVar[MsgType] = MsgType.READ
    SPEC: ClassVar[Any] = Struct(
        "clip_id" / Bytes(16),
        "kind" / EnumField(Int8ul, FileKind),
        "index" / Int32ul,
        "offset" / Int64ul,
        "length" / at_most(Int32ul, CHUNK_SIZE),
    )
    clip_id: bytes
    kind: FileKind
    index: int  # segment number; 0 for the other kinds
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Data(Message):
    """One chunk of a file; ``data`` is a memoryview into the frame payload when decoded."""

    TYPE: ClassVar[MsgType] = MsgType.DATA
    SPEC: ClassVar[Any] = Struct(
        "clip_id" / Bytes(16),
        "kind" / EnumField(Int8ul, FileKind),
        "index" / Int32ul,
        "offset" / Int64ul,
        "file_size" / Int64ul,
        "data" / max_len(GreedyBytes, CHUNK_SIZE),
    )
    clip_id: bytes
    kind: FileKind
    index: int
    offset: int
    file_size: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Commit(Message):
    """The dock has verified and synced a clip: the camera may now delete it."""

    TYPE: ClassVar[MsgType] = MsgType.COMMIT
    SPEC: ClassVar[Any] = Struct(
        "clip_id" / Bytes(16), "chain_head" / Bytes(32), "signature" / Bytes(64)
    )
    clip_id: bytes
    chain_head: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class CommitAck(Message):
    """The camera's answer to COMMIT."""

    TYPE: ClassVar[MsgType] = MsgType.COMMIT_ACK
    SPEC: ClassVar[Any] = Struct("clip_id" / Bytes(16), "status" / EnumField(Int8ul, CommitStatus))
    clip_id: bytes
    status: CommitStatus


@dataclass(frozen=True, slots=True)
class StatusReq(Message):
    """The dock asks for the camera's status."""

    TYPE: ClassVar[MsgType] = MsgType.STATUS_REQ
    SPEC: ClassVar[Any] = Struct()


@dataclass(frozen=True, slots=True)
class Status(Message):
    """The camera's state, battery, storage and clock."""

    TYPE: ClassVar[MsgType] = MsgType.STATUS
    SPEC: ClassVar[Any] = Struct(
        "state" / Str(32),
        "battery_percent" / Checked(Int8ul, "0..100 or 255", lambda v: v <= 100 or v == 255),
        "charging" / StrictFlag(),
        "storage_total" / Int64ul,
        "storage_free" / Int64ul,
        "clips" / Int32ul,
        "clock_set" / StrictFlag(),
        "firmware" / Str(64),
    )
    state: str
    battery_percent: int  # 255: unknown
    charging: bool
    storage_total: int
    storage_free: int
    clips: int
    clock_set: bool
    firmware: str


MESSAGE_CLASSES: Final[tuple[type[Message], ...]] = (
    Hello, Ack, ErrorReply, Bye, ByeAck, AuthDock, AuthDevice, TimeSet, TimeAck, ConfigPush,
    ConfigAck, ListClips, ListReply, Read, Data, Commit, CommitAck, StatusReq, Status,
)  # fmt: skip
_BY_TYPE: Final[dict[int, type[Message]]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}

# The DATA header on the bulk path: clip_id, kind, index, offset, file_size.
_DATA_HEADER: Final = struct.Struct("<16sBIQQ")
DATA_HEADER_SIZE: Final = _DATA_HEADER.size  # 37
_FILE_KINDS: Final = frozenset(FileKind)


def encode_data_header(
    clip_id: bytes, kind: FileKind, index: int, offset: int, file_size: int
) -> bytes:
    """The fixed 37 bytes that precede the chunk in a DATA payload (the fast path).

    A sender avoids copying the chunk by reading it into a buffer right after these bytes.

    Raises:
        ValueError: ``clip_id`` is not 16 bytes, ``kind`` is not a FileKind or a number does
            not fit its field.
    """
    if len(clip_id) != 16:
        raise ValueError(f"clip_id must be 16 bytes, got {len(clip_id)}")
    try:
        return _DATA_HEADER.pack(clip_id, FileKind(kind), index, offset, file_size)
    except struct.error as err:
        raise ValueError(f"cannot encode DATA header: {err}") from err


def decode_data(payload: bytes | bytearray | memoryview) -> Data:
    """Parse a DATA payload without copying the chunk (``data`` is a memoryview slice).

    Raises:
        ProtocolError: MALFORMED, with the same checks as ``Data.SPEC``.
    """
    view = memoryview(payload)
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        view = memoryview(view.tobytes())
    if len(view) < DATA_HEADER_SIZE:
        raise ProtocolError(
            ErrorCode.MALFORMED, f"DATA: {len(view)} bytes, shorter than its 37-byte header"
        )
    clip_id, kind, index, offset, file_size = _DATA_HEADER.unpack_from(view)
    if kind not in _FILE_KINDS:
        raise ProtocolError(ErrorCode.MALFORMED, f"DATA.kind: {kind} is not a FileKind")
    if len(view) - DATA_HEADER_SIZE > CHUNK_SIZE:
        raise ProtocolError(
            ErrorCode.MALFORMED,
            f"DATA.data: {len(view) - DATA_HEADER_SIZE} bytes violates len <= {CHUNK_SIZE}",
        )
    return Data(clip_id, FileKind(kind), index, offset, file_size, view[DATA_HEADER_SIZE:])


def encode_message(msg: Message) -> bytes:
    """The payload bytes of ``msg`` (the frame's ``type`` is ``msg.TYPE``).

    Raises:
        ValueError: A field does not fit its declaration (a bug on the sending side).
    """
    if isinstance(msg, Data):
        if (size := memoryview(msg.data).nbytes) > CHUNK_SIZE:
            raise ValueError(f"DATA chunk of {size} bytes exceeds {CHUNK_SIZE}")
        header = encode_data_header(msg.clip_id, msg.kind, msg.index, msg.offset, msg.file_size)
        return header + msg.data
    return build(msg.TYPE.name, msg.SPEC, field_values(msg))


def decode_message(msg_type: int, payload: bytes | bytearray | memoryview) -> Message:
    """Parse the payload of a frame of type ``msg_type``.

    Raises:
        ProtocolError: UNKNOWN_MESSAGE for a type this version does not define (including the
            range reserved for firmware update), MALFORMED for a payload that does not parse
            exactly (the detail names the message and, where known, the field).
    """
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        reserved = " (reserved for firmware update)" if msg_type in FW_RESERVED else ""
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE, f"unknown message type {msg_type:#06x}{reserved}"
        )
    if cls is Data:
        return decode_data(payload)
    obj = parse_exact(cls.TYPE.name, cls.SPEC, payload)
    return cls(**{f.name: obj[f.name] for f in fields(cls)})


def schema_entries() -> list[tuple[str, Any]]:
    """Every declaration the schema hash covers, labelled, in a fixed order."""
    entries: list[tuple[str, Any]] = [
        ("frame header", HEADER_SPEC),
        ("record ClipEntry", ClipEntry.SPEC),
        ("record DockCertificate", DockCertificate.SPEC),
    ]
    entries += [(f"message {c.TYPE:#06x} {c.TYPE.name}", c.SPEC) for c in MESSAGE_CLASSES]
    return entries


def schema_text(entries: list[tuple[str, Any]] | None = None) -> str:
    """The text the schema hash is computed over: constants, then every declaration by field.

    Args:
        entries: Labelled construct declarations; :func:`schema_entries` when omitted (tests
            pass altered lists to show that any change to a declaration changes the hash).
    """
    lines = [
        f"bodycam dock link, protocol version {PROTOCOL_VERSION}, frame version {FRAME_VERSION}",
        f"frame magic {MAGIC.hex()}, flags known {FLAG_IGNORABLE:#04x} (IGNORABLE), "
        "header crc16-ccitt-false over bytes 0..17, trailer crc32 u32 over header and payload",
        f"limits chunk {CHUNK_SIZE}, max payload {MAX_PAYLOAD}",
        f"certificate context {CERT_CONTEXT!r}",
        f"reserved {FW_RESERVED.start:#06x}..{FW_RESERVED.stop - 1:#06x} for firmware update",
    ]
    for label, spec in entries or schema_entries():
        lines.append(f"{label}:")
        lines += [f"  {line}" for line in describe_fields(spec)]
    return "\n".join(lines) + "\n"


def schema_hash(entries: list[tuple[str, Any]] | None = None) -> bytes:
    """First 8 bytes of the SHA-256 of :func:`schema_text` (what HELLO carries)."""
    return hashlib.sha256(schema_text(entries).encode()).digest()[:8]


SCHEMA_HASH: Final = schema_hash()
