"""The simulated sensor: a synthetic scene encoded to real H.264, paced by the simulated clock.

It behaves like the real camera (picamera2 with its H264Encoder): ``async with camera`` turns
the sensor on and starts a dedicated encoder thread; frames come out at the configured rate in
the clock's time, each session starts with a fresh encoder (so its first frame is an IDR with
SPS/PPS in band), and the sensor never waits for a slow consumer: a full hand-over queue
drops frames, as a real one would. Every frame carries a counter that keeps increasing for the
camera's lifetime, burned into the picture (see :mod:`bodycam.sim.scene`), so a frame lost
anywhere downstream is visible by decoding the recording.

Fault injection: ``stall_after_s`` (config ``sim.camera_stall_after_s``) or
:meth:`SimCamera.inject_stall` make the sensor go silent, and :meth:`SimCamera.frames` then
raises :class:`CameraError` after ``stall_timeout_s``, as the real driver does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any, Self

import av
import numpy as np

from bodycam.drivers.interfaces import CameraError, EncodedFrame, VideoFormat
from bodycam.sim.clock import SimClock
from bodycam.sim.scene import SceneRenderer

__all__ = ["ENCODER_THREAD_PREFIX", "CameraStats", "SimCamera"]

logger = logging.getLogger(__name__)

ENCODER_THREAD_PREFIX = "sim-camera-encoder"
# At most one warning of a kind per this many seconds of clock time, and (so a simulation
# run at 1000x does not flood the journal) per this many seconds of the clock's real time.
_WARN_INTERVAL_S = 10.0
_WARN_INTERVAL_REAL_S = 2.0
_thread_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True, slots=True)
class CameraStats:
    """Counters over the camera object's lifetime (a snapshot)."""

    sessions: int = 0
    frames_produced: int = 0  # encoded by the sensor
    frames_delivered: int = 0  # yielded by frames()
    frames_dropped: int = 0  # hand-over queue full: the consumer was too slow
    frames_late: int = 0  # encoded more than a frame interval behind the schedule
    stalls: int = 0  # sessions in which the sensor went silent (fault injection)


class _RateLimitedWarning:
    """Logs a warning at most once per interval of clock time, counting what it held back."""

    def __init__(self, clock: SimClock, message: str) -> None:
        self._clock = clock
        self._message = message
        self._interval = max(_WARN_INTERVAL_S, clock.speed * _WARN_INTERVAL_REAL_S)
        self._last: float | None = None
        self._held = 0

    def __call__(self, total: int) -> None:
        now = self._clock.monotonic()
        if self._last is not None and now - self._last < self._interval:
            self._held += 1
            return
        logger.warning("%s (%d so far, %d warnings suppressed)", self._message, total, self._held)
        self._last, self._held = now, 0


class _End:
    """Queue marker: the session's encoder thread has finished."""


_END = _End()
_QueueItem = EncodedFrame | _End | BaseException


@dataclasses.dataclass(eq=False)
class _Session:
    """One "sensor on" period: its thread, its queue and the events joining the two sides."""

    number: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_QueueItem]
    ready: asyncio.Future[None]
    done: asyncio.Future[None]
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    stall: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    t_start: float = 0.0


def _x264_threads(video_format: VideoFormat) -> int:
    # Two cores on the target class of machine: one thread keeps small formats cheap (slice
    # threading costs more than it gains there); 720p and up use both cores.
    return 2 if video_format.width * video_format.height >= 1280 * 720 else 1


class SimCamera:
    """A simulated sensor and H.264 encoder; implements ``bodycam.drivers.interfaces.Camera``."""

    def __init__(
        self,
        video_format: VideoFormat,
        clock: SimClock,
        *,
        stall_after_s: float | None = None,
        stall_timeout_s: float | None = None,
        queue_seconds: float = 2.0,
    ) -> None:
        if stall_after_s is not None and stall_after_s <= 0:
            raise ValueError("sim.camera_stall_after_s must be positive")
        if queue_seconds <= 0:
            raise ValueError("camera: queue_seconds must be positive")
        if stall_timeout_s is not None and stall_timeout_s <= 0:
            raise ValueError("camera: stall_timeout_s must be positive")
        self._format = video_format
        self._clock = clock
        # Frames due before `stall_after_s` are delivered (rounded so 0.5 s at 30 fps is 15).
        self._stall_after_frames = (
            None if stall_after_s is None else math.ceil(round(stall_after_s * video_format.fps, 6))
        )
        interval = 1.0 / video_format.fps
        self._stall_timeout_s = (
            stall_timeout_s if stall_timeout_s is not None else max(1.0, 5 * interval)
        )
        self._queue_max = max(1, round(queue_seconds * video_format.fps))
        self._renderer = SceneRenderer(video_format.width, video_format.height)
        self._counter = 0  # burned into the picture; only the encoder thread advances it
        self._stats = CameraStats()
        self._stats_lock = threading.Lock()
        self._session: _Session | None = None
        self._sessions = 0
        self._warn_drop = _RateLimitedWarning(
            clock, "camera: consumer too slow, hand-over queue full, frame dropped"
        )
        self._warn_late = _RateLimitedWarning(clock, "camera: encoder behind schedule, frames late")

    @property
    def video_format(self) -> VideoFormat:
        """What the encoder produces."""
        return self._format

    @property
    def stats(self) -> CameraStats:
        """A snapshot of the lifetime counters."""
        with self._stats_lock:
            return self._stats

    def _count(self, **increments: int) -> CameraStats:
        with self._stats_lock:
            values = {k: getattr(self._stats, k) + n for k, n in increments.items()}
            self._stats = dataclasses.replace(self._stats, **values)
            return self._stats

    def inject_stall(self) -> None:
        """Make the sensor stop delivering frames from now until the next session."""
        session = self._session
        if session is None:
            logger.debug("camera: inject_stall() while the sensor is off: nothing to stall")
            return
        logger.info("camera: stall injected")
        session.stall.set()

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("camera: already on")
        loop = asyncio.get_running_loop()
        self._sessions += 1
        session = _Session(
            number=self._sessions,
            loop=loop,
            queue=asyncio.Queue(),
            ready=loop.create_future(),
            done=loop.create_future(),
        )
        session.thread = threading.Thread(
            target=self._run,
            args=(session,),
            name=f"{ENCODER_THREAD_PREFIX}-{next(_thread_ids)}",
            daemon=True,  # never keeps the interpreter alive; __aexit__ joins it anyway
        )
        self._session = session
        session.thread.start()
        try:
            await session.ready
        except BaseException as exc:
            await self._stop(session)
            if isinstance(exc, Exception):
                raise CameraError(f"camera: simulated encoder failed to start: {exc}") from exc
            raise
        self._count(sessions=1)
        logger.info(
            "camera: sensor on (session %d, %dx%d@%d, %d bit/s)",
            session.number,
            self._format.width,
            self._format.height,
            self._format.fps,
            self._format.bitrate,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        session = self._session
        if session is None:
            return
        await self._stop(session)
        logger.info("camera: sensor off (session %d)", session.number)

    async def _stop(self, session: _Session) -> None:
        session.stop.set()
        try:
            # The thread resolves `done` as its very last act, so the join below is immediate.
            await asyncio.shield(session.done)
        finally:
            if session.thread is not None:
                session.thread.join()
            self._session = None

    async def frames(self) -> AsyncIterator[EncodedFrame]:
        """Yield encoded frames until the camera is stopped.

        Raises:
            CameraError: No frame arrived within ``stall_timeout_s`` of clock time, or the
                encoder thread failed (the cause is chained).
            RuntimeError: The camera is not on.
        """
        session = self._session
        if session is None:
            raise RuntimeError("camera: frames() called while the sensor is off")
        timeout = self._clock.wall_seconds(self._stall_timeout_s)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await session.queue.get()
            except TimeoutError:
                raise CameraError(
                    f"camera: sensor stopped delivering frames for {self._stall_timeout_s:g} s"
                ) from None
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise CameraError(f"camera: simulated encoder failed: {item!r}") from item
            self._count(frames_delivered=1)
            yield item

    # --- event-loop side of the hand-over (called through call_soon_threadsafe) ----------

    def _deliver(self, session: _Session, frame: EncodedFrame) -> None:
        if session.queue.qsize() >= self._queue_max:
            stats = self._count(frames_dropped=1)
            self._warn_drop(stats.frames_dropped)
            return
        session.queue.put_nowait(frame)

    @staticmethod
    def _started(session: _Session) -> None:
        if not session.ready.done():
            session.ready.set_result(None)

    @staticmethod
    def _finish(session: _Session, error: BaseException | None) -> None:
        if not session.ready.done():
            # Failed (or stopped) before the first frame: __aenter__ reports it.
            session.ready.set_exception(error or CameraError("camera: encoder stopped early"))
        elif error is not None:
            session.queue.put_nowait(error)
        session.queue.put_nowait(_END)
        if not session.done.done():
            session.done.set_result(None)

    # --- encoder thread ------------------------------------------------------------------

    def _post(self, session: _Session, callback: Callable[..., None], *args: Any) -> None:
        try:
            session.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            # The loop is closed: nobody is left to hand frames to.
            session.stop.set()

    def _open_encoder(self) -> av.VideoCodecContext:
        fmt = self._format
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = fmt.width, fmt.height, "yuv420p"
        codec.time_base = Fraction(1, fmt.fps)
        codec.framerate = Fraction(fmt.fps, 1)
        codec.bit_rate = fmt.bitrate
        codec.gop_size = fmt.gop
        codec.max_b_frames = 0
        codec.thread_count = _x264_threads(fmt)
        # No global header is requested, so libx264 repeats SPS/PPS before every IDR; no
        # scene-cut IDRs, so keyframes come exactly every `gop` frames, as on the real camera.
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": "scenecut=0",
        }
        codec.open()
        return codec

    def _run(self, session: _Session) -> None:
        error: BaseException | None = None
        codec: av.VideoCodecContext | None = None
        try:
            codec = self._open_encoder()
            session.t_start = self._clock.monotonic()
            self._post(session, self._started, session)
            self._encode_loop(session, codec)
            for packet in codec.encode(None):
                self._post_packet(session, packet)
        except Exception as exc:
            logger.exception("camera: simulated encoder thread failed")
            error = exc
        finally:
            codec = None  # x264 joins its own threads here, before we report done
            self._post(session, self._finish, session, error)

    def _encode_loop(self, session: _Session, codec: av.VideoCodecContext) -> None:
        fmt, clock = self._format, self._clock
        interval = 1.0 / fmt.fps
        buffer = np.empty((fmt.height * 3 // 2, fmt.width), dtype=np.uint8)
        stalled = False
        n = 0
        while not session.stop.is_set():
            t_n = session.t_start + n * interval
            if not stalled and (
                session.stall.is_set()
                or (self._stall_after_frames is not None and n >= self._stall_after_frames)
            ):
                stalled = True
                self._count(stalls=1)
                logger.warning("camera: sensor stalled (fault injection), no more frames")
            if stalled:
                # Sleep in frame-sized steps so a stop is noticed within one interval.
                clock.sleep_blocking(interval)
                continue
            now = clock.monotonic()
            if now < t_n:
                clock.sleep_blocking(t_n - now)
                continue  # re-check stop and stall after the wait
            if now - t_n > interval:
                stats = self._count(frames_late=1)
                self._warn_late(stats.frames_late)
            # The wall-clock time at which frame n was due, not when we got round to it.
            when = clock.utc_now() - dt.timedelta(seconds=now - t_n)
            self._renderer.render(self._counter, when, out=buffer)
            frame = av.VideoFrame.from_numpy_buffer(buffer, format="yuv420p")
            frame.pts = n
            self._counter += 1
            self._count(frames_produced=1)
            for packet in codec.encode(frame):
                self._post_packet(session, packet)
            n += 1

    def _post_packet(self, session: _Session, packet: av.Packet[Any]) -> None:
        pts = packet.pts if packet.pts is not None else 0
        t_n = session.t_start + pts / self._format.fps
        frame = EncodedFrame(
            data=bytes(packet), keyframe=packet.is_keyframe, timestamp_us=round(t_n * 1e6)
        )
        self._post(session, self._deliver, session, frame)
