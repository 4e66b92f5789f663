"""Byte-level format: header, records, bounds, journal reading, the documented test vectors."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tracemalloc
from pathlib import Path

import pytest

from bodycam.daemon.evidence import EvidenceError
from bodycam.daemon.evidence.chain import chain_next, chain_start
from bodycam.daemon.evidence.journal import read_journal
from bodycam.daemon.evidence.segfile import (
    HEADER_SIZE,
    SegmentHeader,
    SegmentReader,
    frame_record,
    parse_header,
    scan_intact_prefix,
)
from tests.unit.evidence_helpers import make_keys, write_clip

DOC = Path(__file__).resolve().parents[2] / "docs" / "evidence-format.md"
VECTOR_CLIP_ID = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_header_round_trip_and_checks() -> None:
    header = SegmentHeader(VECTOR_CLIP_ID, 7)
    data = header.pack()
    assert len(data) == HEADER_SIZE == 40
    assert parse_header(data) == header
    with pytest.raises(EvidenceError, match="bad magic"):
        parse_header(b"X" + data[1:])
    with pytest.raises(EvidenceError, match="CRC mismatch"):
        parse_header(data[:30] + b"\x09" + data[31:])
    with pytest.raises(EvidenceError, match="truncated"):
        parse_header(data[:39])


def test_huge_record_length_is_an_error_not_an_allocation() -> None:
    data = SegmentHeader(VECTOR_CLIP_ID, 0).pack() + struct.pack(">II", 0xFFFF_FFFF, 0)
    tracemalloc.start()
    try:
        reader = SegmentReader(io.BytesIO(data))
        with pytest.raises(EvidenceError, match="record length 4294967295 exceeds"):
            list(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_bad_crc_and_short_record_are_named() -> None:
    header = SegmentHeader(VECTOR_CLIP_ID, 0).pack()
    record = bytearray(frame_record(b"c" * 40))
    record[-1] ^= 1
    with pytest.raises(EvidenceError, match="record 0 at offset 40: record CRC-32 mismatch"):
        list(SegmentReader(io.BytesIO(header + bytes(record))))
    short = frame_record(b"c" * 40)[:-5]
    with pytest.raises(EvidenceError, match="truncated record"):
        list(SegmentReader(io.BytesIO(header + short)))


def test_intact_prefix_stops_at_the_first_bad_record() -> None:
    header = SegmentHeader(VECTOR_CLIP_ID, 0).pack()
    good = frame_record(b"a" * 20) + frame_record(b"b" * 30)
    prefix = scan_intact_prefix(io.BytesIO(header + good + b"\x00\x00\x00"))
    assert prefix.records == 2
    assert prefix.length == len(header + good)
    assert prefix.stopped_because == "truncated record frame"
    assert scan_intact_prefix(io.BytesIO(header[:10])).header is None


def test_journal_tolerates_only_a_torn_last_line(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clips", make_keys(), segments=2)
    path = clip.directory / "journal.jsonl"
    whole = path.read_bytes()
    assert whole.endswith(b"\n")
    assert len(read_journal(path).seals) == 2

    path.write_bytes(whole + b'{"event":"se')
    journal = read_journal(path)
    assert (journal.torn_bytes, journal.intact_length) == (12, len(whole))

    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:-1], b'{"broken"\n']))  # damaged last line: torn
    assert read_journal(path).close is None

    path.write_bytes(b"".join([lines[0], b"{}\n", *lines[1:]]))
    with pytest.raises(EvidenceError, match="line 2: not a valid event"):
        read_journal(path)


def test_journal_sequence_is_checked(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clips", make_keys(), segments=3)
    path = clip.directory / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    with pytest.raises(EvidenceError, match="line 2: seal of segment 1, expected 0"):
        read_journal(path)
    path.write_bytes(b"".join([lines[0], lines[1], lines[-1], lines[2]]))
    with pytest.raises(EvidenceError, match="line 4: event after close"):
        read_journal(path)


def _doc_block(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"{DOC} has no {marker} block"
    return match.group(1)


def test_documented_header_vector_matches_the_code() -> None:
    expected = SegmentHeader(VECTOR_CLIP_ID, 3).pack()
    rows = _doc_block("header-vector").strip().splitlines()[1:]  # skip the column titles
    documented = b""
    for row in rows:
        offset, *rest = row.split()
        assert int(offset) == len(documented), row
        hex_bytes = []
        for token in rest:
            if not re.fullmatch(r"[0-9a-f]{2}", token):
                break
            hex_bytes.append(token)
        documented += bytes.fromhex("".join(hex_bytes))
    assert documented == expected


def test_documented_chain_vector_matches_the_code() -> None:
    block = _doc_block("chain-vector")
    values = dict(re.findall(r"^(\w+)\s*=\s*([0-9a-f]{64})$", block, re.M))
    chain_0 = chain_start(VECTOR_CLIP_ID)
    assert values["chain_0"] == chain_0
    segment_sha = hashlib.sha256(b"abc").hexdigest()
    assert values["segment_sha256"] == segment_sha
    assert values["chain_1"] == chain_next(chain_0, 0, segment_sha, 1234)
