"""Recording as the officer and the public experience it: the buffer, the light, the beeps."""

from __future__ import annotations

import time
from pathlib import Path

from bodycam.daemon.evidence.keys import load_device_public_key
from bodycam.daemon.evidence.verify import verify_clip
from tests.acceptance.gestures import double_press, hold_to_stop, record_clip
from tests.acceptance.indicator_checks import check_recording_indicators
from tests.acceptance.reference_dock import ReferenceDock
from tests.acceptance.rig import CameraRig, needs_part


def test_clip_starts_with_the_pre_event_buffer(rig: CameraRig, tmp_path: Path) -> None:
    cfg = rig.config
    needs_part(lambda: rig.set_button(False))
    # The camera buffers while it waits; what happened before the press is in the clip.
    time.sleep(cfg.recording.pre_event_s + 1.0)
    record_clip(rig)

    dock = ReferenceDock(
        tmp_path, rig.identity, rig.identity.authority_key, session_s=rig.timeouts.session_s
    )
    report = dock.offload(needs_part(rig.dock))
    assert report.error is None, report.error
    clip, manifest = dock.committed_clips()[-1]
    gop_s = cfg.video.gop / cfg.video.fps
    assert manifest.trigger == "button"
    assert manifest.pre_event_s == cfg.recording.pre_event_s
    assert manifest.pre_event_actual_s is not None
    # The buffer starts at a keyframe, so it holds the configured time give or take one GOP.
    assert abs(manifest.pre_event_actual_s - cfg.recording.pre_event_s) <= gop_s + 0.2, manifest
    verdict = verify_clip(
        clip.directory, device_key=load_device_public_key(rig.identity.device_pub)
    )
    assert verdict.ok, verdict.problems


def test_red_light_and_beeps_tell_the_public_while_recording(rig: CameraRig) -> None:
    cfg = rig.config.indicators
    watch = needs_part(rig.watch_indicators)
    t0 = time.monotonic()
    try:
        press_began = time.monotonic() - t0
        needs_part(lambda: double_press(rig))
        time.sleep(4 * cfg.recording_led_period_s + 0.3)
        stop_held_at = time.monotonic() - t0
        hold_to_stop(rig)
        time.sleep(cfg.long_beep_s + 1.0)
    finally:
        edges = watch.stop()
    end = time.monotonic() - t0
    problems = check_recording_indicators(
        edges,
        cfg,
        press_began=press_began,
        stop_held_at=stop_held_at,
        end=end,
        tolerance_s=rig.timing_tolerance_s,
    )
    assert problems == [], f"{rig.name}: {problems}"
