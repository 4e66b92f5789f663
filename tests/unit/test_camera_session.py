"""The camera's session state machine, driven message by message with real keys and clips."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.dock.auth import (
    AUTH_DEVICE_CONTEXT,
    AUTH_DOCK_CONTEXT,
    COMMIT_CONTEXT,
    TIME_CONTEXT,
    issue_dock_certificate,
    sign,
    transcript_hash,
    verify,
)
from bodycam.daemon.dock.clock_trust import ClockRecord, ClockStatus, ClockTrust
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.policy import Policy, SignedPolicy, sign_policy
from bodycam.daemon.dock.session import (
    AuthLimiter,
    CameraIdentity,
    CameraSession,
    Phase,
    TimeChange,
)
from bodycam.daemon.evidence.keys import raw_public_bytes
from bodycam.drivers.link.endpoint import SessionEnded
from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.frame import MAX_PAYLOAD
from bodycam.drivers.link.messages import (
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    AuthDevice,
    AuthDock,
    Bye,
    ByeAck,
    ByeReason,
    Capability,
    ClipEntry,
    Commit,
    CommitAck,
    CommitStatus,
    ConfigAck,
    ConfigPush,
    Data,
    DockCertificate,
    FileKind,
    Hello,
    ListClips,
    ListReply,
    Message,
    Read,
    Role,
    Status,
    StatusReq,
    TimeAck,
    TimeSet,
    encode_message,
)
from tests.unit.evidence_helpers import START, Keys, WrittenClip, write_clip

DEVICE_ID = "BODYCAM-TEST-0001"
CAMERA_NOW = START + dt.timedelta(hours=2)
MINUTE = dt.timedelta(minutes=1)
STATUS = Status(
    state="docked",
    battery_percent=80,
    charging=True,
    storage_total=1 << 30,
    storage_free=1 << 29,
    clips=2,
    clock_set=True,
    firmware="bodycam-test",
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeHooks:
    """Implements CameraHooks; records every call."""

    now: dt.datetime = CAMERA_NOW
    clock_set: bool = True
    policy_serial: int = 0
    calls: list[tuple[str, object]] = field(default_factory=list)

    def set_time(self, utc: dt.datetime) -> TimeChange:
        self.calls.append(("set_time", utc))
        change = TimeChange(self.now, (utc - self.now).total_seconds(), self.clock_set)
        self.now, self.clock_set = utc, True
        return change

    def clock_is_set(self) -> bool:
        return self.clock_set

    def utc_now(self) -> dt.datetime:
        return self.now

    def apply_policy(self, signed: SignedPolicy) -> bool:
        self.calls.append(("apply_policy", signed))
        if signed.policy.serial <= self.policy_serial:
            return False
        self.policy_serial = signed.policy.serial
        return True

    def status(self) -> Status:
        self.calls.append(("status", None))
        return STATUS

    def committed(self, clip_id: str, dock_id: str) -> None:
        self.calls.append(("committed", (clip_id, dock_id)))

    async def wait_sealed(self) -> None:
        self.calls.append(("wait_sealed", None))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class World:
    keys: Keys
    authority: Ed25519PrivateKey
    dock_key: Ed25519PrivateKey
    cert: DockCertificate
    clips: list[WrittenClip]
    outbox: Outbox
    hooks: FakeHooks
    clock: FakeClock
    limiter: AuthLimiter
    identity: CameraIdentity
    trust: ClockTrust = field(default_factory=ClockTrust)

    def session(self) -> CameraSession:
        return CameraSession(self.identity, self.outbox, self.hooks, self.limiter, self.trust)

    def confirm_clock(self) -> None:
        """As if two docks had agreed on the camera's clock."""
        self.trust.record = ClockRecord(ClockStatus.CONFIRMED, "dock-a", "dock-b", 0.0, None)


@pytest.fixture
def world(tmp_path: Path, keys: Keys) -> Iterator[World]:
    authority = Ed25519PrivateKey.generate()
    dock_key = Ed25519PrivateKey.generate()
    cert = issue_dock_certificate(
        authority,
        dock_key.public_key(),
        "dock-bay-1",
        not_before=START - dt.timedelta(days=1),
        days=365,
    )
    clips_dir = tmp_path / "clips"
    clips = [
        write_clip(clips_dir, keys, segments=2, records=3, seed=n, started=START + n * MINUTE)
        for n in range(2)
    ]
    outbox = Outbox(clips_dir)
    clock = FakeClock()
    identity = CameraIdentity(DEVICE_ID, "bodycam-test 1.0", keys.device, authority.public_key())
    yield World(
        keys,
        authority,
        dock_key,
        cert,
        clips,
        outbox,
        FakeHooks(),
        clock,
        AuthLimiter(monotonic=clock),
        identity,
    )
    outbox.close()


def dock_hello(**change: object) -> Hello:
    hello = Hello(
        protocol_version=PROTOCOL_VERSION,
        schema_hash=SCHEMA_HASH,
        role=Role.DOCK,
        node_id="dock-bay-1",
        firmware="bodycam-dock",
        capabilities=Capability.RESUME | Capability.TIME | Capability.CONFIG,
        max_payload=MAX_PAYLOAD,
        window=16,
        nonce=os.urandom(32),
    )
    return dataclasses.replace(hello, **change)  # type: ignore[arg-type]


async def greet(session: CameraSession) -> bytes:
    """HELLO; the session's transcript hash as the dock computes it."""
    hello = dock_hello()
    reply = await session.handle(hello)
    assert isinstance(reply, Hello)
    return transcript_hash(encode_message(hello), encode_message(reply))


def auth_dock(world: World, transcript: bytes, *, cert: DockCertificate | None = None) -> AuthDock:
    return AuthDock(
        certificate=cert or world.cert,
        signature=sign(world.dock_key, AUTH_DOCK_CONTEXT, transcript),
    )


async def authenticate(world: World, session: CameraSession) -> bytes:
    transcript = await greet(session)
    reply = await session.handle(auth_dock(world, transcript))
    assert isinstance(reply, AuthDevice)
    return transcript


async def list_all(session: CameraSession) -> list[ClipEntry]:
    reply = await session.handle(ListClips(cursor=0, max_entries=64))
    assert isinstance(reply, ListReply)
    return list(reply.entries)


def commit(key: Ed25519PrivateKey, transcript: bytes, clip_id: bytes, head: bytes) -> Commit:
    signature = sign(key, COMMIT_CONTEXT, transcript, clip_id, head)
    return Commit(clip_id=clip_id, chain_head=head, signature=signature)


async def refused(session: CameraSession, message: Message) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        await session.handle(message)
    return info.value.code


def _requests_after_auth(world: World) -> list[Message]:
    clip_id = bytes.fromhex(world.clips[0].clip_id)
    policy = sign_policy(
        world.authority, Policy(serial=5, issued_utc="2026-11-22T00:00:00.000000Z")
    )
    return [
        ListClips(cursor=0, max_entries=64),
        Read(clip_id=clip_id, kind=FileKind.MANIFEST, index=0, offset=0, length=4096),
        Commit(clip_id=clip_id, chain_head=bytes(32), signature=bytes(64)),
        TimeSet(utc_us=1_800_000_000_000_000, signature=bytes(64)),
        ConfigPush(policy=policy.data, signature=policy.signature),
        StatusReq(),
    ]


# ----- before authentication ----------------------------------------------------------------


async def test_nothing_is_served_before_hello(world: World) -> None:
    session = world.session()
    for message in _requests_after_auth(world):
        assert await refused(session, message) == ErrorCode.NOT_AUTHENTICATED
    assert world.hooks.calls == []
    assert session.log.data_bytes == 0
    assert all(clip.directory.is_dir() for clip in world.clips)


async def test_nothing_is_served_after_hello_without_auth(world: World) -> None:
    session = world.session()
    await greet(session)
    assert session.phase is Phase.GREETED
    for message in _requests_after_auth(world):
        assert await refused(session, message) == ErrorCode.NOT_AUTHENTICATED
    assert world.hooks.calls == []
    assert session.log.data_bytes == 0
    assert not session.log.authenticated


async def test_auth_before_hello_is_bad_state(world: World) -> None:
    session = world.session()
    assert await refused(session, auth_dock(world, bytes(32))) == ErrorCode.BAD_STATE
    assert session.phase is Phase.NEW
    assert world.limiter.failures == 0


async def test_camera_hello_answers_with_its_identity(world: World) -> None:
    session = world.session()
    first = await session.handle(dock_hello())
    second = await world.session().handle(dock_hello())
    assert isinstance(first, Hello)
    assert isinstance(second, Hello)
    assert first.role == Role.CAMERA
    assert first.node_id == DEVICE_ID
    assert first.protocol_version == PROTOCOL_VERSION
    assert first.schema_hash == SCHEMA_HASH
    assert len(first.nonce) == 32
    assert first.nonce != second.nonce  # fresh per session: transcripts never repeat
    assert session.log.dock_id == "dock-bay-1"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"protocol_version": PROTOCOL_VERSION + 1}, ErrorCode.VERSION_MISMATCH),
        ({"protocol_version": 0}, ErrorCode.VERSION_MISMATCH),
        ({"schema_hash": bytes(8)}, ErrorCode.SCHEMA_MISMATCH),
        ({"role": Role.CAMERA}, ErrorCode.BAD_STATE),
    ],
)
async def test_incompatible_hello_is_refused(
    world: World, change: dict[str, object], code: ErrorCode
) -> None:
    session = world.session()
    assert await refused(session, dock_hello(**change)) == code
    assert session.phase is Phase.NEW
    # Nothing to authenticate against.
    assert await refused(session, auth_dock(world, bytes(32))) == ErrorCode.BAD_STATE


# ----- authentication -----------------------------------------------------------------------


async def test_correct_auth_gets_a_device_proof_over_the_transcript(
    world: World, keys: Keys
) -> None:
    session = world.session()
    transcript = await greet(session)
    reply = await session.handle(auth_dock(world, transcript))
    assert isinstance(reply, AuthDevice)
    assert reply.device_id == DEVICE_ID
    assert reply.public_key == raw_public_bytes(keys.device.public_key())
    device = keys.device.public_key()
    assert verify(device, reply.signature, AUTH_DEVICE_CONTEXT, transcript)
    assert not verify(device, reply.signature, AUTH_DEVICE_CONTEXT, bytes(32))
    assert not verify(device, reply.signature, AUTH_DOCK_CONTEXT, transcript)
    assert session.phase is Phase.AUTHENTICATED
    assert session.log.authenticated
    assert session.log.dock_id == "dock-bay-1"


async def test_certificate_of_another_authority_fails_and_is_rate_limited(
    world: World,
) -> None:
    session = world.session()
    transcript = await greet(session)
    rogue = issue_dock_certificate(
        Ed25519PrivateKey.generate(),
        world.dock_key.public_key(),
        "dock-bay-1",
        not_before=START,
        days=365,
    )
    assert await refused(session, auth_dock(world, transcript, cert=rogue)) == (
        ErrorCode.AUTH_FAILED
    )
    assert session.phase is Phase.GREETED
    assert session.log.refusal is not None
    assert "issued by" in session.log.refusal
    # Locked out: even the right certificate is refused without being looked at.
    good = auth_dock(world, transcript)
    assert await refused(session, good) == ErrorCode.RATE_LIMITED
    world.clock.now += 0.9
    assert await refused(session, good) == ErrorCode.RATE_LIMITED
    world.clock.now += 0.2
    assert isinstance(await session.handle(good), AuthDevice)
    assert world.limiter.failures == 0


async def test_lockout_grows_with_each_failure_and_outlives_the_session(world: World) -> None:
    session = world.session()
    transcript = await greet(session)
    wrong = dataclasses.replace(auth_dock(world, transcript), signature=bytes(64))
    assert await refused(session, wrong) == ErrorCode.AUTH_FAILED
    world.clock.now += 1.1
    assert await refused(session, wrong) == ErrorCode.AUTH_FAILED
    assert world.limiter.failures == 2
    # A new session (the dock reconnects) does not reset the lockout.
    other = world.session()
    transcript = await greet(other)
    good = auth_dock(world, transcript)
    world.clock.now += 1.5
    assert await refused(other, good) == ErrorCode.RATE_LIMITED
    world.clock.now += 0.6
    assert isinstance(await other.handle(good), AuthDevice)


async def test_lockout_is_capped(world: World) -> None:
    for _ in range(10):
        world.limiter.failed()
    assert world.limiter.locked_until - world.clock.now == pytest.approx(60.0)


async def test_auth_signed_over_another_transcript_fails(world: World) -> None:
    old = await greet(world.session())
    session = world.session()
    await greet(session)
    assert await refused(session, auth_dock(world, old)) == ErrorCode.AUTH_FAILED
    assert session.phase is Phase.GREETED


async def test_auth_signed_by_a_key_the_certificate_does_not_name_fails(world: World) -> None:
    session = world.session()
    transcript = await greet(session)
    stolen_cert = AuthDock(
        certificate=world.cert,
        signature=sign(Ed25519PrivateKey.generate(), AUTH_DOCK_CONTEXT, transcript),
    )
    assert await refused(session, stolen_cert) == ErrorCode.AUTH_FAILED


async def test_expired_certificate_depends_on_the_camera_clock(world: World) -> None:
    expired = issue_dock_certificate(
        world.authority,
        world.dock_key.public_key(),
        "dock-old",
        not_before=START - dt.timedelta(days=30),
        days=1,
    )
    session = world.session()
    transcript = await greet(session)
    # A provisional clock (set, but not confirmed by a second dock) does not judge validity.
    assert isinstance(await session.handle(auth_dock(world, transcript, cert=expired)), AuthDevice)
    world.confirm_clock()
    session = world.session()
    transcript = await greet(session)
    assert await refused(session, auth_dock(world, transcript, cert=expired)) == (
        ErrorCode.AUTH_FAILED
    )
    # A camera whose clock was never set cannot judge validity; the signature still counts.
    world.hooks.clock_set = False
    world.clock.now += 5.0
    session = world.session()
    transcript = await greet(session)
    assert isinstance(await session.handle(auth_dock(world, transcript, cert=expired)), AuthDevice)


async def test_camera_without_an_authority_key_refuses_every_dock(world: World) -> None:
    identity = dataclasses.replace(world.identity, authority=None)
    session = CameraSession(identity, world.outbox, world.hooks, world.limiter)
    transcript = await greet(session)
    assert await refused(session, auth_dock(world, transcript)) == ErrorCode.AUTH_FAILED
    assert await refused(session, ListClips(cursor=0, max_entries=64)) == (
        ErrorCode.NOT_AUTHENTICATED
    )


async def test_new_hello_ends_the_authentication(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    await greet(session)
    assert session.phase is Phase.GREETED
    assert await refused(session, StatusReq()) == ErrorCode.NOT_AUTHENTICATED


async def test_bye_ends_the_session_in_any_phase(world: World) -> None:
    session = world.session()
    with pytest.raises(SessionEnded) as info:
        await session.handle(Bye(reason=ByeReason.DONE))
    assert isinstance(info.value.reply, ByeAck)
    await authenticate(world, session)
    with pytest.raises(SessionEnded):
        await session.handle(Bye(reason=ByeReason.UNDOCKED))


# ----- after authentication -----------------------------------------------------------------


async def test_list_and_read_after_auth(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    entries = await list_all(session)
    assert [e.clip_id.hex() for e in entries] == [c.clip_id for c in world.clips]
    assert world.hooks.names() == ["wait_sealed"]
    # Later pages do not wait for sealing again.
    reply = await session.handle(ListClips(cursor=1, max_entries=64))
    assert isinstance(reply, ListReply)
    assert world.hooks.names() == ["wait_sealed"]
    manifest = (world.clips[0].directory / "manifest.json").read_bytes()
    data = await session.handle(
        Read(clip_id=entries[0].clip_id, kind=FileKind.MANIFEST, index=0, offset=10, length=100)
    )
    assert isinstance(data, Data)
    assert bytes(data.data) == manifest[10:110]
    assert data.file_size == len(manifest)
    assert (data.clip_id, data.kind, data.index, data.offset) == (
        entries[0].clip_id,
        FileKind.MANIFEST,
        0,
        10,
    )
    assert session.log.data_bytes == 100


async def test_list_pages_are_bounded(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    reply = await session.handle(ListClips(cursor=0, max_entries=1))
    assert isinstance(reply, ListReply)
    assert (len(reply.entries), reply.next_cursor, reply.total) == (1, 1, 2)


async def test_status_after_auth(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    assert await session.handle(StatusReq()) == STATUS
    assert world.hooks.names() == ["status"]


async def test_a_reply_message_is_not_a_request(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    assert await refused(session, STATUS) == ErrorCode.BAD_STATE


async def test_valid_commit_deletes_and_a_repeat_is_already_gone(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    entry = (await list_all(session))[0]
    message = commit(world.dock_key, transcript, entry.clip_id, entry.chain_head)
    ack = await session.handle(message)
    assert ack == CommitAck(clip_id=entry.clip_id, status=CommitStatus.DELETED)
    assert not world.clips[0].directory.exists()
    assert world.clips[1].directory.is_dir()
    assert ("committed", (entry.clip_id.hex(), "dock-bay-1")) in world.hooks.calls
    assert session.log.clips_deleted == 1
    again = await session.handle(message)
    assert again == CommitAck(clip_id=entry.clip_id, status=CommitStatus.ALREADY_GONE)
    assert world.hooks.names().count("committed") == 1
    assert session.log.clips_deleted == 1
    assert [e.clip_id for e in await list_all(session)] == [bytes.fromhex(world.clips[1].clip_id)]


async def test_commit_replayed_from_another_session_is_refused(world: World) -> None:
    first = world.session()
    old_transcript = await authenticate(world, first)
    entry = (await list_all(first))[0]
    recorded = commit(world.dock_key, old_transcript, entry.clip_id, entry.chain_head)
    # A later session (fresh nonces): the recorded COMMIT is worthless there.
    session = world.session()
    await authenticate(world, session)
    await list_all(session)
    assert await refused(session, recorded) == ErrorCode.BAD_SIGNATURE
    assert world.clips[0].directory.is_dir()
    assert "committed" not in world.hooks.names()


async def test_commit_signed_by_another_key_is_refused(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    entry = (await list_all(session))[0]
    forged = commit(Ed25519PrivateKey.generate(), transcript, entry.clip_id, entry.chain_head)
    assert await refused(session, forged) == ErrorCode.BAD_SIGNATURE
    # The signature covers the clip id and chain head: another clip's COMMIT cannot be reused.
    good = commit(world.dock_key, transcript, entry.clip_id, entry.chain_head)
    other = bytes.fromhex(world.clips[1].clip_id)
    assert await refused(session, dataclasses.replace(good, clip_id=other)) == (
        ErrorCode.BAD_SIGNATURE
    )
    assert all(clip.directory.is_dir() for clip in world.clips)


async def test_commit_with_the_wrong_chain_head_keeps_the_clip(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    entry = (await list_all(session))[0]
    head = bytearray(entry.chain_head)
    head[0] ^= 0x01
    message = commit(world.dock_key, transcript, entry.clip_id, bytes(head))
    assert await refused(session, message) == ErrorCode.CHAIN_MISMATCH
    assert world.clips[0].directory.is_dir()
    assert session.log.clips_deleted == 0
    assert "committed" not in world.hooks.names()


async def test_commit_of_an_unlisted_clip_is_no_such_clip(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    await list_all(session)
    message = commit(world.dock_key, transcript, bytes(16), bytes(32))
    assert await refused(session, message) == ErrorCode.NO_SUCH_CLIP


async def test_time_set_signed_by_the_dock_sets_the_clock(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    utc = dt.datetime(2026, 11, 22, 12, 34, 56, 789_012, tzinfo=dt.UTC)
    utc_us = 1_795_350_896_789_012
    assert dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(microseconds=utc_us) == utc
    stamp = utc_us.to_bytes(8, "little", signed=True)
    message = TimeSet(
        utc_us=utc_us, signature=sign(world.dock_key, TIME_CONTEXT, transcript, stamp)
    )
    ack = await session.handle(message)
    assert world.hooks.calls == [("set_time", utc)]
    expected_offset_us = (utc - CAMERA_NOW) // dt.timedelta(microseconds=1)
    assert ack == TimeAck(
        previous_utc_us=int(CAMERA_NOW.timestamp()) * 1_000_000,
        offset_us=expected_offset_us,
        was_set=True,
    )
    assert session.log.clock_offset_s == pytest.approx(expected_offset_us / 1e6)


async def test_time_set_with_a_bad_signature_leaves_the_clock(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    utc_us = 1_795_350_896_000_000
    stamp = utc_us.to_bytes(8, "little", signed=True)
    signature = sign(world.dock_key, TIME_CONTEXT, transcript, stamp)
    for message in (
        TimeSet(utc_us=utc_us + 1, signature=signature),  # another time than signed
        TimeSet(utc_us=utc_us, signature=sign(world.dock_key, COMMIT_CONTEXT, transcript, stamp)),
        TimeSet(utc_us=utc_us, signature=sign(world.authority, TIME_CONTEXT, transcript, stamp)),
    ):
        assert await refused(session, message) == ErrorCode.BAD_SIGNATURE
    assert "set_time" not in world.hooks.names()


async def test_config_push_signed_by_the_authority_is_applied(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    policy = Policy(serial=12, issued_utc="2026-11-22T00:00:00.000000Z", pre_event_s=60.0)
    signed = sign_policy(world.authority, policy)
    ack = await session.handle(ConfigPush(policy=signed.data, signature=signed.signature))
    assert ack == ConfigAck(serial=12, applied=True)
    assert world.hooks.calls == [("apply_policy", signed)]
    assert session.log.policy_serial == 12
    # The same policy again is not newer: acknowledged, not applied.
    ack = await session.handle(ConfigPush(policy=signed.data, signature=signed.signature))
    assert ack == ConfigAck(serial=12, applied=False)


async def test_config_push_signed_by_another_key_is_rejected(world: World) -> None:
    session = world.session()
    await authenticate(world, session)
    policy = Policy(serial=13, issued_utc="2026-11-22T00:00:00.000000Z", stealth_allowed=True)
    # The dock itself may not write policy, nor may anyone else.
    for key in (world.dock_key, Ed25519PrivateKey.generate()):
        signed = sign_policy(key, policy)
        message = ConfigPush(policy=signed.data, signature=signed.signature)
        assert await refused(session, message) == ErrorCode.POLICY_REJECTED
    assert "apply_policy" not in world.hooks.names()
    assert session.log.policy_serial is None


# ----- a session is bound to its connection ---------------------------------------------------


async def test_a_new_peer_drops_the_authentication(world: World) -> None:
    session = world.session()
    transcript = await authenticate(world, session)
    entry = (await list_all(session))[0]
    session.new_peer(123_456)  # the Responder saw a request from another request stream
    assert session.phase is Phase.NEW
    assert session.log.foreign_requests == 1
    for message in _requests_after_auth(world):
        assert await refused(session, message) == ErrorCode.NOT_AUTHENTICATED
    # The old transcript is gone too: the old dock's signatures prove nothing now.
    message = commit(world.dock_key, transcript, entry.clip_id, entry.chain_head)
    assert await refused(session, message) == ErrorCode.NOT_AUTHENTICATED
    assert all(clip.directory.is_dir() for clip in world.clips)
    assert await refused(session, auth_dock(world, transcript)) == ErrorCode.BAD_STATE


# ----- clock trust ----------------------------------------------------------------------------


@dataclass
class Dock:
    key: Ed25519PrivateKey
    cert: DockCertificate


def make_dock(world: World, dock_id: str, *, days: float = 365) -> Dock:
    key = Ed25519PrivateKey.generate()
    cert = issue_dock_certificate(
        world.authority,
        key.public_key(),
        dock_id,
        not_before=START - dt.timedelta(days=1),
        days=days,
    )
    return Dock(key, cert)


async def set_clock(world: World, dock: Dock, utc: dt.datetime) -> TimeAck:
    """A whole session of ``dock``: HELLO, AUTH_DOCK, TIME_SET ``utc``; its TIME_ACK.

    Raises:
        ProtocolError: The camera refused the TIME_SET (or the authentication).
    """
    session = world.session()
    transcript = await greet(session)
    proof = AuthDock(dock.cert, sign(dock.key, AUTH_DOCK_CONTEXT, transcript))
    assert isinstance(await session.handle(proof), AuthDevice)
    utc_us = round(utc.timestamp() * 1_000_000)
    stamp = utc_us.to_bytes(8, "little", signed=True)
    reply = await session.handle(TimeSet(utc_us, sign(dock.key, TIME_CONTEXT, transcript, stamp)))
    assert isinstance(reply, TimeAck)
    return reply


async def clock_refused(world: World, dock: Dock, utc: dt.datetime) -> str:
    before = world.hooks.now
    with pytest.raises(ProtocolError) as info:
        await set_clock(world, dock, utc)
    assert info.value.code == ErrorCode.BAD_RANGE
    assert world.hooks.now == before  # refused means not applied
    return info.value.detail


async def test_a_fast_dock_cannot_lock_honest_docks_out(world: World) -> None:
    world.hooks.clock_set = False  # a new camera
    fast = make_dock(world, "dock-fast", days=1000)  # certified long enough for its own clock
    honest_a = Dock(world.dock_key, world.cert)  # certified for 365 days
    honest_b = make_dock(world, "dock-bay-2")
    far_future = CAMERA_NOW + dt.timedelta(days=800)
    ack = await set_clock(world, fast, far_future)
    assert not ack.was_set
    assert world.trust.status(True) is ClockStatus.PROVISIONAL
    # The honest dock's certificate has "expired" by the fast clock: not held against it
    # while the clock is provisional, and it may replace the time.
    ack = await set_clock(world, honest_a, CAMERA_NOW)
    assert ack.offset_us == -800 * 86_400 * 1_000_000
    assert world.hooks.now == CAMERA_NOW
    assert (world.trust.record.status, world.trust.record.set_by) == (
        ClockStatus.PROVISIONAL,
        "dock-bay-1",
    )
    # A second honest dock agrees: confirmed. The fast dock can no longer move the clock.
    await set_clock(world, honest_b, CAMERA_NOW + dt.timedelta(seconds=30))
    assert world.trust.record.status is ClockStatus.CONFIRMED
    assert world.trust.record.confirmed_by == "dock-bay-2"
    detail = await clock_refused(world, fast, far_future)
    assert "at most 120 s" in detail
    assert (await set_clock(world, honest_a, world.hooks.now)).offset_us == 0


async def test_one_dock_cannot_confirm_its_own_time(world: World) -> None:
    world.hooks.clock_set = False
    dock = Dock(world.dock_key, world.cert)
    await set_clock(world, dock, CAMERA_NOW)
    await set_clock(world, dock, CAMERA_NOW + dt.timedelta(seconds=1))
    assert world.trust.record.status is ClockStatus.PROVISIONAL


async def test_a_provisional_time_is_replaced_by_a_different_dock(world: World) -> None:
    # A clock that is set, but by no dock, counts as provisional: any dock may replace it.
    other = make_dock(world, "dock-bay-2")
    later = CAMERA_NOW + dt.timedelta(days=3)
    assert (await set_clock(world, other, later)).offset_us == 3 * 86_400 * 1_000_000
    assert world.trust.record.set_by == "dock-bay-2"
    await set_clock(world, Dock(world.dock_key, world.cert), later + dt.timedelta(days=1))
    assert world.hooks.now == later + dt.timedelta(days=1)
    assert world.trust.record.status is ClockStatus.PROVISIONAL


async def test_a_confirmed_clock_moves_at_most_max_step(world: World) -> None:
    world.confirm_clock()
    dock = Dock(world.dock_key, world.cert)
    ack = await set_clock(world, dock, CAMERA_NOW + dt.timedelta(seconds=100))
    assert ack.offset_us == 100_000_000
    detail = await clock_refused(world, dock, world.hooks.now + dt.timedelta(seconds=121))
    assert "+121 s" in detail
    # Back before a time it has held confirmed: never (the floor, kept across restarts).
    detail = await clock_refused(world, dock, world.hooks.now - dt.timedelta(hours=1))
    assert "earlier than" in detail


async def test_a_time_outside_the_docks_own_certificate_is_refused(world: World) -> None:
    world.hooks.clock_set = False
    dock = Dock(world.dock_key, world.cert)
    for utc in (START - dt.timedelta(days=2), START + dt.timedelta(days=400)):
        detail = await clock_refused(world, dock, utc)
        assert "outside its own certificate" in detail
    assert world.trust.record.status is ClockStatus.UNSET
    assert "set_time" not in world.hooks.names()
