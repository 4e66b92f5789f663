"""Fake ``picamera2.encoders``: ``Encoder`` and a software ``H264Encoder`` (libx264 via PyAV).

Shapes kept from picamera2: ``H264Encoder(bitrate, repeat, iperiod, framerate, ...)``; the
camera calls ``encode(stream, request)`` from its own thread; the encoder calls
``outputframe(frame, keyframe, timestamp, packet, audio)`` on every output with ``timestamp``
in microseconds *since the encoder's first frame* (the sensor timestamp, CLOCK_MONOTONIC
nanoseconds, divided by 1000, minus the first one, which stays in ``firsttimestamp``).
``repeat=True`` puts SPS/PPS in front of every IDR; ``iperiod`` is the keyframe interval.
The fake encodes in the camera thread, as picamera2's libav encoder does on a Pi 5.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av

from ._world import fake_world
from .outputs import Output

if TYPE_CHECKING:
    from .picamera2 import CompletedRequest

__all__ = ["Encoder", "H264Encoder", "Quality"]

# picamera2's stream formats and the pixel formats they are to libav.
AV_PIXEL_FORMATS = {
    "YUV420": "yuv420p",
    "BGR888": "rgb24",
    "RGB888": "bgr24",
    "XBGR8888": "rgba",
    "XRGB8888": "bgra",
}


class Quality(Enum):
    """Used to pick a bitrate when none is given."""

    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    """Base class: outputs, start/stop, and the sensor-timestamp arithmetic."""

    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.stride = 0
        self.format: str | None = None
        self.name: str | None = None
        self.framerate: float | None = None
        self.firsttimestamp: int | None = None
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()
        self._output_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self) -> Output | list[Output]:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Output | list[Output]) -> None:
        outputs = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in outputs):
            raise RuntimeError("Must pass Output")
        self._output = outputs

    def encode(self, stream: str, request: CompletedRequest) -> None:
        """Encode one captured frame (called from the camera thread)."""
        with self._lock:
            if not self._running:
                return
            self._encode(stream, request)

    def start(self, quality: Quality | None = None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self._setup(quality)
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        """Hand one frame to every output, in the calling (encoder) thread."""
        with self._output_lock:
            for out in self._output:
                t0 = time.monotonic()
                out.outputframe(frame, keyframe, timestamp, packet, audio)
                fake_world._output_call(time.monotonic() - t0)

    def _timestamp(self, request: CompletedRequest) -> int:
        sensor_us = int(request.get_metadata()["SensorTimestamp"] // 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = sensor_us
            return 0
        return sensor_us - self.firsttimestamp

    def _setup(self, quality: Quality | None) -> None:
        pass

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass

    def _encode(self, stream: str, request: CompletedRequest) -> None:
        raise NotImplementedError


class H264Encoder(Encoder):
    """H.264 to Annex B access units, one ``outputframe`` per frame."""

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp = qp
        self.profile = profile
        self._enable_framerate = enable_sps_framerate
        self._codec: av.VideoCodecContext | None = None

    def _setup(self, quality: Quality | None) -> None:
        if quality is not None or (self.bitrate is None and self.qp is None):
            # Scaled from a nominal 6 Mbit/s at 1080p30, like the real table's middle row.
            scale = self.width * self.height * (self.framerate or 30) / (1920 * 1080 * 30)
            self.bitrate = max(50_000, int(6_000_000 * scale))

    def _start(self) -> None:
        for out in self._output:
            out._add_stream("video", "h264", width=self.width, height=self.height)
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = self.width, self.height, "yuv420p"
        codec.time_base = Fraction(1, 1_000_000)  # pts are the microsecond timestamps
        codec.framerate = Fraction(self.framerate or 30).limit_denominator(1001)
        if self.bitrate is not None:
            codec.bit_rate = self.bitrate
        codec.gop_size = self.iperiod or (1 << 31) - 1
        codec.max_b_frames = 0
        codec.thread_count = 1
        if not self.repeat:
            # A global header takes SPS/PPS out of the stream: only the first IDR decodes.
            codec.flags |= av.codec.context.Flags.global_header
        # No scene-cut IDRs: keyframes exactly every `iperiod` frames, which the tests assert.
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "scenecut=0"}
        codec.open()
        self._codec = codec

    def _encode(self, stream: str, request: CompletedRequest) -> None:
        codec = self._codec
        if codec is None:
            return
        timestamp_us = self._timestamp(request)
        pix_fmt = AV_PIXEL_FORMATS[self.format or "YUV420"]
        frame = av.VideoFrame.from_ndarray(request.make_array(stream), format=pix_fmt)
        if pix_fmt != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = timestamp_us
        for packet in codec.encode(frame):
            self._output_packet(packet)

    def _stop(self) -> None:
        codec, self._codec = self._codec, None
        if codec is not None:
            # Like the libav encoder: what is still inside is flushed from the stopping thread.
            for packet in codec.encode(None):
                self._output_packet(packet)

    def _output_packet(self, packet: av.Packet[Any]) -> None:
        self.outputframe(bytes(packet), packet.is_keyframe, timestamp=packet.pts, packet=packet)
