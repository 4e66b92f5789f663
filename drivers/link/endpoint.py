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
that is intact but not understood gets an ERROR reply naming the problem. A partial frame
that does not complete in time (``partial_frame_s``) is abandoned and the bytes behind its
header are scanned again, so a forged header costs at most one frame's bytes and a second.

A session is bound to its request stream: after a HELLO, the Responder knows which numbers
that dock can still send (a window above what it has answered, and retries of what it has
just answered). A request numbered outside that range comes from another connection (a
second process on the same tty after the first died without BYE): the Responder forgets the
session (``on_new_peer``) before it answers, so nothing authenticated carries over.
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
from bodycam.drivers.link.frame import (
    FLAG_IGNORABLE,
    MAX_PAYLOAD,
    Deframer,
    Frame,
    encode_frame,
)
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
# A partial frame not completed this long after it began (Responder) or after its last
# byte (Requester) is abandoned. A whole request crosses USB or a pty in milliseconds.
PARTIAL_FRAME_S = 1.0
_SEQ_LIMIT = 0xFFFF_FFFF
_SEQ_SPACE = _SEQ_LIMIT + 1

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
        partial_frame_s: float = PARTIAL_FRAME_S,
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
        self.partial_frame_s = partial_frame_s
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
        deframer = self._deframer
        try:
            while True:
                # The camera does not resend: a partial frame that stops growing is dead.
                stall = self.partial_frame_s if deframer.buffered else None
                try:
                    async with asyncio.timeout(stall):
                        data = await self.link.read()
                except TimeoutError:
                    frames = deframer.abandon()
                else:
                    frames = deframer.feed(data)
                for frame in frames:
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


def _ahead(base: int, seq: int) -> int:
    """How far ``seq`` is above ``base`` in the wrapping number space (negative: below)."""
    diff = (seq - base) % _SEQ_SPACE
    return diff - _SEQ_SPACE if diff >= _SEQ_SPACE // 2 else diff


def _type_name(msg_type: int) -> str:
    try:
        return MsgType(msg_type).name
    except ValueError:
        return f"{msg_type:#06x}"


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
    foreign: int = 0
    data_bytes_sent: int = 0


class SessionEnded(Exception):  # noqa: N818 - a signal from a handler, not an error
    """Raised by a handler after its reply to end the session (BYE)."""

    def __init__(self, reply: Message) -> None:
        super().__init__("session ended")
        self.reply = reply


class Responder:
    """The answering side (the camera): serves one link until BYE, hang-up or silence.

    Args:
        link: The link to serve.
        handler: Answers each request (the camera's session).
        window: Most requests the dock keeps unanswered (the camera's HELLO says so).
        idle_timeout_s: The session ends after this long without a byte from the dock.
        max_payload: Largest request payload accepted; longer headers are dropped at once.
        partial_frame_s: A partial frame not complete this long after it began is abandoned.
        on_new_peer: Called (with the request's seq) before a request from outside this
            session's request stream is handled: the handler must forget the session.
    """

    def __init__(
        self,
        link: ByteLink,
        handler: Handler,
        *,
        window: int = DEFAULT_WINDOW,
        idle_timeout_s: float = 30.0,
        max_payload: int = MAX_PAYLOAD,
        partial_frame_s: float = PARTIAL_FRAME_S,
        on_new_peer: Callable[[int], None] | None = None,
    ) -> None:
        self.link = link
        self.handler = handler
        self.window = window
        self.idle_timeout_s = idle_timeout_s
        self.partial_frame_s = partial_frame_s
        self.on_new_peer = on_new_peer
        self.stats = ResponderStats()
        self._deframer = Deframer(max_payload)
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._processed: set[int] = set()
        self._cum_ack = 0
        self._peer_ack = 0
        self._high = 0  # the highest request number handled in this session
        self._bound = False  # a HELLO has fixed this session's request stream

    @property
    def deframer(self) -> Deframer:
        """The deframer of this link (its counters are diagnostics)."""
        return self._deframer

    async def run(self) -> None:
        """Answer until the peer says BYE (returns) or goes silent (returns).

        Raises:
            LinkClosedError: The link went away (the dock vanished or was unplugged).
        """
        loop = asyncio.get_running_loop()
        deframer = self._deframer
        partial_since = 0.0
        while True:
            wait = self.idle_timeout_s
            if deframer.buffered:
                # The honest dock's retries keep bytes coming, so the deadline counts from
                # where the partial frame began, not from its last byte.
                wait = min(wait, max(0.0, partial_since + self.partial_frame_s - loop.time()))
            try:
                async with asyncio.timeout(wait):
                    data = await self.link.read()
            except TimeoutError:
                if not deframer.buffered or wait >= self.idle_timeout_s:
                    _log.warning(
                        "%s: dock silent for %.0f s; ending the session",
                        self.link.name,
                        self.idle_timeout_s,
                    )
                    return
                frames = deframer.abandon()
                _log.warning(
                    "%s: a frame did not complete within %.1f s; dropped it",
                    self.link.name,
                    self.partial_frame_s,
                )
                partial_since = loop.time()
            else:
                pending = deframer.buffered
                frames = deframer.feed(data)
                if deframer.buffered and (frames or not pending):
                    partial_since = loop.time()  # a new partial frame began in this read
            for frame in frames:
                self.stats.frames_received += 1
                if await self._on_frame(frame):
                    return

    async def _on_frame(self, frame: Frame) -> bool:
        """Handle one frame; True when the session is over."""
        if frame.seq == 0 or frame.type == MsgType.ACK:
            if self._plausible_ack(frame.ack):
                self._peer_ack = max(self._peer_ack, frame.ack)
                self._forget_acknowledged()
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
            self._bound = True
        elif self._bound and not self._in_session(frame.seq):
            # No request of this session's dock can carry this number: another connection.
            _log.warning(
                "%s: request %s numbered %d is outside this session's stream: "
                "a new connection; the session is forgotten",
                self.link.name,
                _type_name(frame.type),
                frame.seq,
            )
            self.stats.foreign += 1
            self._reset(frame.seq)
            if self.on_new_peer is not None:
                self.on_new_peer(frame.seq)
        elif frame.seq in self._processed or self._recently_done(frame.seq):
            self.stats.stale += 1  # answered, and the dock said it has the answer
            return False
        if self._plausible_ack(frame.ack):
            self._peer_ack = max(self._peer_ack, frame.ack)
            self._forget_acknowledged()
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
        if _ahead(self._high, frame.seq) > 0:
            self._high = frame.seq
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
        return 0 <= (self._cum_ack - seq) % _SEQ_SPACE < 4 * self.window

    def _in_session(self, seq: int) -> bool:
        """Whether this session's dock can send a request numbered ``seq``.

        It numbers new requests one by one and keeps at most ``window`` unanswered, so a new
        one lies at most a window above the highest handled; a retry lies in the gaps below
        that or among the last answered (which :meth:`_recently_done` then ignores).
        """
        if self._recently_done(seq):
            return True
        return 0 < _ahead(self._cum_ack, seq) <= _ahead(self._cum_ack, self._high) + self.window

    def _plausible_ack(self, ack: int) -> bool:
        # Once bound, an ack names a reply already sent: none above the highest request
        # handled (a stranger's ack must not make the camera forget this session's replies).
        if not self._bound:
            return True
        return _ahead(ack, self._high) >= 0 and _ahead(self._cum_ack, ack) <= 4 * self.window

    def _reset(self, first_seq: int) -> None:
        self._cache.clear()
        self._processed.clear()
        self._cum_ack = first_seq - 1
        self._peer_ack = first_seq - 1
        self._high = first_seq - 1

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
    "PARTIAL_FRAME_S",
    "Handler",
    "LinkStats",
    "PeerSilentError",
    "RemoteError",
    "Requester",
    "Responder",
    "ResponderStats",
    "SessionEnded",
]
