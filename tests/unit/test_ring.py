"""The pre-event ring: seconds not frames, always starting at a keyframe, bounded."""

import pytest

from bodycam.daemon.ring import PreEventRing
from bodycam.drivers.interfaces import EncodedFrame

FPS = 30
GOP = 30
FRAME_US = 1_000_000 // FPS


def frames(count: int, *, start: int = 0, gop: int = GOP, size: int = 1000) -> list[EncodedFrame]:
    return [
        EncodedFrame(bytes(size), (i % gop) == 0, (start + i) * FRAME_US)
        for i in range(start, start + count)
    ]


@pytest.mark.parametrize("seconds", [0.0, 1.0, 2.5, 10.0, 30.0])
def test_holds_configured_seconds_to_one_gop(seconds: float) -> None:
    ring = PreEventRing(seconds, max_bytes=10**9)
    for frame in frames(FPS * 40):
        ring.push(frame)
    held = ring.drain()
    assert held[0].keyframe
    newest = held[-1].timestamp_us
    span_s = (newest - held[0].timestamp_us) / 1e6
    # At least the configured span, and never more than one GOP beyond it.
    assert span_s >= seconds - 1e-6
    assert span_s < seconds + GOP / FPS


def test_starts_at_keyframe_even_when_stream_starts_mid_gop() -> None:
    ring = PreEventRing(5.0, max_bytes=10**9)
    for frame in frames(100, start=7):  # first frames are not keyframes
        ring.push(frame)
    held = ring.drain()
    assert held[0].keyframe
    assert all(f.timestamp_us > 0 for f in held)


def test_zero_seconds_keeps_only_current_gop() -> None:
    ring = PreEventRing(0, max_bytes=10**9)
    for frame in frames(95):
        ring.push(frame)
    held = ring.drain()
    assert len(held) == 95 - 90
    assert held[0].keyframe


def test_byte_cap_bounds_memory_but_keeps_a_whole_gop() -> None:
    ring = PreEventRing(30.0, max_bytes=50_000)
    for frame in frames(FPS * 10, size=1000):
        ring.push(frame)
        assert ring.nbytes <= max(50_000, GOP * 1000)
    assert ring.cap_hits > 0
    held = ring.drain()
    assert held[0].keyframe


def test_drain_empties_and_clear_forgets() -> None:
    ring = PreEventRing(2.0, max_bytes=10**9)
    for frame in frames(90):
        ring.push(frame)
    assert ring.frame_count > 0
    assert ring.duration_s > 0
    ring.drain()
    assert ring.frame_count == 0
    assert ring.nbytes == 0
    for frame in frames(90):
        ring.push(frame)
    ring.clear()
    assert ring.drain() == []
