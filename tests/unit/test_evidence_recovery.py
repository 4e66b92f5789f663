"""Recovery after a power cut at every awkward instant."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import random
import struct
from pathlib import Path

import pytest

from bodycam.daemon.evidence import (
    EvidenceError,
    export_clip,
    read_manifest,
    recover_clips,
    verify_clip,
)
from bodycam.daemon.evidence import recovery as recovery_module
from bodycam.daemon.evidence import writer as writer_module
from bodycam.daemon.evidence.journal import read_journal
from bodycam.daemon.evidence.recovery import RecoveryReport
from bodycam.daemon.evidence.segfile import HEADER_SIZE, RECORD_FRAME
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    START,
    Keys,
    WrittenClip,
    random_chunks,
    snapshot,
    write_clip,
)

NOW = START + dt.timedelta(hours=2)


def _crash_mid_segment(tmp_path: Path, keys: Keys, records: int) -> tuple[WrittenClip, list[bytes]]:
    """Two sealed segments, a third being written with ``records`` records, then power off."""
    clip = write_clip(tmp_path / "clips", keys, segments=2, close=False, seed=21)
    chunks = random_chunks(random.Random(22), records)
    clip.writer.begin_segment()
    for chunk in chunks:
        clip.writer.append(chunk)
    clip.writer.abandon()
    return clip, chunks


def _recover(tmp_path: Path, keys: Keys) -> list[RecoveryReport]:
    return recover_clips(tmp_path / "clips", signing_key=keys.device, now_utc=NOW)


def _sealed_state(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {k: v for k, v in snapshot(directory).items() if k.endswith(".bcs")}


def test_complete_part_is_sealed_as_recovered(tmp_path: Path, keys: Keys) -> None:
    clip, chunks = _crash_mid_segment(tmp_path, keys, records=4)
    before = _sealed_state(clip.directory)

    [report] = _recover(tmp_path, keys)

    assert report.clip_id == clip.clip_id
    assert report.recovered_segments == ["seg-000002.bcs"]
    assert report.discarded == []
    assert report.problems == []
    assert report.manifest_written
    after = _sealed_state(clip.directory)
    assert {k: after[k] for k in before} == before  # sealed files: same bytes, same mtime
    verdict = verify_clip(clip.directory, device_key=keys.device.public_key())
    assert verdict.ok, verdict.problems
    assert verdict.recovered_segments == 1
    manifest = read_manifest(clip.directory)
    assert manifest["recovered"] is True
    assert manifest["end_reason"] == "recovered"
    assert manifest["ended_utc_estimated"] is True
    assert manifest["recovered_utc"] == "2026-11-22T12:15:00.000000Z"
    last = manifest["segments"][2]
    assert (last["records"], last["frames"], last["recovered"]) == (4, 4, True)
    assert last["first_timestamp_us"] == 0  # unknown: its seal line never happened
    out = tmp_path / "out.ts"
    export_clip(clip.directory, keys.force, out)
    assert out.read_bytes() == clip.plaintext + b"".join(chunks)


def test_ended_utc_is_estimated_from_known_timestamps(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=1)
    _recover(tmp_path, keys)
    manifest = read_manifest(clip.directory)
    # Two sealed segments: the first starts at FIRST_TIMESTAMP_US, the second 10 s later
    # and holds 5 frames.
    span_us = 10_000_000 + 4 * 33_333
    expected = START + dt.timedelta(microseconds=span_us)
    assert manifest["ended_utc"] == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_torn_record_at_the_end_is_cut_away(tmp_path: Path, keys: Keys) -> None:
    clip, chunks = _crash_mid_segment(tmp_path, keys, records=3)
    part = clip.directory / "seg-000002.bcs.part"
    intact = part.stat().st_size
    with part.open("ab") as f:  # half a record: a frame promising 1000 bytes, 10 arrived
        f.write(RECORD_FRAME.pack(1000, 0) + b"0123456789")

    [report] = _recover(tmp_path, keys)

    assert report.recovered_segments == ["seg-000002.bcs"]
    assert report.discarded == [
        "seg-000002.bcs.part: 18 bytes after record 3 (truncated record (10 of 1000 bytes))"
    ]
    assert (clip.directory / "seg-000002.bcs").stat().st_size == intact
    assert verify_clip(clip.directory).ok
    export_clip(clip.directory, keys.force, tmp_path / "out.ts")
    assert (tmp_path / "out.ts").read_bytes() == clip.plaintext + b"".join(chunks)


def test_huge_length_in_a_part_is_a_tear_not_an_allocation(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=2)
    with (clip.directory / "seg-000002.bcs.part").open("ab") as f:
        f.write(struct.pack(">II", 0xFFFF_FFFF, 0))
    [report] = _recover(tmp_path, keys)
    assert "exceeds the" in report.discarded[0]
    assert verify_clip(clip.directory).ok


def test_header_only_part_is_removed(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=0)
    assert (clip.directory / "seg-000002.bcs.part").stat().st_size == HEADER_SIZE

    [report] = _recover(tmp_path, keys)

    assert report.recovered_segments == []
    assert report.discarded == ["seg-000002.bcs.part: no intact record (header only); removed"]
    assert not (clip.directory / "seg-000002.bcs.part").exists()
    verdict = verify_clip(clip.directory)
    assert verdict.ok
    assert verdict.segments == 2


def test_torn_header_part_is_removed(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=0)
    part = clip.directory / "seg-000002.bcs.part"
    part.write_bytes(part.read_bytes()[:17])
    [report] = _recover(tmp_path, keys)
    assert report.discarded == [
        "seg-000002.bcs.part: no intact record (header is 17 bytes, expected 40 (truncated)); "
        "removed"
    ]
    assert verify_clip(clip.directory).ok


def _drop_last_journal_line(directory: Path) -> bytes:
    journal = directory / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]))
    return lines[-1]


def test_sealed_file_missing_from_the_journal(tmp_path: Path, keys: Keys) -> None:
    """Power went between the rename to .bcs and the journal's seal line."""
    clip = write_clip(tmp_path / "clips", keys, segments=3, close=False, seed=4)
    clip.writer.abandon()
    dropped = _drop_last_journal_line(clip.directory)
    assert b'"event":"seal"' in dropped
    before = _sealed_state(clip.directory)

    [report] = _recover(tmp_path, keys)

    assert report.recovered_segments == ["seg-000002.bcs"]
    assert report.problems == []
    assert _sealed_state(clip.directory) == before
    segment = read_manifest(clip.directory)["segments"][2]
    stored = (clip.directory / "seg-000002.bcs").read_bytes()
    assert segment["sha256"] == hashlib.sha256(stored).hexdigest()
    assert (segment["records"], segment["recovered"]) == (5, True)
    assert verify_clip(clip.directory).ok
    export_clip(clip.directory, keys.force, tmp_path / "out.ts")
    assert (tmp_path / "out.ts").read_bytes() == clip.plaintext


def test_torn_journal_line_is_cut(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=2, close=False)
    clip.writer.abandon()
    torn = b'{"chain":"12ab","event":"se'
    with (clip.directory / "journal.jsonl").open("ab") as f:
        f.write(torn)

    [report] = _recover(tmp_path, keys)

    assert report.discarded == [f"journal.jsonl: torn last line ({len(torn)} bytes)"]
    assert report.manifest_written
    journal = read_journal(clip.directory / "journal.jsonl")
    assert journal.torn_bytes == 0
    assert len(journal.seals) == 2
    assert journal.close is not None
    assert verify_clip(clip.directory).ok


def test_recovery_is_idempotent(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=2)
    first = _recover(tmp_path, keys)
    assert first[0].manifest_written
    state = snapshot(clip.directory)

    assert _recover(tmp_path, keys) == []

    assert snapshot(clip.directory) == state
    assert verify_clip(clip.directory).ok


def test_crash_during_recovery_is_recovered_by_running_again(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=2)

    def power_cut(*_: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(recovery_module, "write_manifest", power_cut)
    [failed] = _recover(tmp_path, keys)
    assert not failed.manifest_written
    assert "run recovery again" in failed.problems[0]
    monkeypatch.undo()

    [report] = _recover(tmp_path, keys)

    assert report.manifest_written
    assert report.recovered_segments == []  # done the first time, journaled, not redone
    assert report.problems == []
    assert verify_clip(clip.directory).ok
    assert read_manifest(clip.directory)["segments"][2]["recovered"] is True


def test_crash_after_close_line_reproduces_the_normal_manifest(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=2, close=False)

    def power_cut(*_: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module, "write_manifest", power_cut)
    with pytest.raises(OSError, match="Input/output"):
        clip.writer.close(ended_utc=END, reason="button")
    monkeypatch.undo()

    [report] = _recover(tmp_path, keys)

    assert report.manifest_written
    manifest = read_manifest(clip.directory)
    assert manifest["recovered"] is False
    assert manifest["end_reason"] == "button"
    assert manifest["ended_utc"] == "2026-11-22T10:16:00.000000Z"
    assert verify_clip(clip.directory).ok


def test_clip_without_open_line_is_reported_and_left_alone(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=2)
    journal = clip.directory / "journal.jsonl"
    journal.write_bytes(journal.read_bytes()[:30])  # the open line itself is torn
    state = snapshot(clip.directory)

    [report] = _recover(tmp_path, keys)

    assert not report.manifest_written
    assert report.clip_id is None
    assert "open line is torn" in report.problems[0]
    assert "nothing changed" in report.problems[0]
    assert snapshot(clip.directory) == state


def test_damaged_journal_line_before_the_end_is_reported(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=3, close=False)
    clip.writer.abandon()
    journal = clip.directory / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = b"garbage\n"
    journal.write_bytes(b"".join(lines))
    state = snapshot(clip.directory)

    [report] = _recover(tmp_path, keys)

    assert "line 2: not a valid event" in report.problems[0]
    assert snapshot(clip.directory) == state
    with pytest.raises(EvidenceError, match="line 2"):
        read_journal(journal)


def test_unborn_clip_directory_is_removed(tmp_path: Path, keys: Keys) -> None:
    clips = tmp_path / "clips"
    unborn = clips / ".20261122T101500Z-deadbeef.creating"
    unborn.mkdir(parents=True)
    (unborn / "journal.jsonl").write_bytes(b'{"event":"op')
    [report] = _recover(tmp_path, keys)
    assert report.discarded == [f"{unborn.name}: clip never started (no footage)"]
    assert not unborn.exists()


def test_finished_clips_are_left_alone(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys)
    state = snapshot(clip.directory)
    assert _recover(tmp_path, keys) == []
    assert snapshot(clip.directory) == state


def test_tampered_finished_clip_is_reported_not_resigned(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys)
    manifest = clip.directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"PC-4711", b"PC-0000"))
    state = snapshot(clip.directory)
    [report] = _recover(tmp_path, keys)
    assert report.problems == ["manifest present but not signed by this device's key, left alone"]
    assert snapshot(clip.directory) == state


def test_many_clips_in_one_pass(tmp_path: Path, keys: Keys) -> None:
    done = write_clip(tmp_path / "clips", keys, seed=1)
    crashed, _ = _crash_mid_segment(tmp_path, keys, records=3)
    reports = _recover(tmp_path, keys)
    assert [r.directory for r in reports] == [crashed.directory]
    assert verify_clip(done.directory).ok
    assert verify_clip(crashed.directory).ok


def test_timestamps_stay_known_for_segments_sealed_before_the_crash(
    tmp_path: Path, keys: Keys
) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=1)
    _recover(tmp_path, keys)
    segments = read_manifest(clip.directory)["segments"]
    assert segments[0]["first_timestamp_us"] == FIRST_TIMESTAMP_US
    assert segments[0]["recovered"] is False


def test_sealed_segment_missing_after_the_crash_is_reported(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=1)
    (clip.directory / "seg-000001.bcs").unlink()
    [report] = _recover(tmp_path, keys)
    assert report.problems == ["seg-000001.bcs: sealed but missing"]
    assert report.manifest_written  # the gap is recorded, not hidden
    assert "sealed but missing" in report.summary()
    verdict = verify_clip(clip.directory)
    assert verdict.first_bad_segment == "seg-000001.bcs"
    assert verdict.problems == ["seg-000001.bcs: missing"]


def test_part_that_does_not_fit_the_journal_is_left_alone(tmp_path: Path, keys: Keys) -> None:
    clip, _ = _crash_mid_segment(tmp_path, keys, records=1)
    part = clip.directory / "seg-000002.bcs.part"
    part.rename(clip.directory / "seg-000005.bcs.part")
    state = snapshot(clip.directory)
    [report] = _recover(tmp_path, keys)
    assert report.problems == ["unexpected .part files [5] (next segment is 2); nothing changed"]
    assert not report.manifest_written
    assert snapshot(clip.directory) == state
