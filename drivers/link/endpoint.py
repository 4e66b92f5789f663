"""Requests and replies over a ByteLink: the dock's Requester and what both sides share.

The dock asks and the camera answers (docs/protocol.md, "Sequence numbers"):

* :class:`Requester` (dock, here) numbers each new request, keeps at most ``window`` of them
  unanswered (back-pressure: ``submit`` waits), and resends a request whose reply is late
  (``retry_s``) or evidently lost (the reply to a *later* request arrived first: the link
  keeps order, so the earlier request or its reply was dropped). A retry reuses the number,
  so the camera recognises it and repeats its reply. A noisy link only slows things down:
  the peer is declared gone (:class:`PeerSilentError`) when *nothing* has arrived from it
  for ``silence_s`` while requests wait, however many retries that took. ``loss`` (an
  average of how many sends needed a retry) lets a caller ask for smaller chunks on a
  noisy link, where a 64 KiB frame rarely arrives intact.
* :class:`~bodycam.drivers.link.responder.Responder` (camera) answers requests in arrival
  order, replays cached replies to retries, and binds a session to its request stream. It
  lives in :mod:`bodycam.drivers.link.responder` and is re-exported here, with
  ``ResponderStats``, ``SessionEnded`` and ``Handler``, so callers import both sides from
  this module.

What both sides share (defaults, counters, the wrapping arithmetic of sequence numbers) is in
:mod:`bodycam.drivers.link.stream`, re-exported here.

Frames that fail their checks are dropped by the deframer; the retry covers them. A partial
frame that does not complete in time (``partial_frame_s``) is abandoned and the bytes behind
its header are scanned again, so a forged header costs at most one frame's bytes and a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.frame import Deframer, Frame, encode_frame
from bodycam.drivers.link.messages import (
    ErrorCode,
    ErrorReply,
    Message,
    MsgType,
    decode_message,
    encode_message,
)
from bodycam.drivers.link.responder import Handler, Responder, ResponderStats, SessionEnded
from bodycam.drivers.link.stream import (
    DEFAULT_WINDOW,
    PARTIAL_FRAME_S,
    SEQ_LIMIT,
    CumulativeAck,
    LinkStats,
    PeerSilentError,
    RemoteError,
    next_seq,
    send_frame,
    seq_ahead,
    type_name,
)

_log = logging.getLogger(__name__)


def _error_text(frame: Frame) -> str:
    try:
        reply = decode_message(frame.type, frame.payload)
    except ProtocolError as exc:
        return str(exc)
    if isinstance(reply, ErrorReply):
        return f"{ErrorCode(reply.code).name}: {reply.detail}"
    return type(reply).__name__


@dataclass
class _Pending:
    seq: int
    message: Message
    payload: bytes
    future: asyncio.Future[Message]
    sent_at: float = 0.0
    tries: int = 0
    lost: bool = False  # evidently lost (a later request was answered): resend at once


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
        # Unanswered requests are at most a window, so the gaps are bounded without a cap.
        self._answered = CumulativeAck(initial_seq - 1)
        self._slots = asyncio.Semaphore(window)
        self._resend = asyncio.Event()  # wakes the retry loop for requests evidently lost
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
            PeerSilentError: Nothing arrived from the peer for ``silence_s``.
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
        self._next_seq = next_seq(seq)
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
            int(pending.message.TYPE), pending.payload, seq=pending.seq, ack=self._answered.value
        )
        try:
            # A peer that takes no bytes for silence_s (its side of the link full, itself
            # stuck) is as gone as one that sends none: a write never waits for ever.
            async with asyncio.timeout(self.silence_s):
                await send_frame(self.link, self._lock, parts, self.stats)
        except TimeoutError:
            stuck = PeerSilentError(
                f"{self.link.name}: peer took no bytes for {self.silence_s:.1f} s "
                f"({pending.message.TYPE.name} not sent)"
            )
            self._fail_all(stuck)
            raise stuck from None
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
        self._answered.done(frame.seq)
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
        # keeps order, so resend them now rather than after the timeout. The retry loop
        # writes them: the read loop never waits on a write, or a peer that stops reading
        # while its replies fill our side would stall both ends.
        for earlier in self._pending.values():
            if earlier.sent_at < pending.sent_at:
                earlier.lost = True
                self._resend.set()

    async def _retry_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_s / 4):
                    await self._resend.wait()
            self._resend.clear()
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
                if not pending.lost and now - pending.sent_at < self.retry_s:
                    continue
                pending.lost = False
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


__all__ = [
    "DEFAULT_WINDOW",
    "PARTIAL_FRAME_S",
    "SEQ_LIMIT",
    "CumulativeAck",
    "Handler",
    "LinkStats",
    "PeerSilentError",
    "RemoteError",
    "Requester",
    "Responder",
    "ResponderStats",
    "SessionEnded",
    "next_seq",
    "send_frame",
    "seq_ahead",
    "type_name",
]
