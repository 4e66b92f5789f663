"""Docking at the end of a shift: the force's dock gets everything, a rogue dock nothing."""

from __future__ import annotations

import time
from pathlib import Path

from bodycam.daemon.evidence.keys import generate_device_key, load_device_public_key
from bodycam.daemon.evidence.verify import verify_clip
from tests.acceptance.gestures import record_clip
from tests.acceptance.reference_dock import ReferenceDock
from tests.acceptance.rig import CameraRig, needs_part


def test_dock_offloads_verifies_commits_and_frees_the_camera(
    rig: CameraRig, tmp_path: Path
) -> None:
    for _ in range(2):
        needs_part(lambda: record_clip(rig))
    dock = ReferenceDock(
        tmp_path, rig.identity, rig.identity.authority_key, session_s=rig.timeouts.session_s
    )
    report = dock.offload(needs_part(rig.dock))
    assert report.error is None, report.error
    assert report.authenticated
    assert report.rejected == []
    assert len(report.committed) >= 2
    assert report.clock_offset_s is not None
    assert report.camera_status is not None
    assert report.camera_status.clips == 0  # storage freed: every committed clip is gone
    device_key = load_device_public_key(rig.identity.device_pub)
    stored = dock.committed_clips()
    assert len(stored) == len(report.committed)
    for clip, _ in stored:
        verdict = verify_clip(clip.directory, device_key=device_key)
        assert verdict.ok, (clip.clip_id, verdict.problems)


def test_rogue_dock_gets_no_footage(rig: CameraRig, tmp_path: Path) -> None:
    needs_part(lambda: record_clip(rig))
    port = needs_part(rig.dock)
    rogue_authority = tmp_path / "rogue-force" / "authority.key"
    generate_device_key(rogue_authority)
    rogue = ReferenceDock(
        tmp_path / "rogue", rig.identity, rogue_authority, session_s=rig.timeouts.session_s
    )
    report = rogue.offload(port)
    assert not report.authenticated
    assert report.error is not None
    assert "AUTH_FAILED" in report.error
    assert report.bytes_received == 0
    assert rogue.store.clips() == []
    # The camera kept its clip for its own force's dock (after the refusal's rate limit).
    time.sleep(1.2)
    good = ReferenceDock(
        tmp_path / "good",
        rig.identity,
        rig.identity.authority_key,
        session_s=rig.timeouts.session_s,
    )
    report = good.offload(port)
    assert report.error is None, report.error
    assert len(report.committed) >= 1
    assert report.camera_status is not None
    assert report.camera_status.clips == 0
