"""Byte layout of a segment file: the plaintext header and the record framing.

This module knows nothing about keys. The header and the record frames are readable by the
camera, which cannot decrypt; that is what lets recovery find the last intact record after a
power cut (the CRC-32 of each ciphertext) and lets verify check a segment's clip and index
without any secret. ``docs/evidence-format.md`` is the specification; keep them in step.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from bodycam.daemon.evidence.errors import EvidenceError

# PNG-style magic: the high byte catches 7-bit transports, CR LF and ^Z catch text-mode copies.
MAGIC: Final = b"\x89BCS\r\n\x1a\n"
FORMAT_VERSION: Final = 1
SUITE_AES256GCM_HKDF_SHA256: Final = 1

_HEADER_BODY = struct.Struct(">8sHH16sIB3x")
_HEADER_CRC = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER_BODY.size + _HEADER_CRC.size  # 40

RECORD_FRAME = struct.Struct(">II")  # ciphertext length, CRC-32 of the ciphertext
GCM_TAG_SIZE: Final = 16
# One record holds one encoded video frame; 16 MiB is far above any H.264 frame we record and
# is the bound checked on every length read from disk, before anything is allocated.
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
MAX_CIPHERTEXT_SIZE: Final = MAX_CHUNK_SIZE + GCM_TAG_SIZE
MIN_CIPHERTEXT_SIZE: Final = 1 + GCM_TAG_SIZE

_DRAIN_BLOCK: Final = 1024 * 1024

SEGMENT_RE: Final = re.compile(r"^seg-(\d{6})\.bcs$")
PART_RE: Final = re.compile(r"^seg-(\d{6})\.bcs\.part$")
MAX_SEGMENT_INDEX: Final = 999_999  # six digits in the file name


def segment_name(index: int) -> str:
    """File name of sealed segment ``index``."""
    return f"seg-{index:06d}.bcs"


def part_name(index: int) -> str:
    """File name of segment ``index`` while it is being written."""
    return f"seg-{index:06d}.bcs.part"


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The fixed plaintext header at the start of every segment file."""

    clip_id: bytes  # 16 bytes (the UUID)
    index: int
    version: int = FORMAT_VERSION
    suite: int = SUITE_AES256GCM_HKDF_SHA256

    def pack(self) -> bytes:
        """The exact 40 header bytes (also the AAD prefix of every record)."""
        body = _HEADER_BODY.pack(
            MAGIC, self.version, HEADER_SIZE, self.clip_id, self.index, self.suite
        )
        return body + _HEADER_CRC.pack(zlib.crc32(body))


class HeaderError(EvidenceError):
    """A segment header is short, damaged or of an unknown format."""


def parse_header(data: bytes) -> SegmentHeader:
    """Parse and check the first :data:`HEADER_SIZE` bytes of a segment file.

    Raises:
        HeaderError: The header is short, has a bad magic or CRC, or an unknown version.
    """
    if len(data) < HEADER_SIZE:
        raise HeaderError(f"header is {len(data)} bytes, expected {HEADER_SIZE} (truncated)")
    body = data[: _HEADER_BODY.size]
    magic, version, size, clip_id, index, suite = _HEADER_BODY.unpack(body)
    if magic != MAGIC:
        raise HeaderError("not a bodycam segment (bad magic)")
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER_BODY.size)
    if crc != zlib.crc32(body):
        raise HeaderError("header damaged (CRC mismatch)")
    if version != FORMAT_VERSION or size != HEADER_SIZE:
        raise HeaderError(f"unsupported segment format version {version} (header {size} bytes)")
    if suite != SUITE_AES256GCM_HKDF_SHA256:
        raise HeaderError(f"unsupported cipher suite {suite}")
    return SegmentHeader(clip_id=clip_id, index=index, version=version, suite=suite)


def frame_record(ciphertext: bytes) -> bytes:
    """The on-disk bytes of one record: length, CRC-32, ciphertext."""
    return record_prefix(ciphertext) + ciphertext


def record_prefix(ciphertext: bytes) -> bytes:
    """The 8 bytes written before a record's ciphertext: length and CRC-32."""
    return RECORD_FRAME.pack(len(ciphertext), zlib.crc32(ciphertext))


class RecordError(EvidenceError):
    """A record frame read from disk is malformed."""


class _HashingReader:
    """Reads a binary stream while feeding every byte read into a SHA-256."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.offset = 0

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self.sha256.update(data)
        self.offset += len(data)
        return data


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back: its position and its (still encrypted) ciphertext."""

    index: int
    offset: int
    ciphertext: bytes


class SegmentReader:
    """Walks a segment file sequentially, hashing every byte it reads.

    The walk is strict: any malformed frame raises :class:`RecordError`. Use
    :func:`scan_intact_prefix` to find where a torn file stops being intact instead.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._reader = _HashingReader(stream)
        # The bytes as stored, not re-packed: they are the AAD every record was sealed with.
        self.header_bytes = self._reader.read(HEADER_SIZE)
        self.header = parse_header(self.header_bytes)
        self.records = 0

    def __iter__(self) -> Iterator[Record]:
        while True:
            start = self._reader.offset
            outcome = _read_record(self._reader)
            if outcome is None:
                return
            if isinstance(outcome, str):
                raise RecordError(f"record {self.records} at offset {start}: {outcome}")
            offset, ciphertext = outcome
            yield Record(self.records, offset, ciphertext)
            self.records += 1

    def finish(self) -> tuple[str, int]:
        """Read any remaining records; return the SHA-256 (hex) and the size of the file."""
        for _ in self:
            pass
        return self._reader.sha256.hexdigest(), self._reader.offset

    def drain(self) -> tuple[str, int]:
        """Hash whatever is left unparsed (after a RecordError); return SHA-256 and size."""
        while self._reader.read(_DRAIN_BLOCK):
            pass
        return self._reader.sha256.hexdigest(), self._reader.offset


def _read_record(reader: _HashingReader) -> tuple[int, bytes] | str | None:
    """Read one record: ``(offset, ciphertext)``, None at a clean end, or what is wrong."""
    offset = reader.offset
    frame = reader.read(RECORD_FRAME.size)
    if not frame:
        return None
    if len(frame) < RECORD_FRAME.size:
        return "truncated record frame"
    length, crc = RECORD_FRAME.unpack(frame)
    # The bound comes before the read: a damaged or hostile length must never size a buffer.
    if length > MAX_CIPHERTEXT_SIZE:
        return f"record length {length} exceeds the {MAX_CIPHERTEXT_SIZE}-byte limit"
    if length < MIN_CIPHERTEXT_SIZE:
        return f"record length {length} is shorter than a GCM tag plus one byte"
    ciphertext = reader.read(length)
    if len(ciphertext) < length:
        return f"truncated record ({len(ciphertext)} of {length} bytes)"
    if zlib.crc32(ciphertext) != crc:
        return "record CRC-32 mismatch"
    return offset, ciphertext


@dataclass(frozen=True, slots=True)
class IntactPrefix:
    """How much of a possibly torn segment file is intact."""

    header: SegmentHeader | None  # None: not even the header is intact
    records: int
    length: int  # bytes from the start of the file that are intact
    stopped_because: str | None  # why the scan stopped before the end of the file, if it did


def scan_intact_prefix(stream: BinaryIO) -> IntactPrefix:
    """Find the longest prefix made of a valid header and whole records with good CRCs.

    This is what recovery keeps of a ``.part`` file after a power cut: everything up to the
    first frame that is short, oversized or fails its CRC. It never decrypts.
    """
    reader = _HashingReader(stream)
    try:
        header = parse_header(reader.read(HEADER_SIZE))
    except HeaderError as exc:
        return IntactPrefix(None, 0, 0, str(exc))
    records = 0
    length = HEADER_SIZE
    while True:
        outcome = _read_record(reader)
        if outcome is None:
            return IntactPrefix(header, records, length, None)
        if isinstance(outcome, str):
            return IntactPrefix(header, records, length, outcome)
        records += 1
        length = reader.offset
