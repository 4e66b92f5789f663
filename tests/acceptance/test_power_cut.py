"""A power cut mid-recording: after the restart every sealed segment reaches the dock intact."""

from __future__ import annotations

import time
from pathlib import Path

from bodycam.daemon.evidence.keys import load_device_public_key
from bodycam.daemon.evidence.verify import verify_clip
from tests.acceptance.gestures import double_press, wait_ready
from tests.acceptance.reference_dock import ReferenceDock
from tests.acceptance.rig import CameraRig, needs_part


def test_power_cut_mid_recording_loses_no_sealed_segment(rig: CameraRig, tmp_path: Path) -> None:
    segment_s = rig.config.recording.segment_s
    needs_part(lambda: rig.power(True))  # a rig that cannot cut the power skips here
    needs_part(lambda: double_press(rig))
    pressed = time.monotonic()
    time.sleep(4 * segment_s + 0.5)
    recorded_s = time.monotonic() - pressed
    rig.power(False)
    try:
        time.sleep(1.0)
    finally:
        rig.power(True)
    wait_ready(rig)

    dock = ReferenceDock(
        tmp_path, rig.identity, rig.identity.authority_key, session_s=rig.timeouts.session_s
    )
    report = dock.offload(needs_part(rig.dock))
    assert report.error is None, report.error
    assert report.rejected == []
    assert report.camera_status is not None
    assert report.camera_status.clips == 0
    clip, manifest = dock.committed_clips()[-1]
    assert manifest.recovered, "the clip cut by the power loss must be the recovered one"
    verdict = verify_clip(
        clip.directory, device_key=load_device_public_key(rig.identity.device_pub)
    )
    assert verdict.ok, verdict.problems
    # Only what was not yet sealed may be lost: the segment being written and, at most, the
    # one being sealed when the power went. The buffer before the press counts, less the GOP
    # it may start short by. (A recovered clip has no trigger time: count sealed frames.)
    video = rig.config.video
    sealed = [seg for seg in manifest.segments if not seg.recovered]
    assert [seg.index for seg in sealed] == list(range(len(sealed))), "a sealed segment is missing"
    sealed_s = sum(seg.frames for seg in sealed) / video.fps
    expected_s = recorded_s + rig.config.recording.pre_event_s - video.gop / video.fps
    assert sealed_s >= expected_s - 2 * segment_s - 0.5, (sealed_s, expected_s)
