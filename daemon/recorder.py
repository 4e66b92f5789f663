"""The recorder: pre-event ring, then clips of segments written by one writer thread.

The event loop only routes frames (ring or writer queue) so that the LED and buttons stay
responsive; muxing, encryption, writes and fsync happen in a single writer thread, which
keeps every clip's operations in order without locks. The writer cuts segments only at
keyframes and rolls a clip over to the next one at a keyframe, so no frame is lost between
clips. Whatever goes wrong in the writer is reported back to the loop as a notice; it never
dies silently and never discards a frame it has already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from bodycam.daemon.events import FailureReason
from bodycam.daemon.evidence.schema import ClockSource
from bodycam.daemon.evidence.writer import ClipInfo, ClipWriter, SealedSegment
from bodycam.daemon.mux import SegmentMuxer
from bodycam.daemon.ring import PreEventRing
from bodycam.drivers.interfaces import Clock, EncodedFrame, Storage, VideoFormat

log = logging.getLogger(__name__)

# Who set the clock, given whether it is set now (``ClockTrust.source``, via the dock hooks).
ClockSourceReader = Callable[[bool], ClockSource]


@dataclass(frozen=True)
class RecorderSettings:
    clips_dir: Path
    video: VideoFormat
    pre_event_s: float
    segment_s: float
    writer_queue_s: float
    device_id: str
    officer_id: str
    firmware_version: str
    signing_key: Ed25519PrivateKey
    force_key: X25519PublicKey


# Notices from the writer thread to the loop.
@dataclass(frozen=True)
class ClipOpened:
    clip_id: str
    directory: Path
    trigger: str


@dataclass(frozen=True)
class SegmentSealed:
    clip_id: str
    segment: SealedSegment


@dataclass(frozen=True)
class ClipFinished:
    clip_id: str
    reason: str
    manifest: Path | None


@dataclass(frozen=True)
class RecorderFault:
    reason: FailureReason
    detail: str


Notice = ClipOpened | SegmentSealed | ClipFinished | RecorderFault


@dataclass(frozen=True)
class _Open:
    trigger: str
    trigger_timestamp_us: int
    started_utc: dt.datetime
    frames: list[EncodedFrame]
    clock_set: bool
    clock_offset_s: float | None
    clock_source: ClockSource | None


@dataclass(frozen=True)
class _Close:
    reason: str


class _Rollover:
    pass


class _Stop:
    pass


_Command = _Open | _Close | _Rollover | _Stop | EncodedFrame


def utc_at(clock: Clock, monotonic_s: float) -> dt.datetime:
    """The wall-clock time of a moment in the clock's monotonic domain (a sensor timestamp)."""
    return clock.utc_now() - dt.timedelta(seconds=clock.monotonic() - monotonic_s)


class _SegmentState:
    def __init__(self, muxer: SegmentMuxer, first_us: int) -> None:
        self.muxer = muxer
        self.first_us = first_us
        self.last_us = first_us
        self.frames = 0


class _Writer(threading.Thread):
    """Owns the open clip; runs commands in order."""

    def __init__(
        self,
        settings: RecorderSettings,
        storage: Storage | None,
        clock: Clock,
        notify: Callable[[Notice], None],
    ) -> None:
        super().__init__(name="bodycam-writer", daemon=True)
        self.commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._s = settings
        self._storage = storage
        self._clock = clock
        self._notify = notify
        self._clip: ClipWriter | None = None
        self._info: ClipInfo | None = None
        self._clock_source: ClockSource | None = None  # of the open clip; a rollover keeps it
        self._segment: _SegmentState | None = None
        self._origin_us = 0
        self._trigger_us: int | None = None
        self._rollover_pending = False
        self._segment_us = round(settings.segment_s * 1_000_000)
        # A cut is due once a segment is this long; half a frame of slack absorbs jitter.
        self._cut_us = self._segment_us - settings.video.frame_interval_us // 2
        self.frames_written = 0
        self.frames_refused = 0

    def run(self) -> None:
        while True:
            command = self.commands.get()
            if isinstance(command, _Stop):
                self._safely(lambda: self._close("shutdown"))
                return
            self._safely(functools.partial(self._dispatch, command))

    def _dispatch(self, command: _Command) -> None:
        if isinstance(command, EncodedFrame):
            self._frame(command)
        elif isinstance(command, _Open):
            self._open(command)
        elif isinstance(command, _Close):
            self._close(command.reason)
        elif isinstance(command, _Rollover):
            self._rollover_pending = self._clip is not None

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            reason: FailureReason = "storage_full" if exc.errno == errno.ENOSPC else "write_error"
            detail = f"storage: {exc.strerror or exc} ({reason.replace('_', ' ')})"
            log.error("recording stopped: %s", detail)
            self._fail(reason, detail)
        except Exception as exc:
            log.exception("recording stopped by an internal error")
            self._fail("write_error", f"internal error: {exc}")

    def _fail(self, reason: FailureReason, detail: str) -> None:
        self._notify(RecorderFault(reason, detail))
        # Every fault ends with ClipFinished, so the state machine never waits for it.
        if self._clip is None:
            self._notify(ClipFinished("", reason, None))
            return
        # Seal what is on disk; if even that fails, recovery at the next start will.
        try:
            self._close(reason)
        except Exception:
            log.exception("could not close the clip after a fault; left for recovery")
            self._notify(ClipFinished(self._clip.clip_id, reason, None))
            self._clip = None
            self._segment = None

    def _open(self, command: _Open) -> None:
        if self._clip is not None:
            self._close("superseded")
        info = ClipInfo(
            device_id=self._s.device_id,
            officer_id=self._s.officer_id,
            firmware_version=self._s.firmware_version,
            trigger=command.trigger,
            pre_event_s=self._s.pre_event_s,
            video=self._s.video,
            clock_set=command.clock_set,
            clock_offset_s=command.clock_offset_s,
        )
        self._clock_source = command.clock_source
        self._start_clip(info, command.started_utc)
        self._trigger_us = command.trigger_timestamp_us
        for frame in command.frames:
            self._frame(frame)

    def _start_clip(self, info: ClipInfo, started_utc: dt.datetime) -> None:
        self._adopt(self._create_clip(info, started_utc), info)

    def _create_clip(self, info: ClipInfo, started_utc: dt.datetime) -> ClipWriter:
        return ClipWriter.create(
            self._s.clips_dir,
            info,
            started_utc=started_utc,
            signing_key=self._s.signing_key,
            force_key=self._s.force_key,
            storage=self._storage,
            clock_source=self._clock_source,
        )

    def _adopt(self, clip: ClipWriter, info: ClipInfo) -> None:
        """Make ``clip`` the open one, with fresh per-clip state."""
        self._clip, self._info = clip, info
        self._segment, self._origin_us, self._trigger_us = None, -1, None
        self._rollover_pending = False
        self._notify(ClipOpened(clip.clip_id, clip.directory, info.trigger))

    def _frame(self, frame: EncodedFrame) -> None:
        if self._clip is None:
            self.frames_refused += 1
            return
        segment = self._segment
        if segment is None and not frame.keyframe:
            # A clip must start at a keyframe to decode: only possible when nothing was
            # buffered (woken from sleep by a trigger); the next keyframe is < 1 GOP away.
            self.frames_refused += 1
            return
        if frame.keyframe and segment is not None:
            if self._rollover_pending:
                self._do_rollover(frame)
                segment = None
            elif frame.timestamp_us - segment.first_us >= self._cut_us:
                self._seal()
                segment = None
        if segment is None:
            segment = self._begin_segment(frame.timestamp_us)
        chunk = segment.muxer.mux(frame)
        self._clip_or_raise().append(chunk)
        segment.last_us = frame.timestamp_us
        segment.frames += 1
        self.frames_written += 1

    def _clip_or_raise(self) -> ClipWriter:
        if self._clip is None:
            raise RuntimeError("no clip open")
        return self._clip

    def _begin_segment(self, first_us: int) -> _SegmentState:
        if self._origin_us < 0:
            self._origin_us = first_us
        self._clip_or_raise().begin_segment()
        self._segment = _SegmentState(
            SegmentMuxer(self._s.video, origin_us=self._origin_us), first_us
        )
        return self._segment

    def _seal(self) -> None:
        segment, clip = self._segment, self._clip
        if segment is None or clip is None:
            return
        self._segment = None
        tail = segment.muxer.close()
        if tail:
            clip.append(tail)
        sealed = clip.seal_segment(
            first_timestamp_us=segment.first_us,
            last_timestamp_us=segment.last_us,
            frames=segment.frames,
        )
        self._notify(SegmentSealed(clip.clip_id, sealed))

    def _finish(self, reason: str, continued_by: str | None = None) -> None:
        clip = self._clip_or_raise()
        self._seal()
        pre_event = None
        if self._trigger_us is not None and self._origin_us >= 0:
            pre_event = max(0.0, (self._trigger_us - self._origin_us) / 1e6)
        manifest = clip.close(
            ended_utc=self._clock.utc_now(),
            reason=reason,
            trigger_timestamp_us=self._trigger_us,
            pre_event_actual_s=pre_event,
            continued_by=continued_by,
        )
        self._clip = None
        self._notify(ClipFinished(clip.clip_id, reason, manifest))

    def _close(self, reason: str) -> None:
        if self._clip is not None:
            self._finish(reason)

    def _do_rollover(self, frame: EncodedFrame) -> None:
        old, info = self._clip_or_raise(), self._info
        assert info is not None
        # Seal the old clip's last segment first so its chain head is final.
        self._seal()
        new_info = replace(
            info, trigger="rollover", continues=old.clip_id, continues_chain_head=old.chain_head
        )
        new_clip = self._create_clip(new_info, utc_at(self._clock, frame.timestamp_us / 1e6))
        self._finish("rollover", continued_by=new_clip.clip_id)
        self._adopt(new_clip, new_info)


class Recorder:
    """Loop-side front of the recorder: routes frames, turns commands into writer work."""

    def __init__(
        self,
        settings: RecorderSettings,
        *,
        clock: Clock,
        storage: Storage | None,
        on_notice: Callable[[Notice], None],
    ) -> None:
        self._settings = settings
        self._clock = clock
        video = settings.video
        # The cap: twice the configured span at the nominal bitrate, plus a GOP at 4x (a
        # keyframe-heavy scene), so only a misbehaving encoder ever hits it.
        span_s = settings.pre_event_s + video.gop / video.fps
        cap = int(2 * span_s * video.bitrate / 8 + 4 * video.bitrate / 8)
        self.ring = PreEventRing(settings.pre_event_s, max_bytes=cap)
        self._on_notice = on_notice
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = _Writer(settings, storage, clock, self._from_writer)
        self._backlog_limit = max(1, round(settings.writer_queue_s * video.fps))
        self._queue_limit = self._backlog_limit
        self._queued = 0
        self.recording = False
        self.clock_offset_s: float | None = None
        # Set by the dock hooks; read at each clip start, so a clip records the clock's
        # source as the last TIME_SET left it. None: clips carry no ``clock_source``.
        self.clock_source: ClockSourceReader | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer.start()

    async def aclose(self) -> None:
        """Close any open clip (all segments sealed) and stop the writer thread."""
        if not self._writer.is_alive():
            return
        self._writer.commands.put(_Stop())
        await asyncio.to_thread(self._writer.join)
        self.recording = False

    def _from_writer(self, notice: Notice) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # If the loop is closing, the shutdown path has its own account of the clip.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, notice)

    def _deliver(self, notice: Notice) -> None:
        if isinstance(notice, SegmentSealed):
            self._queued = max(0, self._queued - notice.segment.frames)
        elif isinstance(notice, RecorderFault):
            self.recording = False
        self._on_notice(notice)

    def on_frame(self, frame: EncodedFrame) -> None:
        if not self.recording:
            self.ring.push(frame)
            return
        self._writer.commands.put(frame)
        self._queued += 1
        if self._queued > self._queue_limit:
            # The card cannot keep up: stop taking frames rather than grow without bound.
            # Everything already queued is still written and sealed.
            self.recording = False
            detail = f"storage too slow: {self._queued} frames waiting to be written"
            log.error("recording stopped: %s", detail)
            self._on_notice(RecorderFault("write_error", detail))
            self._writer.commands.put(_Close("write_error"))

    def open_clip(self, trigger: str, trigger_time: float) -> None:
        frames = self.ring.drain()
        first_us = frames[0].timestamp_us if frames else round(trigger_time * 1e6)
        clock_set = self._clock.is_set()
        source = self.clock_source(clock_set) if self.clock_source is not None else None
        self._writer.commands.put(
            _Open(
                trigger=trigger,
                trigger_timestamp_us=round(trigger_time * 1e6),
                started_utc=utc_at(self._clock, first_us / 1e6),
                frames=frames,
                clock_set=clock_set,
                clock_offset_s=self.clock_offset_s,
                clock_source=source,
            )
        )
        # The pre-event frames arrive all at once: they are not a sign of a slow card.
        self._queued = len(frames)
        self._queue_limit = len(frames) + self._backlog_limit
        self.recording = True

    def close_clip(self, reason: str) -> None:
        if self.recording:
            self.recording = False
            self._writer.commands.put(_Close(reason))

    def rollover(self) -> None:
        if self.recording:
            self._writer.commands.put(_Rollover())

    def sensor_stopped(self) -> None:
        """The sensor went off: what was buffered is stale."""
        self.ring.clear()

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    @property
    def writer_alive(self) -> bool:
        return self._writer.is_alive()
