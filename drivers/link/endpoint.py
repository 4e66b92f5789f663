"""Requests and replies over a ByteLink: windowed, retried, acknowledged, always timed out.

The dock asks and the camera answers (docs/protocol.md, "Sequence numbers"):

* :class:`Requester` (dock) numbers each new request, keeps at most ``window`` of them
  unanswered (back-pressure: ``submit`` waits), and resends a request whose reply is late
  (``retry_s``) or evidently lost (the reply to a *later* request arrived first: the link
  keeps order, so the earlier request or its reply was dropped). A retry reuses the number,
  so the camera recognises it and repeats its reply. A noisy link only slows things down:
  the peer is declared gone (:class:`PeerSilentError`) when *nothing* has arrived from it
  for ``silence_s`` while requests wait, however many retries that took. ``loss`` (an
  average of how many sends needed a retry) lets a caller ask for smaller chunks on a
  noisy link, where a 64 KiB frame rarely arrives intact.
* :class:`Responder` (camera) answers requests in arrival order, caches each reply until the
  dock's cumulative ``ack`` says it arrived, and answers a repeated request with the very
  same frame, so a retried COMMIT never deletes twice nor a retried READ reads other bytes.
  Its cache is bounded by the window; it never buffers more than that for a slow dock.

Frames that fail their checks are dropped by the deframer; the retry covers them. A frame
that is intact but not understood gets an ERROR reply naming the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.frame import FLAG_IGNORABLE, Deframer, Frame, encode_frame
from bodycam.drivers.link.messages import (
    ErrorCode,
    ErrorReply,
    Message,
    MsgType,
    decode_message,
    encode_message,
)

_log = logging.getLogger(__name__)

DEFAULT_WINDOW = 16
_SEQ_LIMIT = 0xFFFF_FFFF

Parts = tuple[bytes, bytes | bytearray | memoryview, bytes]


class PeerSilentError(LinkClosedError):
    """The other end stopped answering: every retry of a request went unanswered."""


class RemoteError(ProtocolError):
    """The peer answered a request with ERROR."""


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    retries: int = 0
    duplicates: int = 0
    errors_sent: int = 0


async def _send(link: ByteLink, lock: asyncio.Lock, parts: Parts, stats: LinkStats) -> None:
    async with lock:
        await link.write(*parts)
    stats.frames_sent += 1
    stats.bytes_sent += len(parts[0]) + len(parts[1]) + len(parts[2])


@dataclass
class _Pending:
    seq: int
    message: Message
    payload: bytes
    future: asyncio.Future[Message]
    sent_at: float = 0.0
    tries: int = 0


class Requester:
    """The asking side (the dock). Use as ``async with Requester(link) as req:``."""

    def __init__(
        self,
        link: ByteLink,
        *,
        window: int = DEFAULT_WINDOW,
        retry_s: float = 0.5,
        silence_s: float = 5.0,
        initial_seq: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        # A random first number per session: replies an earlier session left in a buffer
        # (the gadget's, the tty's) can then never be taken for this session's.
        if initial_seq is None:
            initial_seq = secrets.randbelow(1 << 31) + 1
        self.link = link
        self.window = window
        self.retry_s = retry_s
        self.silence_s = silence_s
        self.loss = 0.0
        self._last_heard = time.monotonic()
        self.stats = LinkStats()
        self._deframer = Deframer()
        self._lock = asyncio.Lock()
        self._next_seq = initial_seq
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._answered: set[int] = set()
        self._cum_ack = initial_seq - 1
        self._slots = asyncio.Semaphore(window)
        self._failure: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Requester:
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"link-read {self.link.name}"),
            asyncio.create_task(self._retry_loop(), name=f"link-retry {self.link.name}"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all(LinkClosedError(f"{self.link.name}: session closed"))

    # ----- asking -------------------------------------------------------------------------

    async def call(self, message: Message) -> Message:
        """Send one request and wait for its reply (retrying as needed).

        Raises:
            RemoteError: The peer answered ERROR.
            PeerSilentError: No reply after ``max_tries`` sends.
            LinkClosedError: The link is gone.
        """
        return await (await self.submit(message))

    async def submit(self, message: Message) -> asyncio.Future[Message]:
        """Send a request once a window slot is free; the future resolves to its reply."""
        if self._failure is not None:
            raise self._failure
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        seq = self._next_seq
        self._next_seq = 1 if seq >= _SEQ_LIMIT else seq + 1
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _f: self._slots.release())
        if not self._pending:
            # Silence counts from when we start waiting, not from the last idle stretch.
            self._last_heard = time.monotonic()
        pending = _Pending(seq, message, encode_message(message), future)
        self._pending[seq] = pending
        await self._transmit(pending)
        return future

    async def _transmit(self, pending: _Pending) -> None:
        if pending.tries:
            self.loss = 0.9 * self.loss + 0.1
        pending.tries += 1
        pending.sent_at = time.monotonic()
        parts = encode_frame(
            int(pending.message.TYPE), pending.payload, seq=pending.seq, ack=self._cum_ack
        )
        try:
            await _send(self.link, self._lock, parts, self.stats)
        except LinkClosedError as exc:
            self._fail_all(exc)
            raise

    # ----- replies ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.link.read()
                for frame in self._deframer.feed(data):
                    self.stats.frames_received += 1
                    self._last_heard = time.monotonic()
                    await self._on_frame(frame)
        except LinkClosedError as exc:
            self._fail_all(exc)

    async def _on_frame(self, frame: Frame) -> None:
        if frame.seq == 0:
            if frame.type == MsgType.ERROR:
                _log.warning("%s: peer reports: %s", self.link.name, _error_text(frame))
            return  # ACK or unsolicited
        pending = self._pending.pop(frame.seq, None)
        if pending is None:
            self.stats.duplicates += 1
            return
        self._mark_answered(frame.seq)
        if pending.tries == 1:
            self.loss *= 0.9
        if not pending.future.done():  # the caller may have given up (cancelled) meanwhile
            try:
                reply = decode_message(frame.type, frame.payload)
            except ProtocolError as exc:
                pending.future.set_exception(exc)
            else:
                if isinstance(reply, ErrorReply):
                    pending.future.set_exception(RemoteError(reply.code, reply.detail))
                else:
                    pending.future.set_result(reply)
        # Requests sent before this one and still unanswered were lost on the way: the link
        # keeps order, so resend them now rather than after the timeout.
        for earlier in list(self._pending.values()):
            if earlier.seq != frame.seq and earlier.sent_at < pending.sent_at:
                self.stats.retries += 1
                await self._transmit(earlier)

    def _mark_answered(self, seq: int) -> None:
        self._answered.add(seq)
        while (self._cum_ack + 1) in self._answered:
            self._cum_ack += 1
            self._answered.discard(self._cum_ack)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s / 4)
            now = time.monotonic()
            if self._pending and now - self._last_heard > self.silence_s:
                oldest = next(iter(self._pending.values()))
                self._fail_all(
                    PeerSilentError(
                        f"{self.link.name}: peer silent for {now - self._last_heard:.1f} s "
                        f"({oldest.message.TYPE.name} sent {oldest.tries} times)"
                    )
                )
                return
            for pending in list(self._pending.values()):
                if now - pending.sent_at < self.retry_s:
                    continue
                self.stats.retries += 1
                with contextlib.suppress(LinkClosedError):
                    await self._transmit(pending)

    def _fail_all(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        while self._pending:
            _, pending = self._pending.popitem(last=False)
            if not pending.future.done():
                pending.future.set_exception(exc)
                # Nobody may await a future failed only because a sibling failed.
                pending.future.exception()


def _error_text(frame: Frame) -> str:
    try:
        reply = decode_message(frame.type, frame.payload)
    except ProtocolError as exc:
        return str(exc)
    if isinstance(reply, ErrorReply):
        return f"{ErrorCode(reply.code).name}: {reply.detail}"
    return type(reply).__name__


Handler = Callable[[Message], Awaitable[Message | None]]


@dataclass
class _Cached:
    digest: bytes
    parts: Parts


@dataclass
class ResponderStats(LinkStats):
    requests: int = 0
    replays: int = 0
    stale: int = 0
    data_bytes_sent: int = 0


class SessionEnded(Exception):  # noqa: N818 - a signal from a handler, not an error
    """Raised by a handler after its reply to end the session (BYE)."""

    def __init__(self, reply: Message) -> None:
        super().__init__("session ended")
        self.reply = reply


class Responder:
    """The answering side (the camera): serves one link until BYE, hang-up or silence."""

    def __init__(
        self,
        link: ByteLink,
        handler: Handler,
        *,
        window: int = DEFAULT_WINDOW,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.link = link
        self.handler = handler
        self.window = window
        self.idle_timeout_s = idle_timeout_s
        self.stats = ResponderStats()
        self._deframer = Deframer()
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._processed: set[int] = set()
        self._cum_ack = 0
        self._peer_ack = 0

    async def run(self) -> None:
        """Answer until the peer says BYE (returns) or goes silent (returns).

        Raises:
            LinkClosedError: The link went away (the dock vanished or was unplugged).
        """
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    data = await self.link.read()
            except TimeoutError:
                _log.warning(
                    "%s: dock silent for %.0f s; ending the session",
                    self.link.name,
                    self.idle_timeout_s,
                )
                return
            for frame in self._deframer.feed(data):
                self.stats.frames_received += 1
                if await self._on_frame(frame):
                    return

    async def _on_frame(self, frame: Frame) -> bool:
        """Handle one frame; True when the session is over."""
        self._peer_ack = max(self._peer_ack, frame.ack)
        self._forget_acknowledged()
        if frame.type == MsgType.ACK or frame.seq == 0:
            return False
        digest = hashlib.blake2b(
            frame.type.to_bytes(2, "little") + frame.payload, digest_size=16
        ).digest()
        cached = self._cache.get(frame.seq)
        if cached is not None and cached.digest == digest:
            self.stats.replays += 1
            await _send(self.link, self._lock, cached.parts, self.stats)
            return False
        if frame.type == MsgType.HELLO:
            self._reset(frame.seq)  # a new dock connection (or a new session on the same one)
        elif frame.seq in self._processed or self._recently_done(frame.seq):
            self.stats.stale += 1  # answered, and the dock said it has the answer
            return False
        self.stats.requests += 1
        ended = False
        try:
            message = decode_message(frame.type, frame.payload)
            reply = await self.handler(message)
        except SessionEnded as end:
            reply, ended = end.reply, True
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_MESSAGE and frame.flags & FLAG_IGNORABLE:
                reply = None
            else:
                detail = exc.detail.encode()[:200].decode("utf-8", errors="ignore")
                reply = ErrorReply(code=exc.code, ref_type=frame.type, detail=detail)
                self.stats.errors_sent += 1
        self._mark_processed(frame.seq)
        if reply is not None:
            payload = encode_message(reply)
            parts = encode_frame(int(reply.TYPE), payload, seq=frame.seq, ack=self._cum_ack)
            self._cache[frame.seq] = _Cached(digest, parts)
            self._trim_cache()
            if reply.TYPE == MsgType.DATA:
                self.stats.data_bytes_sent += len(payload)
            await _send(self.link, self._lock, parts, self.stats)
        return ended

    def _recently_done(self, seq: int) -> bool:
        # A duplicate of a request answered a moment ago. A number far below (another
        # dock's random start) is a new request and gets a real answer, if only an ERROR.
        return 0 <= (self._cum_ack - seq) % (_SEQ_LIMIT + 1) < 4 * self.window

    def _reset(self, first_seq: int) -> None:
        self._cache.clear()
        self._processed.clear()
        self._cum_ack = first_seq - 1
        self._peer_ack = first_seq - 1

    def _mark_processed(self, seq: int) -> None:
        self._processed.add(seq)
        while (self._cum_ack + 1) in self._processed:
            self._cum_ack += 1
            self._processed.discard(self._cum_ack)
        if len(self._processed) > 4 * self.window:
            # Gaps that old are requests the dock gave up on: do not hold them forever.
            self._cum_ack = max(self._processed) - 4 * self.window
            self._processed = {s for s in self._processed if s > self._cum_ack}

    def _forget_acknowledged(self) -> None:
        while self._cache:
            seq = next(iter(self._cache))
            if seq > self._peer_ack:
                break
            del self._cache[seq]

    def _trim_cache(self) -> None:
        while len(self._cache) > 2 * self.window:
            self._cache.popitem(last=False)


__all__ = [
    "DEFAULT_WINDOW",
    "Handler",
    "LinkStats",
    "PeerSilentError",
    "RemoteError",
    "Requester",
    "Responder",
    "ResponderStats",
    "SessionEnded",
]
