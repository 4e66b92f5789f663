"""Verification: every kind of tampering is detected and named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.evidence import EvidenceError, verify_clip, verify_path
from bodycam.daemon.evidence.keys import fingerprint, public_key_b64
from bodycam.daemon.evidence.schema import canonical_json
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    Keys,
    WrittenClip,
    clip_info,
    flip_byte,
    open_clip,
    write_clip,
    write_segment,
)


@pytest.fixture
def clip(tmp_path: Path, keys: Keys) -> WrittenClip:
    return write_clip(tmp_path / "clips", keys, segments=4, records=4, seed=11)


def _only_problem(directory: Path) -> str:
    verdict = verify_clip(directory)
    assert not verdict.ok
    assert len(verdict.problems) == 1, verdict.problems
    return verdict.problems[0]


def test_intact_clip_verifies(clip: WrittenClip, keys: Keys) -> None:
    verdict = verify_clip(clip.directory)
    assert verdict.ok
    assert verdict.problems == []
    assert verdict.clip_id == clip.clip_id
    assert verdict.first_bad_segment is None
    assert verdict.signer_fingerprint == fingerprint(keys.device.public_key())
    assert verdict.pinned is False


def test_flipped_byte_in_a_segment(clip: WrittenClip) -> None:
    path = clip.directory / "seg-000002.bcs"
    flip_byte(path, path.stat().st_size // 2)
    verdict = verify_clip(clip.directory)
    assert not verdict.ok
    assert verdict.first_bad_segment == "seg-000002.bcs"
    assert verdict.problems == ["seg-000002.bcs: SHA-256 mismatch (altered)"]


def test_flipped_byte_in_a_segment_header(clip: WrittenClip) -> None:
    flip_byte(clip.directory / "seg-000001.bcs", 20)
    assert (
        _only_problem(clip.directory) == "seg-000001.bcs: header damaged (CRC mismatch) (altered)"
    )


def test_removed_segment(clip: WrittenClip) -> None:
    (clip.directory / "seg-000001.bcs").unlink()
    verdict = verify_clip(clip.directory)
    assert verdict.first_bad_segment == "seg-000001.bcs"
    assert verdict.problems == ["seg-000001.bcs: missing"]


def test_truncated_segment(clip: WrittenClip) -> None:
    path = clip.directory / "seg-000003.bcs"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    problem = _only_problem(clip.directory)
    assert problem.startswith("seg-000003.bcs: ")
    assert "truncated or extended" in problem


def test_reordered_segments(clip: WrittenClip) -> None:
    first, second = clip.directory / "seg-000001.bcs", clip.directory / "seg-000002.bcs"
    first.rename(clip.directory / "tmp")
    second.rename(first)
    (clip.directory / "tmp").rename(second)
    verdict = verify_clip(clip.directory)
    assert verdict.first_bad_segment == "seg-000001.bcs"
    assert verdict.problems == [
        "seg-000001.bcs: header says segment 2, listed as 1 (reordered or renamed)",
        "seg-000002.bcs: header says segment 1, listed as 2 (reordered or renamed)",
    ]


def test_segment_swapped_between_two_clips_of_one_device(
    tmp_path: Path, clip: WrittenClip, keys: Keys
) -> None:
    other = write_clip(tmp_path / "clips", keys, segments=4, records=4, seed=11)
    shutil.copyfile(other.directory / "seg-000002.bcs", clip.directory / "seg-000002.bcs")
    verdict = verify_clip(clip.directory)
    assert verdict.first_bad_segment == "seg-000002.bcs"
    assert verdict.problems == [
        f"seg-000002.bcs: belongs to clip {other.clip_id} (swapped between clips)"
    ]
    assert verify_clip(other.directory).ok


def test_edited_manifest(clip: WrittenClip) -> None:
    path = clip.directory / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["officer_id"] = "PC-0000"
    path.write_bytes(canonical_json(manifest))
    verdict = verify_clip(clip.directory)
    assert verdict.problems == ["manifest: signature invalid (edited?)"]
    assert verdict.first_bad_segment is None


def test_manifest_listing_a_forged_hash_breaks_the_chain(clip: WrittenClip) -> None:
    path = clip.directory / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["segments"][1]["sha256"] = "00" * 32
    path.write_bytes(canonical_json(manifest))
    problems = verify_clip(clip.directory).problems
    assert "manifest: signature invalid (edited?)" in problems
    assert "manifest: seg-000001.bcs: chain link does not match" in problems
    assert "seg-000001.bcs: SHA-256 mismatch (altered)" in problems


def test_extra_segment_file(clip: WrittenClip) -> None:
    shutil.copyfile(clip.directory / "seg-000003.bcs", clip.directory / "seg-000004.bcs")
    verdict = verify_clip(clip.directory)
    assert verdict.first_bad_segment == "seg-000004.bcs"
    assert verdict.problems == ["seg-000004.bcs: not listed in the manifest (added?)"]


def test_left_over_part_file_is_reported(clip: WrittenClip) -> None:
    (clip.directory / "seg-000004.bcs.part").write_bytes(b"")
    assert _only_problem(clip.directory).startswith("seg-000004.bcs.part: not listed")


def test_missing_signature(clip: WrittenClip) -> None:
    (clip.directory / "manifest.sig").unlink()
    assert _only_problem(clip.directory).endswith("manifest.sig: missing")


def _resign(directory: Path, attacker: Ed25519PrivateKey) -> None:
    """What a forger with their own key would do: edit, swap in their key, sign."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["officer_id"] = "PC-0000"
    manifest["device_public_key"] = public_key_b64(attacker.public_key())
    manifest["device_key_fingerprint"] = fingerprint(attacker.public_key())
    data = canonical_json(manifest)
    path.write_bytes(data)
    (directory / "manifest.sig").write_bytes(attacker.sign(data))


def test_resigned_clip_passes_unpinned_but_fails_pinned(clip: WrittenClip, keys: Keys) -> None:
    attacker = Ed25519PrivateKey.generate()
    _resign(clip.directory, attacker)

    unpinned = verify_clip(clip.directory)
    assert unpinned.ok  # self-consistent: only pinning tells who signed
    assert unpinned.pinned is False
    assert unpinned.signer_fingerprint == fingerprint(attacker.public_key())

    pinned = verify_clip(clip.directory, device_key=keys.device.public_key())
    assert not pinned.ok
    assert pinned.pinned is True
    assert pinned.signer_fingerprint == fingerprint(keys.device.public_key())
    assert pinned.problems == [
        f"manifest: signed by device key {fingerprint(attacker.public_key())}, not by the "
        f"pinned key {fingerprint(keys.device.public_key())} (another device, or re-signed)"
    ]


def test_pinned_with_the_right_key_verifies(clip: WrittenClip, keys: Keys) -> None:
    verdict = verify_clip(clip.directory, device_key=keys.device.public_key())
    assert verdict.ok
    assert verdict.pinned is True


def test_malformed_manifest_is_named(clip: WrittenClip) -> None:
    path = clip.directory / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["segments"][0]["size"] = "big"
    path.write_bytes(canonical_json(manifest))
    problem = _only_problem(clip.directory)
    assert "malformed manifest: segments.0.size" in problem


def test_oversized_manifest_is_refused_before_reading(clip: WrittenClip) -> None:
    path = clip.directory / "manifest.json"
    with path.open("r+b") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: costs nothing on disk
    problem = _only_problem(clip.directory)
    assert "over the" in problem
    assert "limit" in problem


def test_unfinished_clip_has_no_manifest(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=1, close=False)
    verdict = verify_clip(clip.directory)
    assert not verdict.ok
    assert verdict.clip_id == clip.clip_id
    assert verdict.problems == ["no manifest: still recording or not recovered"]
    clip.writer.abandon()


def test_verify_path_accepts_clip_clips_and_state_dirs(tmp_path: Path, keys: Keys) -> None:
    state = tmp_path / "state"
    first = write_clip(state / "clips", keys, seed=1)
    write_clip(state / "clips", keys, seed=2)
    assert [v.ok for v in verify_path(state)] == [True, True]
    assert len(verify_path(state / "clips")) == 2
    assert [v.clip_id for v in verify_path(first.directory)] == [first.clip_id]
    assert [v.clip_id for v in verify_path(first.directory / "manifest.json")] == [first.clip_id]


def test_verify_path_with_nothing_to_verify(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="no clips to verify"):
        verify_path(tmp_path)
    with pytest.raises(EvidenceError, match="no such file"):
        verify_path(tmp_path / "absent")


def test_rollover_link_to_the_wrong_chain_head_is_detected(tmp_path: Path, keys: Keys) -> None:
    clips = tmp_path / "clips"
    first = write_clip(clips, keys, segments=2)
    forged = open_clip(
        clips,
        keys,
        info=clip_info(continues=first.clip_id, continues_chain_head="ab" * 32),
        started=END,
    )
    write_segment(forged, [b"next"], start_us=FIRST_TIMESTAMP_US)
    forged.close(ended_utc=END, reason="button")
    verdict = verify_clip(forged.directory)
    assert verdict.problems == [
        f"continues: chain head of previous clip {first.clip_id} does not match"
    ]
    # Without the previous clip beside it there is nothing to compare against.
    shutil.rmtree(first.directory)
    assert verify_clip(forged.directory).ok
