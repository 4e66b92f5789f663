"""The picamera2 driver against the fake picamera2: frames, faults, restarts and shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bodycam.drivers.interfaces import CameraError, VideoFormat
from bodycam.drivers.picamera import PiCamera
from tests.camera_checks import assert_stream, take_frames
from tests.fakes.picamera2 import Stage
from tests.fakes.picamera2_fixture import FAKES_DIR, FakeWorld, install_fake_picamera2

SMALL = VideoFormat(width=160, height=120, fps=30, bitrate=200_000, gop=10)
# Generous, so a busy machine is never mistaken for a stalled sensor.
NO_STALL = 10.0


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorld]:
    world = install_fake_picamera2(monkeypatch)
    yield world
    # Whatever the test did, the driver must have let go of every camera and thread.
    assert world.live_threads() == []
    assert world.all_joined()
    assert world.opens == world.closes
    assert world.output_errors == []


async def test_frames_flow_as_decodable_h264_in_the_monotonic_domain(world: FakeWorld) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    t_on = time.monotonic()
    async with camera:
        frames = await take_frames(camera, 25)
    t_off = time.monotonic()

    assert len(frames) == 25
    assert_stream(frames, SMALL, t_on=t_on, t_off=t_off)
    assert camera.stats.sessions == 1
    assert camera.stats.frames_delivered == 25
    assert camera.stats.restarts == 0


async def test_configuration_reaches_picamera2(world: FakeWorld) -> None:
    fmt = VideoFormat(width=96, height=64, fps=25, bitrate=150_000, gop=5)
    camera = PiCamera(fmt, hflip=True, stall_timeout_s=NO_STALL)
    async with camera:
        frames = await take_frames(camera, 6)
    (rec,) = world.recordings
    assert (rec.size, rec.format) == ((96, 64), "YUV420")
    assert rec.frame_duration_limits == (40_000, 40_000)
    assert (rec.hflip, rec.vflip) == (True, False)
    assert (rec.bitrate, rec.iperiod, rec.repeat, rec.framerate) == (150_000, 5, True, 25)
    assert [f.keyframe for f in frames] == [True, False, False, False, False, True]


async def test_no_camera_attached_names_the_config_key(world: FakeWorld) -> None:
    world.cameras = 0
    with pytest.raises(CameraError, match=r"camera\.index = 0.*no camera module detected"):
        async with PiCamera(SMALL):
            pass
    world.cameras = 1
    with pytest.raises(CameraError, match=r"camera\.index = 1.*ribbon cable"):
        async with PiCamera(SMALL, camera_index=1):
            pass
    assert world.opens == 0


def test_fake_picamera2_raises_like_the_real_one_without_a_camera(world: FakeWorld) -> None:
    import picamera2

    world.cameras = 0
    assert picamera2.Picamera2.global_camera_info() == []
    with pytest.raises(IndexError):
        picamera2.Picamera2()


@pytest.mark.parametrize("stage", ["open", "configure", "start"])
async def test_start_failure_leaves_nothing_open(world: FakeWorld, stage: Stage) -> None:
    world.fail_next_start(RuntimeError("Device or resource busy"), stage=stage)
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    with pytest.raises(CameraError, match=r"camera\.index = 0.*Device or resource busy") as info:
        async with camera:
            pass
    assert "check" in str(info.value)  # names the config keys of the step that failed
    assert world.opens == world.closes
    assert world.live_threads() == []
    assert camera.stats.start_failures == 1
    async with camera:  # the next start works and counts as a restart
        assert len(await take_frames(camera, 3)) == 3
    assert camera.stats.restarts == 1
    assert camera.stats.sessions == 1


async def test_stalled_sensor_raises_then_restarts_with_a_fresh_picamera2(world: FakeWorld) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=0.3)
    stamps: list[int] = []
    t_stall = 0.0

    async def run_until_stall() -> None:  # what the daemon's sensor task does
        nonlocal t_stall
        async with camera:
            async for frame in camera.frames():
                stamps.append(frame.timestamp_us)
                if len(stamps) == 3:
                    world.stall()
                    t_stall = time.monotonic()

    stalled = r"camera\.index = 0.*stopped delivering frames for 0\.3 s"
    with pytest.raises(CameraError, match=stalled):
        await run_until_stall()
    waited = time.monotonic() - t_stall
    assert 0.25 <= waited < 1.5
    assert world.live_threads() == []  # the stalled camera was stopped and closed
    assert camera.stats.stalls == 1

    async with camera:
        frames = await take_frames(camera, 5)
    assert world.opens == 2
    assert world.instances[0] is not world.instances[1]
    assert frames[0].keyframe
    assert frames[0].timestamp_us > stamps[-1]
    stats = camera.stats
    assert (stats.sessions, stats.restarts, stats.stalls) == (2, 1, 1)


async def test_slow_consumer_loses_frames_but_never_holds_the_camera_thread(
    world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL, queue_seconds=0.2)  # 6 frames
    caplog.set_level(logging.WARNING, logger="bodycam.drivers.picamera")
    async with camera:
        await asyncio.sleep(1.0)  # a consumer stuck for 30 frames
        output = world.frames_output
        frames = await take_frames(camera, 8)
    assert output >= 20  # the sensor kept going meanwhile
    assert world.max_output_call_s < 0.05
    dropped = camera.stats.frames_dropped
    assert dropped >= output - 6 - 2
    # The 6 queued frames are the oldest, then the stream goes on after a gap.
    gaps = [b.timestamp_us - a.timestamp_us for a, b in itertools.pairwise(frames)]
    assert max(gaps[:5]) < 2 * SMALL.frame_interval_us
    assert max(gaps[5:]) > 10 * SMALL.frame_interval_us
    drops = [r for r in caplog.records if "frame dropped" in r.getMessage()]
    assert len(drops) == 1  # rate-limited


async def test_shutdown_joins_every_camera_thread(world: FakeWorld) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    for _ in range(2):
        async with camera:
            await take_frames(camera, 2)
            assert len(world.live_threads()) == 1
        assert world.live_threads() == []
        assert world.all_joined()
    assert world.threads_started == 2
    assert world.opens == world.closes == 2


async def test_cancelled_consumer_still_closes_the_camera(world: FakeWorld) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    got = asyncio.Event()

    async def consume() -> None:
        async with camera:
            async for _ in camera.frames():
                got.set()

    task = asyncio.create_task(consume(), name="consume")
    await asyncio.wait_for(got.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.opens == world.closes == 1
    assert world.live_threads() == []


async def test_wedged_stop_is_abandoned_and_late_frames_ignored(
    world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    release = world.wedge_next_stop()
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL, queue_seconds=0.1, stop_timeout_s=0.3)
    try:
        async with camera:
            await take_frames(camera, 2)
            t_exit = time.monotonic()
        assert time.monotonic() - t_exit < 1.5
        assert camera.stats.stop_timeouts == 1
        assert "did not stop within 0.3 s" in caplog.text
        before, stats = world.frames_output, camera.stats
        await asyncio.sleep(0.3)
        assert world.frames_output >= before + 5  # the wedged camera still calls back...
        assert camera.stats == stats  # ...into nothing: not queued, not even counted as dropped
    finally:
        release.set()
    for _ in range(250):  # the released stop finishes in its own thread
        if world.all_joined() and world.closes == world.opens:
            break
        await asyncio.sleep(0.02)


async def test_wedged_start_times_out_and_the_camera_is_released_later(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bodycam.drivers.picamera._START_TIMEOUT_S", 0.3)
    release = world.wedge_next_start()
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    try:
        with pytest.raises(CameraError, match=r"camera\.index = 0.*did not start .* 0\.3 s"):
            await camera.__aenter__()
        assert camera.stats.start_failures == 1
    finally:
        release.set()
    for _ in range(250):  # the start finishes late, sees it was given up, and releases
        if world.opens and world.closes == world.opens and world.all_joined():
            break
        await asyncio.sleep(0.02)
    assert world.threads_started == 1
    async with camera:  # and the camera can be turned on again
        assert len(await take_frames(camera, 2)) == 2
    assert camera.stats.restarts == 1


async def test_sensor_clock_off_the_board_clock_is_rebased_once(
    world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    offset_s = 5000.0

    def board_clock() -> float:
        return time.monotonic() + offset_s

    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL, monotonic=board_clock)
    async with camera:
        t_on = board_clock()
        first = await take_frames(camera, 3)
    async with camera:
        second = await take_frames(camera, 3)
    t_off = board_clock()
    stamps = [f.timestamp_us for f in first + second]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert t_on * 1e6 - 1e5 <= stamps[0]
    assert stamps[-1] <= t_off * 1e6 + 1e5
    assert camera.stats.rebases == 2  # every session's sensor clock needs it...
    assert caplog.text.count("rebased") == 1  # ...but it is reported once


async def test_entering_twice_is_refused(world: FakeWorld) -> None:
    camera = PiCamera(SMALL, stall_timeout_s=NO_STALL)
    async with camera:
        with pytest.raises(RuntimeError, match="already on"):
            await camera.__aenter__()
    with pytest.raises(RuntimeError, match="sensor is off"):
        await anext(camera.frames())


def test_install_is_undone_at_teardown() -> None:
    def faked() -> list[str]:
        return [n for n in sys.modules if n.split(".")[0] in ("picamera2", "libcamera")]

    with pytest.MonkeyPatch.context() as mp:
        world = install_fake_picamera2(mp)
        import picamera2

        assert picamera2.fake_world is world
        assert {"picamera2.encoders", "picamera2.outputs", "libcamera"} <= set(faked())
        assert str(FAKES_DIR) in sys.path
    assert faked() == []
    assert str(FAKES_DIR) not in sys.path


def test_module_imports_without_picamera2() -> None:
    code = (
        "import sys, bodycam.drivers.picamera; "
        "assert 'picamera2' not in sys.modules and 'libcamera' not in sys.modules"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60)


async def test_entering_without_picamera2_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails, even on a Pi
    with pytest.raises(CameraError, match=r"camera\.index = 0.*python3-picamera2") as info:
        async with PiCamera(SMALL):
            pass
    assert "--system-site-packages" in str(info.value)
