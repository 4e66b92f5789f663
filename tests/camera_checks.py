"""Checks on a camera's encoded stream, shared by the fake-picamera2 tests and the bench Pi.

The same assertions run against the fake in CI and against the real sensor and hardware
encoder when ``BODYCAM_HIL=1`` (``tests/hil/test_pi_hardware.py``).
"""

from __future__ import annotations

import asyncio
import itertools

import av

from bodycam.drivers.interfaces import Camera, EncodedFrame, VideoFormat


async def take_frames(camera: Camera, count: int, *, timeout_s: float = 30.0) -> list[EncodedFrame]:
    """The next ``count`` frames from an entered camera."""
    frames: list[EncodedFrame] = []
    async with asyncio.timeout(timeout_s):
        async for frame in camera.frames():
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


def nal_types(data: bytes) -> list[int]:
    """NAL unit types in an Annex B access unit."""
    types = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def decode(frames: list[EncodedFrame]) -> list[av.VideoFrame]:
    """Decode a run of frames with a fresh decoder, as a player opening a segment would."""
    decoder = av.CodecContext.create("h264", "r")
    pictures: list[av.VideoFrame] = []
    for frame in frames:
        pictures.extend(decoder.decode(av.Packet(frame.data)))
    pictures.extend(decoder.decode(None))
    return pictures


def assert_stream(
    frames: list[EncodedFrame], fmt: VideoFormat, *, t_on: float, t_off: float
) -> None:
    """Frames taken between ``t_on`` and ``t_off`` (monotonic seconds) are a good stream.

    Timestamps rise and sit in the monotonic domain at about the frame rate; every frame is
    Annex B with a picture; keyframes come first and every ``gop`` frames, each with SPS
    and PPS in band; a run starting at a later keyframe decodes on its own at the size.
    """
    stamps = [f.timestamp_us for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert t_on * 1e6 <= stamps[0]
    assert stamps[-1] <= t_off * 1e6
    mean_interval = (stamps[-1] - stamps[0]) / (len(frames) - 1)
    assert 0.6 * fmt.frame_interval_us < mean_interval < 1.5 * fmt.frame_interval_us
    for frame in frames:
        assert frame.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
        assert any(t in (1, 5) for t in nal_types(frame.data))  # a picture in every frame
    assert [i for i, f in enumerate(frames) if f.keyframe] == list(range(0, len(frames), fmt.gop))
    for frame in frames:
        types = nal_types(frame.data)
        assert ({7, 8, 5} <= set(types)) == frame.keyframe  # SPS+PPS+IDR exactly on keyframes
    later = fmt.gop if len(frames) > fmt.gop else 0
    pictures = decode(frames[later:])
    assert len(pictures) == len(frames) - later
    assert {(p.width, p.height) for p in pictures} == {(fmt.width, fmt.height)}
