"""A sensor that skips encoding: frames of the right size and cadence, no picture.

For measuring the daemon without the encoder's cost (CPU share, memory) and for simulating
thousands of cameras. Each frame is an Annex B access unit (an IDR with SPS/PPS at every
GOP start, P slices otherwise) sized so the stream runs at the
configured bitrate, with keyframes four times the size of a P frame as real encoders do.
The NAL headers are real (SPS, PPS, IDR and P slice types) but the payloads are random
bytes: the stream has the shape of H.264 for the daemon's routing, cutting and muxing, and
does not decode to a picture. It paces, stalls and stops like ``SimCamera``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Self

from bodycam.drivers.interfaces import CameraError, EncodedFrame, VideoFormat
from bodycam.sim.clock import SimClock

_SPS_PPS = bytes.fromhex(
    "0000000167640028acd940780227e5c0440000030004000000f03c60c658"
) + bytes.fromhex("0000000168ebe3cb22c0")
_IDR = bytes.fromhex("0000000165")
_P = bytes.fromhex("0000000141")
_KEYFRAME_WEIGHT = 4


class SyntheticCamera:
    """Implements the Camera protocol without an encoder."""

    def __init__(self, video_format: VideoFormat, clock: SimClock) -> None:
        self._format = video_format
        self._clock = clock
        gop = video_format.gop
        bytes_per_gop = video_format.bitrate / 8 * gop / video_format.fps
        p_size = int(bytes_per_gop / (gop - 1 + _KEYFRAME_WEIGHT))
        # Random payloads, made once: the daemon must not be able to compress or dedupe them.
        self._p_payload = os.urandom(max(16, p_size - len(_P)))
        key_size = p_size * _KEYFRAME_WEIGHT - len(_SPS_PPS) - len(_IDR)
        self._key_payload = os.urandom(max(16, key_size))
        self._running = False
        self._stalled = False
        self.frames_produced = 0

    @property
    def video_format(self) -> VideoFormat:
        return self._format

    async def __aenter__(self) -> Self:
        self._running = True
        self._stalled = False
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False

    def inject_stall(self) -> None:
        self._stalled = True

    async def frames(self) -> AsyncIterator[EncodedFrame]:
        fmt, clock = self._format, self._clock
        t0 = clock.monotonic()
        n = 0
        while self._running:
            if self._stalled:
                await clock.sleep(max(1.0, 5 / fmt.fps))
                raise CameraError("camera: sensor stopped delivering frames for 1 s")
            due = t0 + n / fmt.fps
            delay = due - clock.monotonic()
            if delay > 0:
                await clock.sleep(delay)
            keyframe = n % fmt.gop == 0
            data = _SPS_PPS + _IDR + self._key_payload if keyframe else _P + self._p_payload
            self.frames_produced += 1
            yield EncodedFrame(data, keyframe, round(due * 1_000_000))
            n += 1
            if delay <= 0 and n % fmt.fps == 0:
                await asyncio.sleep(0)  # behind schedule: still let the loop breathe
