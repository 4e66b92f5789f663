"""Frame layer of the dock link: header, CRCs, and a deframer that resyncs after garbage.

``HEADER_SPEC`` (construct) is the specification of the 20-byte header; the data path uses the
equivalent hand-written :mod:`struct` layout, because construct alone costs more than the whole
per-frame budget (see ``docs/protocol.md``; the tests prove the two agree). Nothing here knows
about message payloads: that is :mod:`bodycam.drivers.link.messages`.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

from construct import Checksum, Const, Int8ul, Int16ul, Int32ul, Struct

from bodycam.drivers.link.errors import ErrorCode, ProtocolError

MAGIC: Final = b"\xbc\xa7"
FRAME_VERSION: Final = 1
HEADER_SIZE: Final = 20
TRAILER_SIZE: Final = 4
CHUNK_SIZE: Final = 64 * 1024
# Room for a DATA header (and any other message's fields) next to one full chunk.
MAX_PAYLOAD: Final = CHUNK_SIZE + 256
MAX_FRAME: Final = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE
FLAG_IGNORABLE: Final = 0x01
KNOWN_FLAGS: Final = FLAG_IGNORABLE

_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF
_HCRC_SPAN: Final = 18  # the header CRC covers bytes 0..17

_HEADER: Final = struct.Struct("<2sBBHIIIH")
_HEADER_BODY: Final = struct.Struct("<2sBBHIII")
_HCRC: Final = struct.Struct("<H")
_TRAILER: Final = struct.Struct("<I")


def crc16_ccitt_false(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of ``data``: the header check."""
    return binascii.crc_hqx(data, 0xFFFF)


_HEADER_FIELDS: Final = (
    "magic" / Const(MAGIC),
    "version" / Int8ul,
    "flags" / Int8ul,
    "type" / Int16ul,
    "seq" / Int32ul,
    "ack" / Int32ul,
    "length" / Int32ul,
)
HEADER_BODY_SPEC: Final[Any] = Struct(*_HEADER_FIELDS)


def _header_body(context: Any) -> bytes:
    # Rebuilding the parsed fields gives exactly the bytes the CRC covered (fixed-size layout).
    data: bytes = HEADER_BODY_SPEC.build(context)
    return data


HEADER_SPEC: Final[Any] = Struct(
    *_HEADER_FIELDS, "hcrc" / Checksum(Int16ul, crc16_ccitt_false, _header_body)
)
"""The frame header as construct declares it: the specification of the wire layout."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One intact frame taken off the wire (header checked, CRC-32 checked)."""

    type: int
    flags: int
    seq: int
    ack: int
    payload: bytes

    @property
    def ignorable(self) -> bool:
        """Whether a receiver that does not know ``type`` should drop it silently."""
        return bool(self.flags & FLAG_IGNORABLE)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The raw fields of a 20-byte header, unchecked."""

    version: int
    flags: int
    type: int
    seq: int
    ack: int
    length: int
    hcrc: int


def pack_header(msg_type: int, *, seq: int, ack: int, length: int, flags: int = 0) -> bytes:
    """The 20 header bytes of a version-1 frame, header CRC included (the fast path).

    Raises:
        ValueError: A field is out of range, ``flags`` has unknown bits or ``length`` exceeds
            :data:`MAX_PAYLOAD` (all programming errors on the sending side).
    """
    if not 0 <= msg_type <= _U16_MAX:
        raise ValueError(f"message type {msg_type} is not a u16")
    if not 0 <= seq <= _U32_MAX or not 0 <= ack <= _U32_MAX:
        raise ValueError(f"seq {seq} / ack {ack} is not a u32")
    if flags < 0 or flags & ~KNOWN_FLAGS:
        raise ValueError(f"flags {flags:#x} has bits no receiver accepts")
    if not 0 <= length <= MAX_PAYLOAD:
        raise ValueError(f"payload of {length} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    body = _HEADER_BODY.pack(MAGIC, FRAME_VERSION, flags, msg_type, seq, ack, length)
    return body + _HCRC.pack(crc16_ccitt_false(body))


def unpack_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    """Split the first 20 bytes of ``data`` into fields without checking them (the fast path).

    Raises:
        ProtocolError: MALFORMED, ``data`` is shorter than :data:`HEADER_SIZE` or does not
            start with :data:`MAGIC`.
    """
    if len(data) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.MALFORMED, f"header needs {HEADER_SIZE} bytes")
    magic, version, flags, msg_type, seq, ack, length, hcrc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad magic {bytes(magic).hex()}")
    return FrameHeader(version, flags, msg_type, seq, ack, length, hcrc)


def encode_frame(
    msg_type: int,
    payload: bytes | bytearray | memoryview,
    *,
    seq: int,
    ack: int,
    flags: int = 0,
) -> tuple[bytes, bytes | bytearray | memoryview, bytes]:
    """Header, payload (the very object, not a copy) and trailer of a frame, for ``os.writev``.

    Raises:
        ValueError: ``payload`` is larger than :data:`MAX_PAYLOAD` or not contiguous, or a
            header field is out of range.
    """
    if isinstance(payload, memoryview):
        if not payload.c_contiguous:
            raise ValueError("payload memoryview must be C-contiguous")
        size = payload.nbytes
    else:
        size = len(payload)
    header = pack_header(msg_type, seq=seq, ack=ack, length=size, flags=flags)
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header, payload, _TRAILER.pack(crc)


def frame_bytes(
    msg_type: int,
    payload: bytes | bytearray | memoryview,
    *,
    seq: int,
    ack: int,
    flags: int = 0,
) -> bytes:
    """The whole frame as one bytes object (tests, vectors, small control messages).

    Raises:
        ValueError: As :func:`encode_frame`.
    """
    return b"".join(encode_frame(msg_type, payload, seq=seq, ack=ack, flags=flags))


@dataclass(slots=True)
class DeframerStats:
    """What a :class:`Deframer` has seen since it was created.

    Every byte fed ends up in exactly one place: an accepted frame, ``garbage_bytes`` or the
    deframer's buffer (``Deframer.buffered``). ``abandoned`` counts partial frames given up
    by :meth:`Deframer.abandon` (their first byte is counted as garbage).
    """

    frames: int = 0
    garbage_bytes: int = 0
    bad_header: int = 0
    oversized: int = 0
    bad_crc: int = 0
    abandoned: int = 0


class Deframer:
    """Split a byte stream into checked frames, resynchronising on the magic after garbage.

    Only an incomplete frame is held between calls, so :attr:`buffered` stays below
    :data:`MAX_FRAME`. A header is trusted only after its own CRC-16 and its length bound
    pass, so line noise never makes the deframer wait for megabytes that will not come.
    """

    __slots__ = ("_buf", "_max_payload", "_need", "stats")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        """Create a deframer accepting payloads of at most ``max_payload`` bytes.

        Raises:
            ValueError: ``max_payload`` is negative or above :data:`MAX_PAYLOAD`.
        """
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload {max_payload} outside 0..{MAX_PAYLOAD}")
        self._max_payload = max_payload
        self._buf = bytearray()
        # Size of the frame whose checked header starts the buffer: until that many bytes are
        # here, a feed only appends (a 64 KiB frame arrives in many small tty reads).
        self._need = 0
        self.stats = DeframerStats()

    @property
    def max_payload(self) -> int:
        """Largest payload accepted; longer headers count as ``oversized``."""
        return self._max_payload

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of a frame not yet complete."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame (after a reconnect); its bytes count as garbage."""
        self.stats.garbage_bytes += len(self._buf)
        self._buf.clear()
        self._need = 0

    def abandon(self) -> list[Frame]:
        """Give up on the partial frame held in the buffer and look for frames inside it.

        Called when a partial frame has not completed in time (a forged header whose length
        promises bytes that never come, or a frame cut short by a reconnect): its first magic
        byte is stepped over and the buffered bytes are scanned again, because a real frame
        may begin inside them. Returns the frames found, in order; what is left (a newer
        partial frame) stays buffered. Does nothing when nothing is buffered.
        """
        buf = self._buf
        if not buf:
            return []
        self.stats.abandoned += 1
        self.stats.garbage_bytes += 1
        del buf[:1]
        frames: list[Frame] = []
        pos = self._scan(buf, frames)
        if pos:
            del buf[:pos]
        return frames

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Take the next bytes from the wire and return the frames they complete, in order.

        Never raises on any content. A ``bytes``/``bytearray`` argument is parsed in place when
        nothing is pending, so a whole frame in one read has its payload copied exactly once.
        """
        buf = self._buf
        if isinstance(data, memoryview) and not data.c_contiguous:
            data = data.tobytes()
        if buf or isinstance(data, memoryview):
            buf += data
            if len(buf) < self._need:
                return []
            src: bytes | bytearray = buf
        else:
            src = data
        frames: list[Frame] = []
        pos = self._scan(src, frames)
        if src is buf:
            if pos:
                del buf[:pos]  # one compaction per feed, whatever the number of frames
        elif pos < len(src):
            buf += memoryview(src)[pos:]
        return frames

    def _scan(self, src: bytes | bytearray, frames: list[Frame]) -> int:
        """Append the complete frames in ``src`` to ``frames``; return where parsing stopped."""
        stats = self.stats
        max_payload = self._max_payload
        end = len(src)
        pos = 0
        need = 0
        with memoryview(src) as view:
            while True:
                start = src.find(MAGIC, pos)
                if start < 0:
                    # A lone first magic byte at the very end may begin the next frame.
                    keep = end - 1 if end > pos and src[end - 1] == MAGIC[0] else end
                    stats.garbage_bytes += keep - pos
                    pos = keep
                    break
                stats.garbage_bytes += start - pos
                pos = start
                if end - pos < HEADER_SIZE:
                    break
                _, version, flags, msg_type, seq, ack, length, hcrc = _HEADER.unpack_from(src, pos)
                if (
                    version != FRAME_VERSION
                    or flags & ~KNOWN_FLAGS
                    or hcrc != binascii.crc_hqx(view[pos : pos + _HCRC_SPAN], 0xFFFF)
                ):
                    stats.bad_header += 1
                elif length > max_payload:
                    stats.oversized += 1
                else:
                    body_end = pos + HEADER_SIZE + length
                    if body_end + TRAILER_SIZE > end:
                        need = body_end + TRAILER_SIZE - pos
                        break
                    (crc,) = _TRAILER.unpack_from(src, body_end)
                    if zlib.crc32(view[pos:body_end]) == crc:
                        payload = bytes(view[pos + HEADER_SIZE : body_end])
                        frames.append(Frame(msg_type, flags, seq, ack, payload))
                        stats.frames += 1
                        pos = body_end + TRAILER_SIZE
                        continue
                    stats.bad_crc += 1
                # Step over this magic only: a real frame may begin inside the rejected bytes.
                stats.garbage_bytes += 1
                pos += 1
        self._need = need
        return pos
