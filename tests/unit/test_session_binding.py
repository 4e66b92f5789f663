"""A camera session lives and dies with its connection, over a real pseudo-terminal.

The camera holds the pty master and keeps a slave descriptor open, as the gadget's
``/dev/ttyGS0`` does: it never sees the dock's process close its end.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.dock.auth import (
    AUTH_DOCK_CONTEXT,
    issue_dock_certificate,
    sign,
    transcript_hash,
)
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.session import (
    MAX_REQUEST_PAYLOAD,
    AuthLimiter,
    CameraIdentity,
    CameraSession,
    Phase,
    largest_requests,
)
from bodycam.drivers.link.endpoint import RemoteError, Requester, Responder
from bodycam.drivers.link.errors import ErrorCode
from bodycam.drivers.link.frame import (
    MAX_PAYLOAD,
    Deframer,
    frame_bytes,
    pack_header,
    unpack_header,
)
from bodycam.drivers.link.messages import (
    DOCK_TO_CAMERA,
    MAX_POLICY_SIZE,
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    AuthDevice,
    AuthDock,
    Capability,
    DockCertificate,
    ErrorReply,
    FileKind,
    Hello,
    ListClips,
    ListReply,
    Message,
    MsgType,
    Read,
    Role,
    decode_message,
    encode_message,
)
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial
from tests.unit.evidence_helpers import START, Keys, write_clip
from tests.unit.test_camera_session import FakeHooks

DEVICE_ID = "BODYCAM-TEST-0001"


@dataclass
class Camera:
    link: FdLink
    slave_path: str
    session: CameraSession
    responder: Responder
    dock_key: Ed25519PrivateKey
    cert: DockCertificate
    calls: list[tuple[str, int]]


@pytest.fixture
def camera(tmp_path: Path, keys: Keys) -> Iterator[Camera]:
    authority = Ed25519PrivateKey.generate()
    dock_key = Ed25519PrivateKey.generate()
    cert = issue_dock_certificate(
        authority, dock_key.public_key(), "dock-bay-1", not_before=START, days=365
    )
    clips_dir = tmp_path / "clips"
    write_clip(clips_dir, keys, segments=1, records=2, seed=1, started=START)
    outbox = Outbox(clips_dir)
    identity = CameraIdentity(DEVICE_ID, "test", keys.device, authority.public_key())
    session = CameraSession(identity, outbox, FakeHooks(), AuthLimiter())
    calls: list[tuple[str, int]] = []

    async def handler(message: Message) -> Message | None:
        # What the deframer had given up on when this request reached the session.
        calls.append((type(message).__name__, responder.deframer.stats.abandoned))
        return await session.handle(message)

    pty = open_pty_pair()
    link = FdLink(pty.master_fd, "cam")
    responder = Responder(
        link,
        handler,
        max_payload=MAX_REQUEST_PAYLOAD,
        partial_frame_s=0.2,
        on_new_peer=session.new_peer,
    )
    yield Camera(link, pty.slave_path, session, responder, dock_key, cert, calls)
    link.close()
    os.close(pty.slave_fd)
    outbox.close()


@contextlib.asynccontextmanager
async def serving(camera: Camera) -> AsyncIterator[None]:
    task = asyncio.create_task(camera.responder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def dock_hello() -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        schema_hash=SCHEMA_HASH,
        role=Role.DOCK,
        node_id="dock-bay-1",
        firmware="test",
        capabilities=Capability.RESUME,
        max_payload=MAX_PAYLOAD,
        window=16,
        nonce=os.urandom(32),
    )


async def authenticate(camera: Camera, req: Requester) -> None:
    hello = dock_hello()
    reply = await req.call(hello)
    assert isinstance(reply, Hello)
    transcript = transcript_hash(encode_message(hello), encode_message(reply))
    auth = AuthDock(camera.cert, sign(camera.dock_key, AUTH_DOCK_CONTEXT, transcript))
    assert isinstance(await req.call(auth), AuthDevice)


async def test_a_second_process_on_the_tty_inherits_nothing(camera: Camera) -> None:
    async with serving(camera):
        honest_link = open_serial(camera.slave_path)
        async with Requester(honest_link, retry_s=0.3) as honest:
            await authenticate(camera, honest)
            page = await honest.call(ListClips(cursor=0, max_entries=64))
            assert isinstance(page, ListReply)
            (entry,) = page.entries
        honest_link.close()  # the dock's process dies: no BYE, and the camera sees nothing
        assert camera.session.phase is Phase.AUTHENTICATED
        rogue_link = open_serial(camera.slave_path)
        try:
            async with Requester(rogue_link, retry_s=0.3) as rogue:  # its own random numbers
                for message in (
                    ListClips(cursor=0, max_entries=64),
                    Read(entry.clip_id, FileKind.MANIFEST, 0, 0, 4096),
                ):
                    with pytest.raises(RemoteError) as info:
                        await rogue.call(message)
                    assert info.value.code == ErrorCode.NOT_AUTHENTICATED
        finally:
            rogue_link.close()
    assert camera.responder.stats.data_bytes_sent == 0
    assert camera.responder.stats.foreign == 1
    assert camera.session.phase.value == "new"  # (mypy narrowed it to AUTHENTICATED above)
    assert camera.session.log.clips_deleted == 0


async def test_the_honest_dock_can_start_again_after_a_rogue(camera: Camera) -> None:
    async with serving(camera):
        link = open_serial(camera.slave_path)
        try:
            async with Requester(link, retry_s=0.3) as first:
                await authenticate(camera, first)
            async with Requester(link, retry_s=0.3) as second:
                with pytest.raises(RemoteError):
                    await second.call(ListClips(cursor=0, max_entries=64))
                await authenticate(camera, second)  # HELLO and AUTH again: served
                assert isinstance(await second.call(ListClips(0, 64)), ListReply)
        finally:
            link.close()


def forged_header(length: int) -> bytes:
    """A header with a valid header CRC claiming ``length`` bytes that never come."""
    header = pack_header(int(MsgType.LIST), seq=77, ack=0, length=min(length, MAX_PAYLOAD))
    if length <= MAX_PAYLOAD:
        return header
    # pack_header refuses lengths above MAX_PAYLOAD: build one by hand (what an attacker does).
    body = struct.pack("<2sBBHIII", b"\xbc\xa7", 1, 0, int(MsgType.LIST), 77, 0, length)
    return body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


@pytest.mark.parametrize("length", [MAX_PAYLOAD, 1 << 31, MAX_REQUEST_PAYLOAD])
async def test_a_forged_header_costs_at_most_one_frame(camera: Camera, length: int) -> None:
    async with serving(camera):
        link = open_serial(camera.slave_path)
        try:
            await link.write(forged_header(length))
            async with Requester(link, retry_s=0.3, silence_s=5.0) as req:
                assert isinstance(await req.call(dock_hello()), Hello)
        finally:
            link.close()
    stats = camera.responder.deframer.stats
    (hello_call,) = [c for c in camera.calls if c[0] == "Hello"]
    if length > MAX_REQUEST_PAYLOAD:
        # Longer than any request: refused on sight, nothing waited for.
        assert stats.oversized >= 1
        assert hello_call == ("Hello", 0)
    else:
        # A plausible length: the HELLO is answered only once the partial frame is given up.
        assert hello_call == ("Hello", 1)


def test_the_largest_request_is_config_push_with_a_full_policy() -> None:
    assert {m.TYPE for m in largest_requests()} == DOCK_TO_CAMERA  # every request is counted
    assert MAX_REQUEST_PAYLOAD == 2 + MAX_POLICY_SIZE + 64
    assert MAX_REQUEST_PAYLOAD < MAX_PAYLOAD


async def exchange(link: FdLink, frames: list[bytes]) -> dict[int, tuple[int, Message]]:
    """Write raw request frames (a scripted stranger) and collect one reply to each, by seq."""
    deframer = Deframer()
    replies: dict[int, tuple[int, Message]] = {}
    for raw in frames:
        seq = unpack_header(raw).seq
        await link.write(raw)
        while seq not in replies:
            async with asyncio.timeout(10):
                data = await link.read()
            for frame in deframer.feed(data):
                replies[frame.seq] = (frame.type, decode_message(frame.type, frame.payload))
    return replies


def request(message: Message, seq: int, ack: int = 0) -> bytes:
    return frame_bytes(int(message.TYPE), encode_message(message), seq=seq, ack=ack)


def refused(reply: tuple[int, Message]) -> ErrorCode | None:
    _, message = reply
    return ErrorCode(message.code) if isinstance(message, ErrorReply) else None


async def test_a_malformed_hello_does_not_rebind_an_authenticated_session(
    camera: Camera,
) -> None:
    # A stranger's frame typed HELLO that does not parse never reaches the session (it gets
    # ERROR MALFORMED): it must not move the Responder onto the stranger's request stream
    # while the session is still authenticated, or the stranger's next request is served.
    async with serving(camera):
        link = open_serial(camera.slave_path)
        try:
            async with Requester(link, retry_s=0.3, initial_seq=1000) as honest:
                await authenticate(camera, honest)
            stranger = 7_000_000
            replies = await exchange(
                link,
                [
                    frame_bytes(int(MsgType.HELLO), b"\x01", seq=stranger, ack=0),
                    request(ListClips(cursor=0, max_entries=64), stranger + 1),
                ],
            )
        finally:
            link.close()
    assert refused(replies[stranger]) == ErrorCode.MALFORMED
    assert refused(replies[stranger + 1]) == ErrorCode.NOT_AUTHENTICATED
    assert camera.session.phase is Phase.NEW
    assert camera.responder.stats.foreign == 1


async def test_a_foreign_request_clears_the_replies_kept_for_retries(camera: Camera) -> None:
    # The honest dock's last reply is still cached (nothing acknowledged it). Once a
    # request from another stream has reset the session, a copy of the honest request with
    # its number is a new request of nobody's session, not a retry: no cached LIST_REPLY.
    async with serving(camera):
        link = open_serial(camera.slave_path)
        try:
            async with Requester(link, retry_s=0.3, initial_seq=1000) as honest:
                await authenticate(camera, honest)  # seq 1000, 1001
                assert isinstance(await honest.call(ListClips(0, 64)), ListReply)  # 1002
            replies = await exchange(
                link,
                [
                    request(ListClips(0, 64), 9_000_000),
                    request(ListClips(0, 64), 1002, ack=1001),
                ],
            )
        finally:
            link.close()
    assert refused(replies[9_000_000]) == ErrorCode.NOT_AUTHENTICATED
    assert refused(replies[1002]) == ErrorCode.NOT_AUTHENTICATED
    assert camera.responder.stats.replays == 0
    assert camera.responder.stats.foreign == 2
