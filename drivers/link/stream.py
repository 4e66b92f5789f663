"""What both ends of the dock link share: defaults, counters, one writer, request numbers.

The dock's :class:`~bodycam.drivers.link.endpoint.Requester` and the camera's
:class:`~bodycam.drivers.link.responder.Responder` both use these: the window and
partial-frame defaults, :class:`LinkStats`, :func:`send_frame` (one writer at a time), the
wrapping arithmetic of sequence numbers (:func:`next_seq`, :func:`seq_ahead`,
:class:`CumulativeAck`) and the errors a request can end in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import MsgType

DEFAULT_WINDOW = 16
# A partial frame not completed this long after it began (Responder) or after its last
# byte (Requester) is abandoned. A whole request crosses USB or a pty in milliseconds.
PARTIAL_FRAME_S = 1.0
SEQ_LIMIT = 0xFFFF_FFFF  # request numbers run 1..SEQ_LIMIT, then wrap to 1 (0: unsolicited)
_SEQ_SPACE = SEQ_LIMIT + 1

Parts = tuple[bytes, bytes | bytearray | memoryview, bytes]


class PeerSilentError(LinkClosedError):
    """The other end stopped answering: every retry of a request went unanswered."""


class RemoteError(ProtocolError):
    """The peer answered a request with ERROR."""


@dataclass
class LinkStats:
    """Counters of one endpoint (diagnostics and benchmarks)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    retries: int = 0
    duplicates: int = 0
    errors_sent: int = 0


async def send_frame(link: ByteLink, lock: asyncio.Lock, parts: Parts, stats: LinkStats) -> None:
    """Write one encoded frame; ``lock`` keeps frames of concurrent senders whole."""
    async with lock:
        await link.write(*parts)
    stats.frames_sent += 1
    stats.bytes_sent += len(parts[0]) + len(parts[1]) + len(parts[2])


def next_seq(seq: int) -> int:
    """The request number after ``seq`` (skipping 0, which marks unsolicited frames)."""
    return 1 if seq >= SEQ_LIMIT else seq + 1


def seq_ahead(base: int, seq: int) -> int:
    """How far ``seq`` is above ``base`` in the wrapping number space (negative: below)."""
    diff = (seq - base) % _SEQ_SPACE
    return diff - _SEQ_SPACE if diff >= _SEQ_SPACE // 2 else diff


class CumulativeAck:
    """The highest request number up to which every request is done (answered, received).

    Args:
        last: The number before the first request of the stream.
        max_gaps: Most numbers held above a gap; beyond that the oldest gaps are given up
            (requests the peer abandoned must not be remembered forever). None: unbounded,
            for a side whose own window already bounds them.
    """

    def __init__(self, last: int, max_gaps: int | None = None) -> None:
        self.value = last
        self.max_gaps = max_gaps
        self._above: set[int] = set()

    def done(self, seq: int) -> None:
        """Record request ``seq`` as done and advance over every number now contiguous."""
        self._above.add(seq)
        while next_seq(self.value) in self._above:
            self.value = next_seq(self.value)
            self._above.discard(self.value)
        if self.max_gaps is not None and len(self._above) > self.max_gaps:
            newest = max(self._above, key=lambda s: seq_ahead(self.value, s))
            self.value = (newest - self.max_gaps) % _SEQ_SPACE
            self._above = {s for s in self._above if seq_ahead(self.value, s) > 0}

    def pending(self, seq: int) -> bool:
        """Whether ``seq`` is recorded as done above a gap."""
        return seq in self._above


def type_name(msg_type: int) -> str:
    """A message type's name, or its number when this version does not define it."""
    try:
        return MsgType(msg_type).name
    except ValueError:
        return f"{msg_type:#06x}"


__all__ = [
    "DEFAULT_WINDOW",
    "PARTIAL_FRAME_S",
    "SEQ_LIMIT",
    "CumulativeAck",
    "LinkStats",
    "Parts",
    "PeerSilentError",
    "RemoteError",
    "next_seq",
    "send_frame",
    "seq_ahead",
    "type_name",
]
