"""Requester and Responder over a real pseudo-terminal: order, window, retries, sessions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.endpoint import (
    SEQ_LIMIT,
    CumulativeAck,
    PeerSilentError,
    RemoteError,
    Requester,
    Responder,
    SessionEnded,
    next_seq,
    seq_ahead,
)
from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.frame import (
    CHUNK_SIZE,
    FLAG_IGNORABLE,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Deframer,
    Frame,
    FrameHeader,
    frame_bytes,
    unpack_header,
)
from bodycam.drivers.link.messages import (
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    Ack,
    Bye,
    ByeAck,
    ByeReason,
    Capability,
    Commit,
    CommitAck,
    CommitStatus,
    Data,
    ErrorReply,
    FileKind,
    Hello,
    Message,
    MsgType,
    Read,
    Role,
    Status,
    StatusReq,
    decode_message,
    encode_message,
)
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial

FILE_SIZE = 1 << 22
CLIP = bytes(range(16))
STATUS = Status(
    state="docked",
    battery_percent=90,
    charging=True,
    storage_total=1 << 30,
    storage_free=1 << 29,
    clips=3,
    clock_set=True,
    firmware="bodycam-test",
)
STALE_STATUS = Status(
    state="stale",
    battery_percent=255,
    charging=False,
    storage_total=0,
    storage_free=0,
    clips=0,
    clock_set=False,
    firmware="old",
)


def hello(role: Role) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        schema_hash=SCHEMA_HASH,
        role=role,
        node_id="dock-1" if role == Role.DOCK else "cam-1",
        firmware="test",
        capabilities=Capability.RESUME,
        max_payload=MAX_PAYLOAD,
        window=16,
        nonce=os.urandom(32),
    )


def chunk(offset: int, length: int) -> bytes:
    """The bytes of the imaginary file at ``offset``: different for every offset."""
    return random.Random(offset).randbytes(length)


def read(offset: int, length: int = 64) -> Read:
    return Read(clip_id=CLIP, kind=FileKind.SEGMENT, index=0, offset=offset, length=length)


class Camera:
    """A Responder handler: answers like a camera and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[Message] = []
        self.gate: asyncio.Event | None = None
        self.delay = 0.0
        self.commits = 0
        self.called = asyncio.Event()

    async def __call__(self, message: Message) -> Message | None:
        self.calls.append(message)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(message, StatusReq):
            return STATUS
        if isinstance(message, Hello):
            return hello(Role.CAMERA)
        if isinstance(message, Read):
            if message.offset > FILE_SIZE:
                raise ProtocolError(ErrorCode.BAD_RANGE, f"offset {message.offset} beyond")
            data = chunk(message.offset, min(message.length, FILE_SIZE - message.offset))
            return Data(
                clip_id=message.clip_id,
                kind=message.kind,
                index=message.index,
                offset=message.offset,
                file_size=FILE_SIZE,
                data=data,
            )
        if isinstance(message, Commit):
            self.commits += 1
            status = CommitStatus.DELETED if self.commits == 1 else CommitStatus.ALREADY_GONE
            return CommitAck(clip_id=message.clip_id, status=status)
        if isinstance(message, Bye):
            raise SessionEnded(ByeAck())
        raise ProtocolError(ErrorCode.BAD_STATE, f"{type(message).__name__} not expected")

    def count(self, kind: type[Message]) -> int:
        return sum(1 for m in self.calls if isinstance(m, kind))


class TapLink:
    """A ByteLink around another: records every frame written; can drop, damage or dirty one.

    ``drop``/``damage`` pick the first written frame (by its header) to lose or to corrupt;
    ``garbage`` is written before every frame.
    """

    def __init__(
        self,
        inner: ByteLink,
        *,
        drop: Callable[[FrameHeader], bool] | None = None,
        damage: Callable[[FrameHeader], bool] | None = None,
        garbage: bytes = b"",
    ) -> None:
        self.inner = inner
        self.sent: list[FrameHeader] = []
        self.lost: list[FrameHeader] = []
        self._drop = drop
        self._damage = damage
        self._garbage = garbage

    @property
    def name(self) -> str:
        return self.inner.name

    async def read(self) -> bytes:
        return await self.inner.read()

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        data = b"".join(bytes(c) for c in chunks)
        header = unpack_header(data[:HEADER_SIZE])
        self.sent.append(header)
        if self._drop is not None and self._drop(header):
            self._drop = None
            self.lost.append(header)
            return
        if self._damage is not None and self._damage(header):
            self._damage = None
            self.lost.append(header)
            damaged = bytearray(data)
            damaged[HEADER_SIZE] ^= 0xFF  # first payload byte: only the CRC-32 can tell
            data = bytes(damaged)
        await self.inner.write(self._garbage, data)

    def close(self) -> None:
        self.inner.close()

    def seqs(self, msg_type: MsgType | None = None) -> list[int]:
        return [h.seq for h in self.sent if msg_type is None or h.type == msg_type]


def is_type(msg_type: MsgType) -> Callable[[FrameHeader], bool]:
    return lambda header: header.type == msg_type


@dataclass
class Wire:
    camera: FdLink
    dock: FdLink


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    pty = open_pty_pair()
    camera = FdLink(pty.master_fd, "cam")
    try:
        dock = open_serial(pty.slave_path)
    except BaseException:
        camera.close()
        raise
    finally:
        os.close(pty.slave_fd)
    yield Wire(camera, dock)
    camera.close()
    dock.close()


@contextlib.asynccontextmanager
async def serving(responder: Responder) -> AsyncIterator[asyncio.Task[None]]:
    """Run the responder for the block; a failure of its own surfaces here."""
    task = asyncio.create_task(responder.run(), name="test-responder")
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_frames(link: ByteLink, deframer: Deframer, count: int) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(3.0):
        while len(frames) < count:
            frames += deframer.feed(await link.read())
    assert len(frames) == count, frames
    return frames


def raw(message: Message, *, seq: int, ack: int = 0, flags: int = 0) -> bytes:
    return frame_bytes(int(message.TYPE), encode_message(message), seq=seq, ack=ack, flags=flags)


def decoded(frame: Frame) -> Message:
    return decode_message(frame.type, frame.payload)


# ----- order and window -----------------------------------------------------------------------


async def test_concurrent_calls_are_answered_in_seq_order(wire: Wire) -> None:
    camera = Camera()
    tap = TapLink(wire.camera)
    responder = Responder(tap, camera)
    async with serving(responder), Requester(wire.dock, window=8, retry_s=5.0) as req:
        offsets = [n * 100 for n in range(40)]
        replies = await asyncio.gather(*(req.call(read(o)) for o in offsets))
    for offset, reply in zip(offsets, replies, strict=True):
        assert isinstance(reply, Data)
        assert reply.offset == offset
        assert bytes(reply.data) == chunk(offset, 64)
    seqs = tap.seqs(MsgType.DATA)
    assert len(seqs) == 40
    assert seqs == list(range(seqs[0], seqs[0] + 40))  # one reply per seq, in order
    assert [m.offset for m in camera.calls if isinstance(m, Read)] == offsets
    assert responder.stats.replays == 0
    assert req.stats.retries == 0
    assert req.loss == 0.0


async def test_full_chunks_arrive_intact(wire: Wire) -> None:
    async with (
        serving(Responder(wire.camera, Camera())),
        Requester(wire.dock, window=4, retry_s=5.0) as req,
    ):
        offsets = [n * CHUNK_SIZE for n in range(12)]
        replies = await asyncio.gather(*(req.call(read(o, CHUNK_SIZE)) for o in offsets))
    for offset, reply in zip(offsets, replies, strict=True):
        assert isinstance(reply, Data)
        assert bytes(reply.data) == chunk(offset, CHUNK_SIZE)


async def test_window_bounds_the_requests_in_flight(wire: Wire) -> None:
    camera = Camera()
    camera.gate = asyncio.Event()
    dock = TapLink(wire.dock)
    async with (
        serving(Responder(wire.camera, camera)),
        Requester(dock, window=4, retry_s=30.0, silence_s=30.0) as req,
    ):
        calls = [asyncio.create_task(req.call(read(n))) for n in range(10)]
        async with asyncio.timeout(3.0):
            await camera.called.wait()
        await asyncio.sleep(0.2)  # time for any request beyond the window to go out
        assert len(set(dock.seqs())) == 4
        assert not any(call.done() for call in calls)
        camera.gate.set()
        replies = await asyncio.gather(*calls)
    assert [r.offset for r in replies if isinstance(r, Data)] == list(range(10))
    assert len(set(dock.seqs())) == 10
    assert len(camera.calls) == 10


async def test_window_is_never_exceeded_under_load(wire: Wire) -> None:
    camera_tap = TapLink(wire.camera)
    dock_tap = TapLink(wire.dock)
    in_flight: list[int] = []

    class Watch:
        async def __call__(self, message: Message) -> Message | None:
            asked = len(set(dock_tap.seqs()))
            in_flight.append(asked - len(camera_tap.sent))
            return await camera(message)

    camera = Camera()
    async with (
        serving(Responder(camera_tap, Watch())),
        Requester(dock_tap, window=3, retry_s=5.0) as req,
    ):
        await asyncio.gather(*(req.call(read(n)) for n in range(30)))
    assert max(in_flight) <= 3
    assert len(camera.calls) == 30


# ----- losses and retries ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop", "damage"])
async def test_lost_reply_is_retried_and_the_handler_runs_once(wire: Wire, fault: str) -> None:
    camera = Camera()
    if fault == "drop":
        tap = TapLink(wire.camera, drop=is_type(MsgType.DATA))
    else:
        tap = TapLink(wire.camera, damage=is_type(MsgType.DATA))
    responder = Responder(tap, camera)
    async with serving(responder), Requester(wire.dock, retry_s=0.1, silence_s=3.0) as req:
        reply = await req.call(read(4096))
        assert isinstance(reply, Data)
        assert bytes(reply.data) == chunk(4096, 64)
        assert len(tap.lost) == 1
        assert camera.count(Read) == 1  # the retry was answered from the reply cache
        assert responder.stats.replays >= 1
        assert req.stats.retries >= 1
        assert req.loss > 0.0
        # Clean calls afterwards bring the loss estimate down again.
        loss = req.loss
        for n in range(5):
            await req.call(read(n))
        assert req.loss < loss


async def test_retried_commit_is_not_carried_out_twice(wire: Wire) -> None:
    camera = Camera()
    tap = TapLink(wire.camera, drop=is_type(MsgType.COMMIT_ACK))
    async with (
        serving(Responder(tap, camera)),
        Requester(wire.dock, retry_s=0.1, silence_s=3.0) as req,
    ):
        message = Commit(clip_id=CLIP, chain_head=bytes(32), signature=bytes(64))
        reply = await req.call(message)
    # The very reply the first COMMIT produced, not the answer to a second deletion.
    assert reply == CommitAck(clip_id=CLIP, status=CommitStatus.DELETED)
    assert camera.commits == 1
    assert len(tap.lost) == 1


async def test_reply_to_a_later_request_resends_the_lost_one_at_once(wire: Wire) -> None:
    camera = Camera()
    tap = TapLink(wire.camera, drop=is_type(MsgType.DATA))
    # retry_s far beyond the test: only "a later reply came first" can rescue the call.
    async with (
        serving(Responder(tap, camera)),
        Requester(wire.dock, retry_s=60.0, silence_s=60.0) as req,
    ):
        async with asyncio.timeout(3.0):
            replies = await asyncio.gather(*(req.call(read(n)) for n in range(3)))
    assert [r.offset for r in replies if isinstance(r, Data)] == [0, 1, 2]
    assert camera.count(Read) == 3
    assert req.stats.retries >= 1


async def test_retry_with_the_same_seq_gets_the_same_frame(wire: Wire) -> None:
    camera = Camera()
    responder = Responder(wire.camera, camera)
    deframer = Deframer()
    async with serving(responder):
        await wire.dock.write(raw(StatusReq(), seq=1))
        await wire.dock.write(raw(StatusReq(), seq=1))
        first, again = await read_frames(wire.dock, deframer, 2)
        assert first == again
        assert first.seq == 1
        assert decoded(first) == STATUS
        # Another request under an answered number is not a retry: not answered at all.
        await wire.dock.write(raw(read(0), seq=1))
        await wire.dock.write(raw(StatusReq(), seq=2, ack=1))
        (nxt,) = await read_frames(wire.dock, deframer, 1)
        assert nxt.seq == 2
        # Once acknowledged, a reply is forgotten: a late duplicate is dropped.
        await wire.dock.write(raw(StatusReq(), seq=1, ack=2))
        await wire.dock.write(raw(StatusReq(), seq=3, ack=2))
        (last,) = await read_frames(wire.dock, deframer, 1)
        assert last.seq == 3
    assert camera.count(StatusReq) == 3
    assert camera.count(Read) == 0
    assert responder.stats.replays == 1
    assert responder.stats.stale == 2


async def test_acknowledgements_are_cumulative_both_ways(wire: Wire) -> None:
    dock = TapLink(wire.dock)
    async with (
        serving(Responder(wire.camera, Camera())),
        Requester(dock, initial_seq=100, retry_s=5.0) as req,
    ):
        for _ in range(4):
            await req.call(StatusReq())
    # Each request tells the camera which replies arrived: all up to the previous one.
    assert [(h.seq, h.ack) for h in dock.sent] == [(100, 99), (101, 100), (102, 101), (103, 102)]


async def test_camera_ack_waits_for_a_missing_request(wire: Wire) -> None:
    deframer = Deframer()
    async with serving(Responder(wire.camera, Camera())):
        # Request 1 was lost on the way: request 2 is answered, but not acknowledged past 0.
        await wire.dock.write(raw(StatusReq(), seq=2))
        (second,) = await read_frames(wire.dock, deframer, 1)
        assert (second.seq, second.ack) == (2, 0)
        await wire.dock.write(raw(StatusReq(), seq=1))
        (first,) = await read_frames(wire.dock, deframer, 1)
        assert (first.seq, first.ack) == (1, 2)


def test_window_must_hold_a_request() -> None:
    class NoLink:
        name = "none"

        async def read(self) -> bytes:
            raise LinkClosedError("none")

        async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
            raise LinkClosedError("none")

        def close(self) -> None:
            pass

    with pytest.raises(ValueError, match="window"):
        Requester(NoLink(), window=0)


# ----- errors ---------------------------------------------------------------------------------


async def test_error_reply_raises_remote_error_with_its_code(wire: Wire) -> None:
    async with (
        serving(Responder(wire.camera, Camera())),
        Requester(wire.dock, retry_s=5.0) as req,
    ):
        with pytest.raises(RemoteError) as info:
            await req.call(read(FILE_SIZE + 1))
        assert info.value.code == ErrorCode.BAD_RANGE
        assert "beyond" in info.value.detail
        with pytest.raises(RemoteError) as info:
            await req.call(STATUS)  # a reply is not a request a camera answers
        assert info.value.code == ErrorCode.BAD_STATE
        # An error ends only that call.
        assert await req.call(StatusReq()) == STATUS


async def test_unknown_type_is_answered_unless_ignorable(wire: Wire) -> None:
    camera = Camera()
    deframer = Deframer()
    async with serving(Responder(wire.camera, camera)):
        await wire.dock.write(frame_bytes(0x0F00, b"offer", seq=1, ack=0))
        await wire.dock.write(frame_bytes(0x0777, b"", seq=2, ack=0, flags=FLAG_IGNORABLE))
        await wire.dock.write(frame_bytes(int(MsgType.STATUS_REQ), b"\x00", seq=3, ack=0))
        await wire.dock.write(
            frame_bytes(int(MsgType.STATUS_REQ), b"\x00", seq=4, ack=0, flags=FLAG_IGNORABLE)
        )
        await wire.dock.write(raw(StatusReq(), seq=5))
        frames = await read_frames(wire.dock, deframer, 4)
    assert [f.seq for f in frames] == [1, 3, 4, 5]  # nothing for the ignorable unknown frame
    unknown, malformed, malformed_flagged, status = (decoded(f) for f in frames)
    assert isinstance(unknown, ErrorReply)
    assert (unknown.code, unknown.ref_type) == (ErrorCode.UNKNOWN_MESSAGE, 0x0F00)
    # IGNORABLE covers types a receiver does not know, not broken messages it does know.
    for error in (malformed, malformed_flagged):
        assert isinstance(error, ErrorReply)
        assert (error.code, error.ref_type) == (ErrorCode.MALFORMED, MsgType.STATUS_REQ)
    assert status == STATUS
    assert camera.count(StatusReq) == 1  # the handler never saw what did not decode


async def test_garbage_around_frames_is_survived(wire: Wire) -> None:
    camera = Camera()
    noise = b"\x00\xffAT+CGMI\r\n\xbc\xa7" + bytes(18) + b"\xbc"
    tap = TapLink(wire.camera, garbage=noise)
    async with serving(Responder(tap, camera)):
        await wire.dock.write(noise + b"login: ")  # before the dock's first frame
        async with Requester(wire.dock, retry_s=5.0) as req:
            replies = await asyncio.gather(*(req.call(read(n)) for n in range(20)))
            assert await req.call(StatusReq()) == STATUS
    assert [r.offset for r in replies if isinstance(r, Data)] == list(range(20))
    assert req.stats.retries == 0
    assert len(camera.calls) == 21


# ----- silence and endings --------------------------------------------------------------------


async def test_peer_that_never_answers_is_declared_silent(wire: Wire) -> None:
    async with Requester(wire.dock, retry_s=0.05, silence_s=0.3) as req:
        started = time.monotonic()
        with pytest.raises(PeerSilentError, match="silent"):
            await req.call(StatusReq())
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 2.0
        assert req.stats.retries >= 2
        with pytest.raises(PeerSilentError):  # the session is over for every later call
            await req.call(StatusReq())


async def test_responder_returns_when_the_dock_goes_quiet(wire: Wire) -> None:
    responder = Responder(wire.camera, Camera(), idle_timeout_s=0.3)
    async with serving(responder) as task:
        async with Requester(wire.dock, retry_s=5.0) as req:
            for _ in range(5):  # traffic keeps the session open past the timeout
                assert await req.call(StatusReq()) == STATUS
                await asyncio.sleep(0.12)
            assert not task.done()
        started = time.monotonic()
        await asyncio.wait_for(asyncio.shield(task), 3.0)
        assert time.monotonic() - started < 1.5
        assert task.result() is None


async def test_responder_returns_after_bye(wire: Wire) -> None:
    async with (
        serving(Responder(wire.camera, Camera())) as task,
        Requester(wire.dock, retry_s=5.0) as req,
    ):
        assert await req.call(Bye(reason=ByeReason.DONE)) == ByeAck()
        await asyncio.wait_for(asyncio.shield(task), 3.0)
        assert task.result() is None


async def test_responder_raises_when_the_dock_hangs_up(wire: Wire) -> None:
    task = asyncio.create_task(Responder(wire.camera, Camera()).run())
    await asyncio.sleep(0.05)
    wire.dock.close()
    with pytest.raises(LinkClosedError):
        await asyncio.wait_for(task, 3.0)


# ----- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("second_seq", [1_002, None], ids=["overlapping", "random"])
async def test_new_hello_resets_the_responder(wire: Wire, second_seq: int | None) -> None:
    camera = Camera()
    responder = Responder(wire.camera, camera)
    async with serving(responder):
        async with Requester(wire.dock, initial_seq=1_000, retry_s=0.2) as first:
            assert isinstance(await first.call(hello(Role.DOCK)), Hello)
            for _ in range(5):
                assert await first.call(StatusReq()) == STATUS
        # The next dock (or the same after a restart) starts over with its own numbers.
        async with Requester(
            wire.dock, initial_seq=second_seq, retry_s=0.2, silence_s=2.0
        ) as second:
            assert isinstance(await second.call(hello(Role.DOCK)), Hello)
            replies = await asyncio.gather(*(second.call(read(n)) for n in range(5)))
            assert [r.offset for r in replies if isinstance(r, Data)] == list(range(5))
    assert camera.count(Hello) == 2
    assert camera.count(StatusReq) == 5
    assert camera.count(Read) == 5


async def test_stale_replies_of_an_earlier_session_are_ignored(wire: Wire) -> None:
    # Replies an earlier session left in the tty buffer, numbered by that session.
    for seq in (7, 8, 9):
        await wire.camera.write(raw(STALE_STATUS, seq=seq, ack=seq))
    error = ErrorReply(code=ErrorCode.BUSY, ref_type=0, detail="unsolicited")
    await wire.camera.write(raw(error, seq=0, ack=0))
    await wire.camera.write(raw(Ack(), seq=0, ack=9))
    async with (
        serving(Responder(wire.camera, Camera())),
        Requester(wire.dock, initial_seq=5_000, retry_s=5.0) as req,
    ):
        assert await req.call(StatusReq()) == STATUS
        assert req.stats.duplicates == 3


async def test_a_cancelled_call_does_not_disturb_the_others(wire: Wire) -> None:
    camera = Camera()
    camera.delay = 0.2
    async with (
        serving(Responder(wire.camera, camera)),
        Requester(wire.dock, retry_s=5.0, silence_s=1.0) as req,
    ):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await req.call(StatusReq())
        camera.delay = 0.0
        await asyncio.sleep(0.3)  # the late reply arrives for nobody
        assert await req.call(StatusReq()) == STATUS


async def test_a_cancelled_call_answered_with_error_does_not_disturb_the_others(
    wire: Wire,
) -> None:
    camera = Camera()
    camera.delay = 0.2
    async with (
        serving(Responder(wire.camera, camera)),
        Requester(wire.dock, retry_s=5.0, silence_s=0.5) as req,
    ):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await req.call(read(FILE_SIZE + 1))  # answered with ERROR BAD_RANGE
        camera.delay = 0.0
        await asyncio.sleep(0.3)
        assert await req.call(StatusReq()) == STATUS


async def test_idle_gap_longer_than_silence_does_not_fail_the_next_call(wire: Wire) -> None:
    camera = Camera()
    async with (
        serving(Responder(wire.camera, camera, idle_timeout_s=5.0)),
        Requester(wire.dock, retry_s=0.2, silence_s=0.3) as req,
    ):
        assert await req.call(StatusReq()) == STATUS
        await asyncio.sleep(0.5)  # the dock verifies a clip; nothing is outstanding
        camera.delay = 0.15  # a camera that takes a moment (deleting a clip, say)
        assert await req.call(StatusReq()) == STATUS


def test_the_cumulative_ack_advances_over_the_wrap_of_the_numbers() -> None:
    # Numbers run up to SEQ_LIMIT and go on at 1 (0 marks unsolicited frames): the ack
    # must follow them there, not stall at SEQ_LIMIT.
    acked = CumulativeAck(SEQ_LIMIT - 2)
    for seq in (SEQ_LIMIT, 1, SEQ_LIMIT - 1):
        acked.done(seq)
    assert acked.value == 1
    assert next_seq(SEQ_LIMIT) == 1
    assert seq_ahead(SEQ_LIMIT, 1) > 0
    assert seq_ahead(1, SEQ_LIMIT) < 0


def test_the_cumulative_ack_gives_up_old_gaps() -> None:
    acked = CumulativeAck(100, max_gaps=4)
    for seq in (102, 103, 104, 105):  # 101 never comes
        acked.done(seq)
    assert acked.value == 100
    assert acked.pending(105)
    acked.done(107)  # five numbers held above the gap: the oldest gap is given up
    assert acked.value == 103
    assert acked.pending(104)
    assert not acked.pending(102)


def test_the_endpoint_module_still_exports_both_sides() -> None:
    from bodycam.drivers.link import endpoint, responder

    assert endpoint.Responder is responder.Responder
    assert endpoint.SessionEnded is responder.SessionEnded
    for name in endpoint.__all__:
        assert getattr(endpoint, name) is not None
    with pytest.raises(AttributeError):
        _ = endpoint.NoSuchName  # type: ignore[attr-defined]


# ----- a peer that takes no bytes ---------------------------------------------------------------


class WedgedLink:
    """A link whose far end stopped reading: every write waits for ever; reads give ``inbound``."""

    name = "wedged"

    def __init__(self, inbound: bytes = b"") -> None:
        self.inbound = inbound
        self.writes_started = 0

    async def read(self) -> bytes:
        if self.inbound:
            data, self.inbound = self.inbound, b""
            return data
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        self.writes_started += 1
        await asyncio.Event().wait()

    def close(self) -> None:
        pass


async def test_a_peer_that_takes_no_bytes_is_silent_not_a_hang() -> None:
    link = WedgedLink()
    async with Requester(link, retry_s=0.05, silence_s=0.2) as req:
        async with asyncio.timeout(30):  # a hang guard only; the bound under test is silence_s
            with pytest.raises(PeerSilentError, match="took no bytes"):
                await req.call(StatusReq())
        with pytest.raises(PeerSilentError):
            await req.call(StatusReq())  # the session is over, not waiting again
    assert link.writes_started == 1


async def test_the_camera_ends_a_session_whose_dock_takes_no_bytes() -> None:
    link = WedgedLink(inbound=raw(StatusReq(), seq=1))
    responder = Responder(link, Camera(), idle_timeout_s=0.2)
    async with asyncio.timeout(30):  # a hang guard only
        with pytest.raises(LinkClosedError, match="took no bytes"):
            await responder.run()
