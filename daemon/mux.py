"""Encoded H.264 frames into MPEG-TS bytes, one frame at a time, with PyAV's muxer.

Each segment gets its own muxer, so every segment starts with PAT/PMT and a keyframe and
plays on its own; timestamps run on from the clip's first frame, so segments concatenate
into the whole clip. The muxer flushes after every packet, which is what lets each frame's
TS packets become one encrypted record on disk as soon as the frame arrives.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from bodycam.drivers.interfaces import EncodedFrame, VideoFormat

TS_TIME_BASE = Fraction(1, 90_000)


class _ChunkSink(io.RawIOBase):
    """A write-only file object that collects what the muxer writes."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


class SegmentMuxer:
    """MPEG-TS for one segment; ``mux`` returns the bytes for one frame."""

    def __init__(self, video: VideoFormat, *, origin_us: int) -> None:
        self._origin_us = origin_us
        self._sink = _ChunkSink()
        self._container = av.open(self._sink, "w", format="mpegts", options={"flush_packets": "1"})
        self._stream = self._container.add_stream("h264", rate=video.fps)
        self._stream.width = video.width
        self._stream.height = video.height
        self._stream.time_base = TS_TIME_BASE
        self._closed = False
        self._last_pts = -1

    def _pts(self, timestamp_us: int) -> int:
        return (timestamp_us - self._origin_us) * 9 // 100

    def mux(self, frame: EncodedFrame) -> bytes:
        pts = self._pts(frame.timestamp_us)
        if pts <= self._last_pts:
            # A sensor timestamp that does not advance would make the muxer refuse the packet;
            # keep the frame (it is evidence) one tick after its predecessor.
            pts = self._last_pts + 1
        self._last_pts = pts
        packet = av.Packet(frame.data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = TS_TIME_BASE
        packet.stream = self._stream
        packet.is_keyframe = frame.keyframe
        self._container.mux(packet)
        return self._sink.take()

    def close(self) -> bytes:
        """Finish the segment; returns any bytes the muxer still held."""
        if self._closed:
            return b""
        self._closed = True
        self._container.close()
        return self._sink.take()
