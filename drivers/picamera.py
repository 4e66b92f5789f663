"""The real camera: picamera2 (libcamera) and its H.264 encoder behind the ``Camera`` protocol.

Why it is built this way:

- picamera2 and libcamera come from a Pi's OS image, not from PyPI: they are imported only
  when the sensor is turned on, so importing this module works anywhere.
- picamera2 calls block (libcamera ioctls, joins of its threads): start and stop run in
  daemon threads of their own, bounded by timeouts, so a wedged libcamera becomes a clear
  error instead of a hung daemon, and cannot keep the process from exiting either.
- picamera2 calls ``Output.outputframe`` from its encoder thread, which must never wait for
  the daemon: a frame is counted against a bounded backlog and handed to the event loop with
  ``call_soon_threadsafe``; with the backlog full it is dropped and counted.
- Each ``async with`` opens a fresh ``Picamera2``: after a stall no libcamera state is
  trusted, and re-entering is the restart. ``repeat=True`` puts SPS/PPS before every IDR, so
  each segment cut at a keyframe decodes on its own.
- Timestamps: picamera2 passes outputs microseconds since the encoder's first frame and keeps
  that frame's sensor time in ``encoder.firsttimestamp``; libcamera's SensorTimestamp is
  CLOCK_MONOTONIC, ``time.monotonic``'s clock. Their sum is the frame's time in the board
  clock's domain; a session whose first frame is over 1 s off the ``monotonic`` callable is
  rebased (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

from bodycam.drivers.interfaces import CameraError, EncodedFrame, VideoFormat

__all__ = ["PiCamera", "PiCameraStats"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_REBASE_THRESHOLD_US = 1_000_000
_WARN_INTERVAL_S = 10.0
_INSTALL_HINT = (
    "on a Raspberry Pi it comes from the OS (`sudo apt install python3-picamera2`) and the "
    "daemon's venv must be created with --system-site-packages"
)


@dataclasses.dataclass(frozen=True, slots=True)
class PiCameraStats:
    """Counters over the camera object's lifetime (a snapshot)."""

    sessions: int = 0  # times the sensor was turned on
    restarts: int = 0  # sessions started after a stall or a failed start
    start_failures: int = 0
    frames_delivered: int = 0  # yielded by frames()
    frames_dropped: int = 0  # backlog full: the consumer was too slow
    stalls: int = 0  # no frame within stall_timeout_s
    rebases: int = 0  # sessions whose sensor clock was not the monotonic callable's
    stop_timeouts: int = 0  # libcamera did not stop in time and was abandoned


@dataclasses.dataclass(eq=False)
class _Session:
    """One "sensor on" period. ``closed``, ``backlog`` and ``offset_us`` are under the lock."""

    number: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EncodedFrame | BaseException | None]  # None: the session is over
    picam: Any = None  # set once recording has started, taken by the shutdown
    closed: bool = False  # late callbacks from picamera2 are ignored from then on
    backlog: int = 0  # frames posted to the loop and not yet taken by frames()
    offset_us: int | None = None


@functools.cache
def _output_class(base: Any) -> Any:
    """A ``picamera2.outputs.Output`` subclass (the base class only exists once imported)."""

    class FrameOutput(base):  # type: ignore[misc]
        def __init__(self, sink: Callable[[Any, bool, int | None], None]) -> None:
            super().__init__()
            self._sink = sink

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if not audio and frame is not None:
                self._sink(frame, bool(keyframe), timestamp)

    return FrameOutput


def _describe(exc: BaseException) -> str:
    """The message with its causes: picamera2 wraps the useful part in a generic one."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 4:
        parts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return " <- ".join(parts)


class PiCamera:
    """A camera module on the CSI connector, through picamera2; implements ``Camera``.

    Args:
        video_format: Size, rate, bitrate and keyframe interval (config ``video.*``).
        camera_index: Which camera libcamera lists (``camera.index``).
        stall_timeout_s: No frame for this long is a stall (``camera.stall_timeout_s``);
            default: 2 s or 5 frame intervals, whichever is longer.
        queue_seconds: Frames the consumer may fall behind before frames are dropped.
        hflip, vflip: Mirror the picture (``camera.hflip``, ``camera.vflip``).
        stop_timeout_s: How long stopping libcamera may take before it is abandoned.
        monotonic: The board clock; frame timestamps are in its domain.
    """

    def __init__(
        self,
        video_format: VideoFormat,
        *,
        camera_index: int = 0,
        stall_timeout_s: float | None = None,
        queue_seconds: float = 2.0,
        hflip: bool = False,
        vflip: bool = False,
        stop_timeout_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        stall_s = max(2.0, 5 / video_format.fps) if stall_timeout_s is None else stall_timeout_s
        if min(stall_s, queue_seconds, stop_timeout_s) <= 0:
            raise ValueError("camera: stall_timeout_s, queue_seconds, stop_timeout_s must be > 0")
        self._format = video_format
        self._index = camera_index
        self._where = f"camera (camera.index = {camera_index})"
        self._stall_timeout_s = stall_s
        self._queue_max = max(1, round(queue_seconds * video_format.fps))
        self._flips = (hflip, vflip)
        self._stop_timeout_s = stop_timeout_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stats = PiCameraStats()
        self._session: _Session | None = None
        self._sessions = 0
        self._faulted = False
        self._last_ts: int | None = None
        self._last_drop_warning: float | None = None

    @property
    def video_format(self) -> VideoFormat:
        """What the encoder produces."""
        return self._format

    @property
    def stats(self) -> PiCameraStats:
        """A snapshot of the lifetime counters."""
        with self._lock:
            return self._stats

    def _count(self, **increments: int) -> PiCameraStats:
        with self._lock:
            return self._count_locked(**increments)

    def _count_locked(self, **increments: int) -> PiCameraStats:
        values = {k: getattr(self._stats, k) + n for k, n in increments.items()}
        self._stats = dataclasses.replace(self._stats, **values)
        return self._stats

    # --- lifecycle (event loop) ----------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError(f"{self._where}: already on")
        self._sessions += 1
        session = _Session(self._sessions, asyncio.get_running_loop(), asyncio.Queue())
        try:
            started = await _in_thread(
                f"picamera-start-{session.number}", lambda: self._start(session), _START_TIMEOUT_S
            )
        except CameraError:
            self._faulted = True
            self._count(start_failures=1)
            raise
        except BaseException:  # cancelled: let go of whatever the start got to
            await self._shutdown(session)
            raise
        if not started:
            with self._lock:
                session.closed = True  # the start thread releases the camera if it ever returns
            self._faulted = True
            self._count(start_failures=1)
            raise CameraError(
                f"{self._where}: libcamera did not start the sensor within {_START_TIMEOUT_S:g} s"
            )
        self._session = session
        self._count(sessions=1, restarts=1 if self._faulted else 0)
        self._faulted = False
        logger.info("%s: sensor on (session %d, %s)", self._where, session.number, self._format)
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._shutdown(session)
            logger.info("%s: sensor off (session %d)", self._where, session.number)

    async def _shutdown(self, session: _Session) -> None:
        with self._lock:
            picam, session.picam = session.picam, None
        try:
            if picam is not None:
                stopped = await _in_thread(
                    f"picamera-stop-{session.number}",
                    lambda: self._release(picam),
                    self._stop_timeout_s,
                )
                if not stopped:
                    self._count(stop_timeouts=1)
                    logger.error(
                        "%s: libcamera did not stop within %g s; giving up on it (frames it "
                        "still delivers are ignored)",
                        self._where,
                        self._stop_timeout_s,
                    )
        finally:
            with self._lock:
                session.closed = True
            session.queue.put_nowait(None)

    async def frames(self) -> AsyncIterator[EncodedFrame]:
        """Yield encoded frames until the camera is stopped.

        Raises:
            CameraError: No frame within ``stall_timeout_s``, or the hand-over failed.
            RuntimeError: The camera is not on.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"{self._where}: frames() called while the sensor is off")
        while True:
            try:
                async with asyncio.timeout(self._stall_timeout_s):
                    item = await session.queue.get()
            except TimeoutError:
                self._faulted = True
                self._count(stalls=1)
                raise CameraError(
                    f"{self._where}: sensor stopped delivering frames for "
                    f"{self._stall_timeout_s:g} s"
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                self._faulted = True
                raise CameraError(f"{self._where}: frame hand-over failed: {item!r}") from item
            with self._lock:
                session.backlog -= 1
                self._count_locked(frames_delivered=1)
            yield item

    # --- picamera2 (worker threads) ------------------------------------------------------

    def _start(self, session: _Session) -> None:
        try:
            from libcamera import Transform
            from picamera2 import Picamera2
            from picamera2.encoders import H264Encoder
            from picamera2.outputs import Output
        except Exception as exc:
            raise CameraError(
                f"{self._where}: picamera2 cannot be imported ({_describe(exc)}); {_INSTALL_HINT}"
            ) from exc
        try:
            attached = len(Picamera2.global_camera_info())
        except Exception as exc:
            raise CameraError(
                f"{self._where}: libcamera cannot list cameras: {_describe(exc)}"
            ) from exc
        if not 0 <= self._index < attached:
            raise CameraError(
                f"{self._where}: no camera module detected: check the ribbon cable (both ends, "
                f"contacts the right way round) and that the camera is enabled in config.txt "
                f"(libcamera sees {attached} camera(s))"
            )
        fmt, picam = self._format, None
        step, keys = "open the camera", "camera.index"
        try:
            picam = Picamera2(self._index)
            step, keys = "configure the sensor", "video.width, video.height, video.fps"
            frame_us = round(1_000_000 / fmt.fps)
            hflip, vflip = self._flips
            config = picam.create_video_configuration(
                # YUV420 is what the encoder consumes: no conversion, half XBGR's memory.
                main={"size": (fmt.width, fmt.height), "format": "YUV420"},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                transform=Transform(hflip=hflip, vflip=vflip),
            )
            picam.configure(config)
            step, keys = "set up the H.264 encoder", "video.bitrate, video.gop, video.fps"
            encoder = H264Encoder(
                bitrate=fmt.bitrate, repeat=True, iperiod=fmt.gop, framerate=fmt.fps
            )
            sink = functools.partial(self._on_frame, session, encoder)
            step, keys = "start recording", "camera.index, video.*"
            picam.start_recording(encoder, _output_class(Output)(sink))
        except Exception as exc:
            if picam is not None:
                self._release(picam)
            raise CameraError(
                f"{self._where}: cannot {step} (check {keys}): {_describe(exc)}"
            ) from exc
        with self._lock:
            abandoned = session.closed
            if not abandoned:
                session.picam = picam
        if abandoned:
            logger.warning("%s: the sensor started too late; releasing it", self._where)
            self._release(picam)

    def _release(self, picam: Any) -> None:
        """Stop and close; never raises (what fails is logged: the camera is given up anyway)."""
        for name in ("stop_recording", "close"):
            try:
                getattr(picam, name)()
            except Exception as exc:
                logger.error("%s: %s() failed: %s", self._where, name, _describe(exc))

    def _on_frame(self, session: _Session, encoder: Any, frame: Any, key: bool, ts: Any) -> None:
        """``outputframe`` from picamera2's encoder thread: never blocks, never raises."""
        item: EncodedFrame | BaseException
        try:
            data = bytes(frame)
            with self._lock:
                if session.closed:
                    return
                if session.backlog >= self._queue_max:
                    stats = self._count_locked(frames_dropped=1)
                    self._warn_drop(stats.frames_dropped)
                    return
                session.backlog += 1
                item = EncodedFrame(data, key, self._timestamp_locked(session, encoder, ts))
        except Exception as exc:
            logger.exception("%s: frame hand-over failed", self._where)
            item = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to take it
            session.loop.call_soon_threadsafe(session.queue.put_nowait, item)

    def _timestamp_locked(self, session: _Session, encoder: Any, ts: Any) -> int:
        first = getattr(encoder, "firsttimestamp", None)
        if ts is None:
            sensor_us = round(self._monotonic() * 1e6)  # no sensor time: arrival time
        elif isinstance(first, int):
            sensor_us = first + int(ts)
        else:
            sensor_us = int(ts)
        if session.offset_us is None:
            now_us = round(self._monotonic() * 1e6)
            session.offset_us = 0
            if abs(sensor_us - now_us) > _REBASE_THRESHOLD_US:
                session.offset_us = now_us - sensor_us
                stats = self._count_locked(rebases=1)
                logger.log(
                    logging.WARNING if stats.rebases == 1 else logging.DEBUG,
                    "%s: sensor timestamps are %.3f s off the board clock; rebased",
                    self._where,
                    (now_us - sensor_us) / 1e6,
                )
        stamp = sensor_us + session.offset_us
        if self._last_ts is not None and stamp <= self._last_ts:
            stamp = self._last_ts + 1  # strictly increasing, across sessions too
        self._last_ts = stamp
        return stamp

    def _warn_drop(self, total: int) -> None:
        now = time.monotonic()
        if self._last_drop_warning is None or now - self._last_drop_warning >= _WARN_INTERVAL_S:
            self._last_drop_warning = now
            logger.warning("%s: consumer too slow, frame dropped (%d so far)", self._where, total)


async def _in_thread(name: str, work: Callable[[], None], limit_s: float) -> bool:
    """Run ``work`` in a daemon thread; False if it did not finish within ``limit_s``.

    Its exception is raised here. If the caller is cancelled meanwhile, this still waits for
    the thread (up to ``limit_s``) before re-raising, so nothing is left half-done unnoticed.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            error: BaseException | None = exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    cancelled = False
    deadline = loop.time() + limit_s
    while not done.done() and (remaining := deadline - loop.time()) > 0:
        try:
            await asyncio.wait([done], timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    if not done.done():
        done.cancel()  # a late result is dropped
    elif cancelled and done.exception() is not None:
        logger.debug("%s failed while cancelled: %s", name, done.exception())
    if cancelled:
        raise asyncio.CancelledError
    if done.cancelled():
        return False
    done.result()
    return True
