"""The pre-event buffer: the last N seconds of encoded video, always starting at a keyframe.

Held as whole GOPs so that eviction never leaves the buffer starting mid-GOP (undecodable).
Its length is in seconds of sensor time, not frames, and memory is bounded twice: by time
and by a byte cap that protects the device from an encoder that overshoots its bitrate.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from bodycam.drivers.interfaces import EncodedFrame

log = logging.getLogger(__name__)


@dataclass
class _Gop:
    frames: list[EncodedFrame] = field(default_factory=list)
    nbytes: int = 0

    @property
    def start_us(self) -> int:
        return self.frames[0].timestamp_us


class PreEventRing:
    """Keeps at least ``seconds`` of video (up to one GOP more) before the newest frame.

    With ``seconds == 0`` it keeps only the current GOP, so a recording still starts at the
    latest keyframe instead of waiting up to a GOP for the next one.
    """

    def __init__(self, seconds: float, *, max_bytes: int) -> None:
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._span_us = round(seconds * 1_000_000)
        self._max_bytes = max_bytes
        self._gops: deque[_Gop] = deque()
        self._nbytes = 0
        self._skipped_leading = 0
        self._cap_hits = 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def frame_count(self) -> int:
        return sum(len(gop.frames) for gop in self._gops)

    @property
    def duration_s(self) -> float:
        """Sensor time covered, from the first frame to the newest."""
        if not self._gops:
            return 0.0
        return (self._gops[-1].frames[-1].timestamp_us - self._gops[0].start_us) / 1e6

    @property
    def cap_hits(self) -> int:
        """How many GOPs the byte cap evicted early (non-zero means the bitrate overshot)."""
        return self._cap_hits

    def push(self, frame: EncodedFrame) -> None:
        if frame.keyframe:
            self._gops.append(_Gop())
        elif not self._gops:
            # Frames before the first keyframe cannot be decoded on their own.
            self._skipped_leading += 1
            return
        gop = self._gops[-1]
        gop.frames.append(frame)
        gop.nbytes += len(frame.data)
        self._nbytes += len(frame.data)
        self._evict(frame.timestamp_us)

    def _evict(self, newest_us: int) -> None:
        horizon = newest_us - self._span_us
        # Drop the oldest GOP while the next one alone still reaches back far enough.
        while len(self._gops) > 1 and self._gops[1].start_us <= horizon:
            self._drop_oldest()
        while len(self._gops) > 1 and self._nbytes > self._max_bytes:
            if self._cap_hits == 0:
                log.warning(
                    "pre-event buffer over its %d-byte cap: the encoder overshoots its bitrate",
                    self._max_bytes,
                )
            self._cap_hits += 1
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gop = self._gops.popleft()
        self._nbytes -= gop.nbytes

    def drain(self) -> list[EncodedFrame]:
        """Hand over everything buffered (oldest first, starting at a keyframe) and empty."""
        frames = [frame for gop in self._gops for frame in gop.frames]
        self.clear()
        return frames

    def clear(self) -> None:
        self._gops.clear()
        self._nbytes = 0
