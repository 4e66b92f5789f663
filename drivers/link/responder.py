"""The camera's side of the dock link: answer requests, replay retries, bind the session.

:class:`Responder` answers requests in arrival order, caches each reply until the dock's
cumulative ``ack`` says it arrived, and answers a repeated request with the very same frame,
so a retried COMMIT never deletes twice nor a retried READ reads other bytes. Its cache is
bounded by the window; it never buffers more than that for a slow dock.

A frame that is intact but not understood gets an ERROR reply naming the problem. A partial
frame not complete ``partial_frame_s`` after it began is abandoned (docs/protocol.md,
"Resynchronisation").

A session is bound to its request stream (docs/protocol.md, "Sequence numbers"): after a
HELLO, the Responder knows which numbers that dock can still send (a window above what it
has answered, and retries of what it has just answered). A request numbered outside that
range comes from another connection (a second process on the same tty after the first died
without BYE): the Responder forgets its replies and calls ``on_new_peer`` before it answers,
so nothing authenticated carries over. Only a HELLO that parses starts a new stream; one
that does not is like any other request that fails to parse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.frame import FLAG_IGNORABLE, MAX_PAYLOAD, Deframer, Frame, encode_frame
from bodycam.drivers.link.messages import (
    ErrorCode,
    ErrorReply,
    Message,
    MsgType,
    decode_message,
    encode_message,
)
from bodycam.drivers.link.stream import (
    DEFAULT_WINDOW,
    PARTIAL_FRAME_S,
    CumulativeAck,
    LinkStats,
    Parts,
    send_frame,
    seq_ahead,
    type_name,
)

_log = logging.getLogger(__name__)

# Answers one request. On HELLO it must start a new session (forget any authentication):
# the Responder has already moved to the HELLO's request stream.
Handler = Callable[[Message], Awaitable[Message | None]]


@dataclass
class _Cached:
    digest: bytes
    parts: Parts


@dataclass
class ResponderStats(LinkStats):
    """The Responder's counters: requests, replays, ignored duplicates, foreign requests."""

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
        handler: Answers each request (the camera's session); see :data:`Handler`.
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
        # How far back this side remembers a request stream: answered numbers, plausible acks.
        self._memory = 4 * window
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._done = CumulativeAck(0, max_gaps=self._memory)
        self._high = 0  # the highest request number handled in this session
        self._bound = False  # a HELLO has fixed this session's request stream

    @property
    def deframer(self) -> Deframer:
        """The deframer of this link (its counters are diagnostics)."""
        return self._deframer

    async def run(self) -> None:
        """Answer until the peer says BYE (returns) or goes silent (returns).

        Raises:
            LinkClosedError: The link went away (the dock vanished or was unplugged), or the
                dock took no bytes for ``idle_timeout_s``.
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
            self._take_ack(frame.ack)
            return False
        digest = hashlib.blake2b(
            frame.type.to_bytes(2, "little") + frame.payload, digest_size=16
        ).digest()
        cached = self._cache.get(frame.seq)
        if cached is not None and cached.digest == digest:
            self.stats.replays += 1
            await self._send(cached.parts)
            return False
        try:
            message: Message | ProtocolError = decode_message(frame.type, frame.payload)
        except ProtocolError as exc:
            message = exc
        if isinstance(message, Message) and frame.type == MsgType.HELLO:
            # A new dock connection (or a new session on the same one); the handler forgets
            # the old session on HELLO. A HELLO that does not parse moves nothing.
            self._reset(frame.seq)
            self._bound = True
        elif self._bound and not self._in_session(frame.seq):
            # No request of this session's dock can carry this number: another connection.
            _log.warning(
                "%s: request %s numbered %d is outside this session's stream: "
                "a new connection; the session is forgotten",
                self.link.name,
                type_name(frame.type),
                frame.seq,
            )
            self.stats.foreign += 1
            self._reset(frame.seq)
            if self.on_new_peer is not None:
                self.on_new_peer(frame.seq)
        elif self._done.pending(frame.seq) or self._recently_done(frame.seq):
            self.stats.stale += 1  # answered, and the dock said it has the answer
            return False
        self._take_ack(frame.ack)
        self.stats.requests += 1
        reply, ended = await self._answer(frame, message)
        self._done.done(frame.seq)
        if seq_ahead(self._high, frame.seq) > 0:
            self._high = frame.seq
        if reply is not None:
            payload = encode_message(reply)
            parts = encode_frame(int(reply.TYPE), payload, seq=frame.seq, ack=self._done.value)
            self._cache[frame.seq] = _Cached(digest, parts)
            while len(self._cache) > 2 * self.window:
                self._cache.popitem(last=False)
            if reply.TYPE == MsgType.DATA:
                self.stats.data_bytes_sent += len(payload)
            await self._send(parts)
        return ended

    async def _send(self, parts: Parts) -> None:
        # A dock that takes no bytes for as long as it may stay silent is gone (or wedged):
        # the camera ends the session instead of waiting in a write for ever.
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                await send_frame(self.link, self._lock, parts, self.stats)
        except TimeoutError:
            raise LinkClosedError(
                f"{self.link.name}: dock took no bytes for {self.idle_timeout_s:.0f} s"
            ) from None

    async def _answer(
        self, frame: Frame, message: Message | ProtocolError
    ) -> tuple[Message | None, bool]:
        """The reply to one request (None: none is due) and whether the session ends."""
        try:
            if isinstance(message, ProtocolError):
                raise message
            return await self.handler(message), False
        except SessionEnded as end:
            return end.reply, True
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_MESSAGE and frame.flags & FLAG_IGNORABLE:
                return None, False
            detail = exc.detail.encode()[:200].decode("utf-8", errors="ignore")
            self.stats.errors_sent += 1
            return ErrorReply(code=exc.code, ref_type=frame.type, detail=detail), False

    def _recently_done(self, seq: int) -> bool:
        # A duplicate of a request answered a moment ago. A number far below (another
        # dock's random start) is a new request and gets a real answer, if only an ERROR.
        return 0 <= -seq_ahead(self._done.value, seq) < self._memory

    def _in_session(self, seq: int) -> bool:
        """Whether this session's dock can send a request numbered ``seq``.

        It numbers new requests one by one and keeps at most ``window`` unanswered, so a new
        one lies at most a window above the highest handled; a retry lies in the gaps below
        that or among the last answered (which :meth:`_recently_done` then ignores).
        """
        if self._recently_done(seq):
            return True
        base = self._done.value
        return 0 < seq_ahead(base, seq) <= seq_ahead(base, self._high) + self.window

    def _take_ack(self, ack: int) -> None:
        """Forget the cached replies the dock says it has received."""
        # Once bound, an ack names a reply already sent: none above the highest request
        # handled (a stranger's ack must not make the camera forget this session's replies).
        if self._bound and not (
            seq_ahead(ack, self._high) >= 0 and seq_ahead(self._done.value, ack) <= self._memory
        ):
            return
        while self._cache:
            seq = next(iter(self._cache))
            if seq_ahead(ack, seq) > 0:
                break
            del self._cache[seq]

    def _reset(self, first_seq: int) -> None:
        self._cache.clear()
        self._done = CumulativeAck(first_seq - 1, max_gaps=self._memory)
        self._high = first_seq - 1


__all__ = ["Handler", "Responder", "ResponderStats", "SessionEnded"]
