"""The simulated camera: real H.264 at the configured rate, dropping and stalling like a sensor."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from bodycam.drivers.interfaces import CameraError, EncodedFrame, VideoFormat
from bodycam.sim.camera import ENCODER_THREAD_PREFIX, SimCamera
from bodycam.sim.clock import SimClock
from bodycam.sim.scene import SceneRenderer, read_frame_counter
from tests.camera_checks import decode, nal_types, take_frames

SMALL = VideoFormat(width=160, height=120, fps=30, bitrate=200_000, gop=10)
# Generous, so a busy CI machine is never mistaken for a stalled sensor (20x speed).
NO_STALL = 20.0


@pytest.fixture
def clock() -> SimClock:
    return SimClock(speed=20)


def _encoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(ENCODER_THREAD_PREFIX)]


@pytest.fixture(autouse=True)
def _no_leaked_encoder_thread() -> Iterator[None]:
    yield
    assert _encoder_threads() == []


def _counters(frames: list[EncodedFrame]) -> list[int]:
    """The burned-in counter of every frame; -1 where the barcode is unreadable."""
    counters = [read_frame_counter(p.to_ndarray(format="gray")) for p in decode(frames)]
    return [-1 if c is None else c for c in counters]


async def test_frames_decode_to_configured_size_with_continuous_counters(
    clock: SimClock,
) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    assert camera.video_format == SMALL
    async with camera:
        frames = await take_frames(camera, 25)
    pictures = decode(frames)
    assert len(pictures) == 25
    assert {(p.width, p.height) for p in pictures} == {(160, 120)}
    assert _counters(frames) == list(range(25))
    assert camera.stats.frames_delivered == 25
    assert camera.stats.sessions == 1


async def test_keyframes_start_each_gop_and_carry_sps_pps(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    async with camera:
        frames = await take_frames(camera, 31)
    assert [i for i, f in enumerate(frames) if f.keyframe] == [0, 10, 20, 30]
    for frame in frames:
        types = nal_types(frame.data)
        if frame.keyframe:
            assert {7, 8, 5} <= set(types)  # SPS, PPS, IDR slice
        else:
            assert 5 not in types
            assert 7 not in types
    # A run that starts at a later keyframe decodes on its own.
    assert _counters(frames[20:]) == list(range(20, 31))


async def test_timestamps_step_by_the_frame_interval(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    async with camera:
        before = clock.monotonic()
        frames = await take_frames(camera, 12)
    first = frames[0].timestamp_us
    assert abs(first - before * 1e6) < 1e6  # in the clock's monotonic domain
    for n, frame in enumerate(frames):
        assert abs(frame.timestamp_us - first - round(n * 1e6 / SMALL.fps)) <= 1
    steps = {b.timestamp_us - a.timestamp_us for a, b in itertools.pairwise(frames)}
    interval = SMALL.frame_interval_us
    assert steps <= {interval - 1, interval, interval + 1}


async def test_counter_keeps_increasing_across_sessions(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    sessions = []
    for _ in range(2):
        async with camera:
            frames = await take_frames(camera, 12)
        assert frames[0].keyframe  # a fresh encoder per session
        sessions.append(_counters(frames))
    first, second = sessions
    assert first == list(range(first[0], first[0] + 12))
    assert second == list(range(second[0], second[0] + 12))
    assert second[0] > first[-1]
    assert camera.stats.sessions == 2


async def test_slow_consumer_makes_the_camera_drop_not_block(
    clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL, queue_seconds=0.5)
    async with camera:
        await clock.sleep(2.0)  # nobody reads: 60 frames made, 15 fit in the queue
        assert camera.stats.frames_dropped > 0
        frames = await take_frames(camera, 40)
    stats = camera.stats
    assert stats.frames_produced >= stats.frames_delivered + stats.frames_dropped
    assert _counters(frames[:15]) == list(range(15))  # the queue kept the oldest frames
    # The frames dropped after them leave a gap, in the timestamps and in the picture.
    interval = SMALL.frame_interval_us
    assert frames[15].timestamp_us - frames[14].timestamp_us > 10 * interval
    keyframe = next(i for i in range(15, 40) if frames[i].keyframe)
    counter = _counters(frames[keyframe:])[0]
    assert counter > 40  # without drops, 40 frames read would end at counter 39
    assert counter == round((frames[keyframe].timestamp_us - frames[0].timestamp_us) / interval)
    # Dozens of drops, one warning: the log is rate-limited.
    drop_warnings = [r for r in caplog.records if "frame dropped" in r.getMessage()]
    assert len(drop_warnings) == 1


async def test_encoder_behind_schedule_counts_late_frames_without_skipping() -> None:
    # At 1000x, 30 fps of simulated time is 30,000 frames a second: no encoder keeps up.
    camera = SimCamera(SMALL, SimClock(speed=1000), stall_timeout_s=5000.0)
    async with camera:
        frames = await take_frames(camera, 20)
    assert camera.stats.frames_late > 0
    assert _counters(frames) == list(range(20))  # late, but none skipped
    first = frames[0].timestamp_us
    for n, frame in enumerate(frames):  # sensor timestamps stay on the schedule
        assert abs(frame.timestamp_us - first - round(n * 1e6 / SMALL.fps)) <= 1


async def test_injected_stall_raises_camera_error(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock)
    async with camera:
        await take_frames(camera, 3)
        camera.inject_stall()
        with pytest.raises(CameraError, match="stopped delivering frames for 1 s"):
            await take_frames(camera, 10_000)
    assert camera.stats.stalls == 1
    # The stall lasts until the next session only.
    async with camera:
        assert len(await take_frames(camera, 3)) == 3


async def test_stall_after_s_raises_camera_error(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_after_s=0.5, stall_timeout_s=2.0)
    received: list[EncodedFrame] = []

    async def read_all() -> None:
        async with asyncio.timeout(30):
            async for frame in camera.frames():
                received.append(frame)

    async with camera:
        with pytest.raises(CameraError, match="stopped delivering frames for 2 s"):
            await read_all()
    assert len(received) == 15  # 0.5 s at 30 fps, then silence


async def test_no_encoder_thread_survives_an_exception_in_flight(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    threads_during: list[int] = []

    async def fail_while_reading() -> None:
        async with camera:
            threads_during.append(len(_encoder_threads()))
            async for _frame in camera.frames():
                raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_while_reading()
    assert threads_during == [1]
    assert _encoder_threads() == []
    await camera.__aexit__(None, None, None)  # a second exit is harmless


async def test_no_encoder_thread_survives_an_abandoned_iterator(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    async with camera:
        iterator = aiter(camera.frames())
        await anext(iterator)
    assert _encoder_threads() == []
    # The abandoned iterator ends with the session instead of waiting for a stall.
    rest = [frame async for frame in iterator]
    assert all(isinstance(f, EncodedFrame) for f in rest)


async def test_encoder_failure_surfaces_from_frames(
    clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    original = SceneRenderer.render
    calls = 0

    def failing_render(
        self: SceneRenderer,
        frame_index: int,
        when: dt.datetime,
        *,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise OSError("sensor bus error")
        return original(self, frame_index, when, out=out)

    monkeypatch.setattr(SceneRenderer, "render", failing_render)
    async with camera:
        with pytest.raises(CameraError, match="sensor bus error") as caught:
            await take_frames(camera, 100)
    assert isinstance(caught.value.__cause__, OSError)


async def test_frames_outside_a_session_and_double_enter_are_refused(clock: SimClock) -> None:
    camera = SimCamera(SMALL, clock, stall_timeout_s=NO_STALL)
    with pytest.raises(RuntimeError, match="sensor is off"):
        await anext(aiter(camera.frames()))
    async with camera:
        with pytest.raises(RuntimeError, match="already on"):
            await camera.__aenter__()


async def test_720p_session_produces_decodable_frames() -> None:
    fmt = VideoFormat(width=1280, height=720, fps=30, bitrate=8_000_000, gop=30)
    camera = SimCamera(fmt, SimClock(speed=2), stall_timeout_s=NO_STALL)
    async with camera:
        frames = await take_frames(camera, 6)
    pictures = decode(frames)
    assert [(p.width, p.height) for p in pictures] == [(1280, 720)] * 6
    assert [read_frame_counter(p.to_ndarray(format="gray")) for p in pictures] == list(range(6))
