"""Writing clips: round trip, chain, signature, confidentiality, a full card."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import random
import struct
from pathlib import Path

import pytest

from bodycam.daemon.evidence import (
    ClipWriter,
    EvidenceError,
    export_clip,
    read_manifest,
    verify_clip,
)
from bodycam.daemon.evidence import crypto as evidence_crypto
from bodycam.daemon.evidence.journal import read_journal
from bodycam.daemon.evidence.keys import fingerprint
from bodycam.daemon.evidence.segfile import SegmentReader, parse_header
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    START,
    BudgetStorage,
    Keys,
    clip_info,
    open_clip,
    random_chunks,
    write_clip,
    write_segment,
)


def test_round_trip_verifies_and_exports_the_exact_chunks(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=4, records=7, seed=1)

    verdict = verify_clip(clip.directory)
    assert verdict.ok, verdict.problems
    assert verdict.segments == 4
    assert verdict.recovered_segments == 0

    out = tmp_path / "clip.ts"
    result = export_clip(clip.directory, keys.force, out)
    assert out.read_bytes() == clip.plaintext
    assert result.segments == 4
    assert result.frames == 28
    assert result.bytes == len(clip.plaintext)


def test_layout_of_a_closed_clip(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=2)
    assert clip.directory.name == f"20261122T101500Z-{clip.clip_id[:8]}"
    assert sorted(p.name for p in clip.directory.iterdir()) == [
        "journal.jsonl",
        "manifest.json",
        "manifest.sig",
        "seg-000000.bcs",
        "seg-000001.bcs",
    ]
    assert not [p for p in (tmp_path / "clips").iterdir() if p.name.startswith(".")]


def test_segment_header_names_clip_and_index(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=3)
    for index in range(3):
        data = (clip.directory / f"seg-{index:06d}.bcs").read_bytes()
        header = parse_header(data)
        assert header.clip_id.hex() == clip.clip_id
        assert header.index == index


def test_chain_follows_the_documented_formula(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=3)
    clip_id = bytes.fromhex(clip.clip_id)
    link = hashlib.sha256(b"bodycam/v1/chain" + clip_id).digest()
    manifest = read_manifest(clip.directory)
    for index, entry in enumerate(manifest["segments"]):
        stored = (clip.directory / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(stored).hexdigest()
        assert entry["size"] == len(stored)
        link = hashlib.sha256(
            link
            + struct.pack(">I", index)
            + hashlib.sha256(stored).digest()
            + struct.pack(">Q", len(stored))
        ).digest()
        assert entry["chain"] == link.hex()
    assert manifest["chain_head"] == link.hex()
    assert clip.writer.chain_head == link.hex()
    journal = read_journal(clip.directory / "journal.jsonl")
    assert [s.chain for s in journal.seals] == [e["chain"] for e in manifest["segments"]]


def test_manifest_is_canonical_and_signed_by_the_device(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys)
    assert clip.manifest is not None
    data = clip.manifest.read_bytes()
    parsed = json.loads(data)
    assert (
        data
        == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    signature = (clip.directory / "manifest.sig").read_bytes()
    assert len(signature) == 64
    keys.device.public_key().verify(signature, data)  # raises if invalid
    assert parsed["device_key_fingerprint"] == fingerprint(keys.device.public_key())
    assert parsed["encryption"]["force_key_fingerprint"] == fingerprint(keys.force.public_key())
    assert parsed["video"] == {
        "codec": "h264",
        "container": "mpegts",
        "width": 1280,
        "height": 720,
        "fps": 30,
        "bitrate": 8_000_000,
        "gop": 30,
    }
    assert parsed["started_utc"] == "2026-11-22T10:15:00.000000Z"
    assert parsed["ended_utc"] == "2026-11-22T10:16:00.000000Z"
    assert parsed["officer_id"] == "PC-4711"
    assert parsed["clock_offset_s"] == 0.125
    assert parsed["recovered"] is False
    assert parsed["segments"][0]["first_timestamp_us"] == FIRST_TIMESTAMP_US
    assert parsed["segments"][0]["frames"] == 5


def test_close_records_trigger_and_pre_event(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=1, close=False)
    clip.writer.close(
        ended_utc=END, reason="battery", trigger_timestamp_us=1_000_500_000, pre_event_actual_s=12.5
    )
    manifest = read_manifest(clip.directory)
    assert manifest["end_reason"] == "battery"
    assert manifest["trigger_timestamp_us"] == 1_000_500_000
    assert manifest["pre_event_actual_s"] == 12.5
    assert manifest["pre_event_s"] == 30.0


def test_stored_bytes_hold_no_plaintext_and_no_clip_key(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued: list[bytes] = []
    real_new_clip_key = evidence_crypto.new_clip_key

    def recording_new_clip_key() -> bytes:
        issued.append(real_new_clip_key())
        return issued[-1]

    monkeypatch.setattr(evidence_crypto, "new_clip_key", recording_new_clip_key)
    clip = write_clip(tmp_path / "clips", keys, segments=3, records=6, seed=7)
    assert len(issued) == 1
    clip_key = issued[0]
    clip_id = bytes.fromhex(clip.clip_id)
    secrets = [clip_key, clip_key.hex().encode(), base64.b64encode(clip_key)]
    secrets += [evidence_crypto.segment_key(clip_key, clip_id, i) for i in range(3)]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "clips").rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in stored
    for segment in clip.chunks:
        for chunk in segment:
            assert chunk[:26] not in stored  # the tag, and everything after it
            assert chunk[30:62] not in stored
    assert b"PLAINTEXT-" not in stored


def test_records_are_bound_to_their_segment(tmp_path: Path, keys: Keys) -> None:
    """The per-record AAD carries the header: a record moved elsewhere fails its tag."""
    clip = write_clip(tmp_path / "clips", keys, segments=2, records=2, seed=3)
    clip_key = _unwrapped_key(clip.directory, keys)
    clip_id = bytes.fromhex(clip.clip_id)
    with (
        (clip.directory / "seg-000000.bcs").open("rb") as first_file,
        (clip.directory / "seg-000001.bcs").open("rb") as second_file,
    ):
        first = SegmentReader(first_file)
        second = SegmentReader(second_file)
        record = next(iter(first))
        home = evidence_crypto.SegmentCipher(clip_key, clip_id, 0, first.header_bytes)
        assert home.decrypt(record.index, record.ciphertext) == clip.chunks[0][0]
        elsewhere = evidence_crypto.SegmentCipher(clip_key, clip_id, 1, second.header_bytes)
        with pytest.raises(EvidenceError, match="authentication failed"):
            elsewhere.decrypt(record.index, record.ciphertext)
        with pytest.raises(EvidenceError, match="authentication failed"):
            home.decrypt(record.index + 1, record.ciphertext)


def _unwrapped_key(directory: Path, keys: Keys) -> bytes:
    manifest = read_manifest(directory)
    wrapped = evidence_crypto.WrappedKey(
        base64.b64decode(manifest["encryption"]["ephemeral_public_key"]),
        base64.b64decode(manifest["encryption"]["wrapped_key"]),
    )
    return evidence_crypto.unwrap_clip_key(wrapped, bytes.fromhex(manifest["clip_id"]), keys.force)


def test_full_card_mid_segment_still_seals_and_closes(tmp_path: Path, keys: Keys) -> None:
    storage = BudgetStorage(tmp_path, budget=6_000)
    writer = ClipWriter.create(
        tmp_path / "clips",
        clip_info(),
        started_utc=START,
        signing_key=keys.device,
        force_key=keys.force.public_key(),
        storage=storage,
    )
    writer.begin_segment()
    accepted: list[bytes] = []
    chunks = random_chunks(random.Random(5), 20, low=900, high=1000)
    with pytest.raises(OSError) as caught:  # noqa: PT012 -- the card fills part-way through
        for chunk in chunks:
            writer.append(chunk)
            accepted.append(chunk)
    assert caught.value.errno == errno.ENOSPC
    assert 0 < len(accepted) < len(chunks)
    size_before = (writer.directory / "seg-000000.bcs.part").stat().st_size
    sealed = writer.seal_segment(
        first_timestamp_us=FIRST_TIMESTAMP_US,
        last_timestamp_us=FIRST_TIMESTAMP_US + 1,
        frames=len(accepted),
    )
    assert sealed.records == len(accepted)
    assert sealed.size == size_before
    writer.close(ended_utc=END, reason="storage_full")

    assert verify_clip(writer.directory).ok
    out = tmp_path / "out.ts"
    export_clip(writer.directory, keys.force, out)
    assert out.read_bytes() == b"".join(accepted)


def test_failed_write_is_cut_away_and_the_segment_stays_sealable(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_clip(tmp_path / "clips", keys)
    writer.begin_segment()
    good = random_chunks(random.Random(2), 3)
    for chunk in good:
        writer.append(chunk)
    part = writer.directory / "seg-000000.bcs.part"
    size = part.stat().st_size
    real_pwrite = os.pwrite

    # The card takes half the record, then reports itself full (as a real one may).
    def half_vectored(fd: int, parts: list[bytes], offset: int) -> int:
        data = b"".join(parts)
        return real_pwrite(fd, data[: len(data) // 2], offset)

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", half_vectored)
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space"):
        writer.append(b"x" * 4000)
    monkeypatch.undo()
    assert part.stat().st_size == size  # the half record is gone
    with pytest.raises(EvidenceError, match="a write failed earlier"):
        writer.append(b"more")
    writer.seal_segment(first_timestamp_us=1, last_timestamp_us=2, frames=3)
    writer.close(ended_utc=END, reason="storage_full")
    assert verify_clip(writer.directory).ok
    export_clip(writer.directory, keys.force, tmp_path / "out.ts")
    assert (tmp_path / "out.ts").read_bytes() == b"".join(good)


def test_close_seals_an_open_segment_with_records_and_drops_an_empty_one(
    tmp_path: Path, keys: Keys
) -> None:
    with_records = open_clip(tmp_path / "clips", keys)
    with_records.begin_segment()
    with_records.append(b"frame-a", timestamp_us=FIRST_TIMESTAMP_US)
    with_records.append(b"frame-b", timestamp_us=FIRST_TIMESTAMP_US + 40_000)
    with_records.close(ended_utc=END, reason="button")
    entry = read_manifest(with_records.directory)["segments"][0]
    assert (entry["records"], entry["frames"]) == (2, 2)
    assert entry["first_timestamp_us"] == FIRST_TIMESTAMP_US
    assert entry["last_timestamp_us"] == FIRST_TIMESTAMP_US + 40_000

    empty = open_clip(tmp_path / "clips", keys)
    write_segment(empty, [b"only"], start_us=FIRST_TIMESTAMP_US)
    empty.begin_segment()
    empty.close(ended_utc=END, reason="button")
    assert [p.name for p in empty.directory.glob("seg-*")] == ["seg-000000.bcs"]
    assert verify_clip(empty.directory).ok


def test_a_clip_with_no_segments_verifies(tmp_path: Path, keys: Keys) -> None:
    writer = open_clip(tmp_path / "clips", keys)
    writer.close(ended_utc=END, reason="button")
    verdict = verify_clip(writer.directory)
    assert verdict.ok, verdict.problems
    assert verdict.segments == 0


def test_misuse_raises_clear_errors(tmp_path: Path, keys: Keys) -> None:
    writer = open_clip(tmp_path / "clips", keys)
    with pytest.raises(EvidenceError, match="no segment is open"):
        writer.append(b"x")
    writer.begin_segment()
    with pytest.raises(EvidenceError, match="open already"):
        writer.begin_segment()
    with pytest.raises(EvidenceError, match="no records to seal"):
        writer.seal_segment(first_timestamp_us=1, last_timestamp_us=1, frames=0)
    with pytest.raises(EvidenceError, match="chunk of 0 bytes"):
        writer.append(b"")
    writer.append(b"x")
    with pytest.raises(EvidenceError, match="bad seal arguments"):
        writer.seal_segment(first_timestamp_us=5, last_timestamp_us=1, frames=1)
    writer.close(ended_utc=END, reason="button")
    with pytest.raises(EvidenceError, match="clip is closed"):
        writer.begin_segment()


def test_naive_start_time_and_unlinked_rollover_are_refused(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(EvidenceError, match="timezone-aware"):
        open_clip(tmp_path / "clips", keys, started=START.replace(tzinfo=None))
    with pytest.raises(EvidenceError, match="continues_chain_head"):
        open_clip(tmp_path / "clips", keys, info=clip_info(continues="ab" * 16))
    with pytest.raises(EvidenceError, match="continues"):
        open_clip(
            tmp_path / "clips",
            keys,
            info=clip_info(continues="not-a-clip-id", continues_chain_head="00" * 32),
        )
    assert not (tmp_path / "clips").exists()  # nothing was created


def test_rollover_links_two_clips(tmp_path: Path, keys: Keys) -> None:
    clips = tmp_path / "clips"
    first = write_clip(clips, keys, segments=2, close=False)
    second = open_clip(
        clips,
        keys,
        info=clip_info(
            trigger="rollover",
            continues=first.clip_id,
            continues_chain_head=first.writer.chain_head,
        ),
        started=END,
    )
    first.writer.close(ended_utc=END, reason="rollover", continued_by=second.clip_id)
    write_segment(second, [b"next"], start_us=FIRST_TIMESTAMP_US + 99_000_000)
    second.close(ended_utc=END, reason="button")
    assert verify_clip(first.directory).ok
    verdict = verify_clip(second.directory)
    assert verdict.ok, verdict.problems
    manifest = read_manifest(second.directory)
    assert manifest["continues"] == first.clip_id
    assert manifest["continues_chain_head"] == read_manifest(first.directory)["chain_head"]
    assert read_manifest(first.directory)["continued_by"] == second.clip_id
