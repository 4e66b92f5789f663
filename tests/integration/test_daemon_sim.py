"""The whole daemon on the simulated board: real H.264 in, verified clips out."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import av

from bodycam.daemon.evidence.export import decrypt_segment
from bodycam.daemon.evidence.keys import load_device_public_key, load_force_private_key
from bodycam.daemon.evidence.store import read_manifest
from bodycam.daemon.evidence.verify import verify_path
from bodycam.sim.board import SimBoard
from tests.integration.conftest import SimRig, decoded_counters, ffprobe, make_rig, run_scenario

PRESS: dict[str, Any] = {"do": "double_press"}
HOLD: dict[str, Any] = {"do": "hold", "seconds": 3.5}


def edges(board: SimBoard, part: str, value: bool) -> list[float]:
    return [t for t, state in board.world.pin(part).timeline if state is value]


def assert_continuous(counters: list[int | None]) -> None:
    assert counters, "no frames decoded"
    assert None not in counters, "a frame's burned-in counter is unreadable"
    gaps = [(a, b) for a, b in itertools.pairwise(counters) if b != a + 1]  # type: ignore[operator]
    assert gaps == [], f"frames lost or repeated between {gaps[:5]}"


async def test_shift_records_a_verified_playable_clip(rig: SimRig) -> None:
    _device, board = await run_scenario(rig, [(6.0, PRESS), (14.0, HOLD)], end=20.0)
    clips = rig.clip_dirs()
    assert len(clips) == 1
    verdicts = verify_path(clips[0], device_key=load_device_public_key(rig.device_pub))
    assert [v.ok for v in verdicts] == [True], verdicts[0].problems

    manifest = read_manifest(clips[0])
    assert manifest["trigger"] == "button"
    frames_in_manifest = sum(s["frames"] for s in manifest["segments"])
    # The clip starts pre_event_s before the trigger, to one GOP (1 s here).
    assert 3.0 - 0.05 <= manifest["pre_event_actual_s"] <= 3.0 + 1.0 + 0.05

    exported = rig.export(clips[0])
    probe = ffprobe(exported)
    assert probe["errors"] == ""
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
    assert int(stream["nb_read_frames"]) == frames_in_manifest
    counters = decoded_counters(exported)
    assert len(counters) == frames_in_manifest
    assert_continuous(counters)

    # Indicators: red LED lit at the second press of the double press, two start beeps,
    # one long stop beep; green blinking before and after.
    presses = edges(board, "record_button", False)  # pressed = pin pulled low
    start_press = presses[1]
    red_on = edges(board, "red_led", True)
    assert red_on, "red LED never lit"
    assert 0 <= red_on[0] - start_press < 0.25
    beeps_on = edges(board, "beeper", True)
    beeps_off = edges(board, "beeper", False)
    start_beeps = [t for t in beeps_on if start_press <= t < start_press + 2]
    assert len(start_beeps) == 2
    stop_press = presses[2]
    stop_beeps = [t for t in beeps_on if t >= stop_press]
    assert len(stop_beeps) == 1
    long_beep = min(t for t in beeps_off if t > stop_beeps[0]) - stop_beeps[0]
    assert long_beep >= 0.6
    assert edges(board, "green_led", True), "green LED never blinked while buffering"


async def test_rollover_loses_no_frame_between_clips(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, recording={"max_clip_s": 10.0, "pre_event_s": 1.0})
    await run_scenario(rig, [(2.0, PRESS), (27.0, HOLD)], end=33.0)
    clips = rig.clip_dirs()
    assert len(clips) >= 3
    verdicts = verify_path(rig.config.clips_dir)
    assert all(v.ok for v in verdicts), [v.problems for v in verdicts]
    manifests = [read_manifest(c) for c in clips]
    for earlier, later in itertools.pairwise(manifests):
        assert later["continues"] == earlier["clip_id"]
        assert earlier["continued_by"] == later["clip_id"]
    counters: list[int | None] = []
    for clip in clips:
        exported = rig.export(clip)
        assert ffprobe(exported)["errors"] == ""
        counters += decoded_counters(exported)
    assert_continuous(counters)


async def test_holster_trigger_starts_recording(rig: SimRig) -> None:
    steps = [
        (5.0, {"do": "trigger", "source": "holster", "active": True}),
        (6.0, {"do": "trigger", "source": "holster", "active": False}),
        (10.0, HOLD),
    ]
    await run_scenario(rig, steps, end=16.0)
    clips = rig.clip_dirs()
    assert len(clips) == 1
    assert read_manifest(clips[0])["trigger"] == "trigger:holster"


async def test_full_card_stops_recording_with_everything_sealed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, sim={"storage_quota_mb": 0.6}, storage={"reserve_mb": 0.0})
    device, board = await run_scenario(rig, [(2.0, PRESS)], end=20.0)
    clips = rig.clip_dirs()
    assert len(clips) == 1
    verdicts = verify_path(rig.config.clips_dir)
    assert all(v.ok for v in verdicts), [v.problems for v in verdicts]
    assert read_manifest(clips[0])["end_reason"] == "storage_full"
    assert "STORAGE_FULL" in device.status.warnings
    assert device.status.state == "STOPPED"
    # The officer heard the storage-full pattern (3 beeps), distinct from the start pair.
    beeps = edges(board, "beeper", True)
    assert len(beeps) >= 2 + 3


async def test_stalled_sensor_closes_clip_and_restarts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, sim={"camera_stall_after_s": 8.0}, recording={"pre_event_s": 1.0})
    device, _board = await run_scenario(rig, [(3.0, PRESS)], end=20.0)
    clips = rig.clip_dirs()
    assert clips
    manifest = read_manifest(clips[0])
    assert manifest["end_reason"] == "camera_fault"
    assert all(v.ok for v in verify_path(rig.config.clips_dir))
    assert device.machine.state.name in ("BUFFERING", "FINALIZING")


async def test_critical_battery_seals_and_sleeps(rig: SimRig) -> None:
    steps: list[tuple[float, dict[str, Any]]] = [
        (2.0, PRESS),
        (5.0, {"do": "battery", "percent": 14}),
        (9.0, {"do": "battery", "percent": 3}),
    ]
    device, board = await run_scenario(rig, steps, end=16.0)
    clips = rig.clip_dirs()
    assert len(clips) == 1
    assert read_manifest(clips[0])["end_reason"] == "battery_critical"
    assert all(v.ok for v in verify_path(rig.config.clips_dir))
    assert device.machine.state.name == "ASLEEP"
    # Four low-battery beeps came between the 14 % reading and the critical level.
    beeps = edges(board, "beeper", True)
    assert len(beeps) >= 2 + 4


def test_each_segment_plays_on_its_own(tmp_path: Path) -> None:
    # Decrypt one segment alone and decode it from its first byte: it starts at a keyframe.
    rig = make_rig(tmp_path)
    asyncio.run(run_scenario(rig, [(4.0, PRESS), (10.0, HOLD)], end=15.0))
    clip = rig.clip_dirs()[0]
    key = load_force_private_key(rig.force_dir / "force.key")
    segments = sorted(clip.glob("seg-*.bcs"))
    assert len(segments) >= 3
    middle = tmp_path / "middle.ts"
    middle.write_bytes(decrypt_segment(clip, segments[1].name, key))
    with av.open(str(middle)) as container:
        frames = list(container.decode(video=0))
    assert frames
    assert frames[0].key_frame
    assert ffprobe(middle)["errors"] == ""
