"""The camera's side of one dock session: the state machine behind every reply.

States (docs/protocol.md, "Session"): ``NEW`` -> HELLO -> ``GREETED`` -> AUTH_DOCK (the
dock's certificate and transcript signature check out; the camera answers AUTH_DEVICE) ->
``AUTHENTICATED``, where TIME_SET, CONFIG_PUSH, LIST, READ, COMMIT and STATUS_REQ are
served, until BYE. Before ``AUTHENTICATED`` only HELLO, AUTH_DOCK and BYE are answered:
nothing about clips, not even how many there are.

Failed authentications are logged and rate-limited (the limiter outlives sessions), so a
rogue dock cannot try keys at link speed. A session is bound to its connection: when the
Responder sees a request from another request stream (:meth:`CameraSession.new_peer`) the
session falls back to ``NEW`` and forgets the dock. TIME_SET obeys the clock-trust rule
(:mod:`bodycam.daemon.dock.clock_trust`).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bodycam.daemon.dock.auth import (
    AUTH_DEVICE_CONTEXT,
    AUTH_DOCK_CONTEXT,
    COMMIT_CONTEXT,
    TIME_CONTEXT,
    AuthError,
    sign,
    transcript_hash,
    verify,
    verify_dock_certificate,
)
from bodycam.daemon.dock.clock_trust import ClockRefused, ClockTrust
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.policy import PolicyError, SignedPolicy, check_signed_policy
from bodycam.daemon.dock.session_limits import MAX_REQUEST_PAYLOAD, AuthLimiter, largest_requests
from bodycam.daemon.evidence.keys import raw_public_bytes
from bodycam.drivers.link.endpoint import DEFAULT_WINDOW
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import (
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    AuthDevice,
    AuthDock,
    Bye,
    ByeAck,
    Capability,
    Commit,
    CommitAck,
    CommitStatus,
    ConfigAck,
    ConfigPush,
    Data,
    DockCertificate,
    ErrorCode,
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
from bodycam.drivers.link.responder import SessionEnded

_log = logging.getLogger(__name__)

LIST_PAGE = 64
CAMERA_CAPABILITIES = Capability.RESUME | Capability.TIME | Capability.CONFIG


class Phase(enum.Enum):
    NEW = "new"
    GREETED = "greeted"
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True)
class CameraIdentity:
    device_id: str
    firmware: str
    signing_key: Ed25519PrivateKey
    # None: the camera was never given the force authority's key, so no dock can prove
    # itself and nothing leaves the camera.
    authority: Ed25519PublicKey | None


@dataclass(frozen=True)
class TimeChange:
    previous_utc: dt.datetime
    offset_s: float
    was_set: bool


class CameraHooks(Protocol):
    """What a session needs from the running device."""

    def set_time(self, utc: dt.datetime) -> TimeChange: ...

    def clock_is_set(self) -> bool: ...

    def utc_now(self) -> dt.datetime: ...

    def apply_policy(self, signed: SignedPolicy) -> bool:
        """Store and apply a verified policy; False when it is not newer than the current one."""
        ...

    def status(self) -> Status: ...

    def committed(self, clip_id: str, dock_id: str) -> None: ...

    async def wait_sealed(self) -> None:
        """Return once no clip is still being sealed (docking stops a recording)."""
        ...


@dataclass
class SessionLog:
    """What happened in one session, for the device's log and status."""

    dock_id: str | None = None
    authenticated: bool = False
    clips_deleted: int = 0
    data_bytes: int = 0
    clock_offset_s: float | None = None
    clock_refusal: str | None = None
    policy_serial: int | None = None
    refusal: str | None = None
    foreign_requests: int = 0  # requests from another connection that reset the session


@dataclass(frozen=True)
class _AuthenticatedDock:
    """The dock that proved itself in this session, and the transcript it signed."""

    key: Ed25519PublicKey
    certificate: DockCertificate
    transcript: bytes


class CameraSession:
    """Answers one dock connection (the Responder's handler)."""

    def __init__(
        self,
        identity: CameraIdentity,
        outbox: Outbox,
        hooks: CameraHooks,
        limiter: AuthLimiter,
        clock_trust: ClockTrust | None = None,
    ) -> None:
        self.identity = identity
        self.outbox = outbox
        self.hooks = hooks
        self.limiter = limiter
        # Shared by the sessions of a daemon (a different dock confirms in another session).
        self.clock_trust = clock_trust if clock_trust is not None else ClockTrust()
        self.log = SessionLog()
        # The phase is derived from these two, so it cannot disagree with what is known.
        self._transcript: bytes | None = None  # set by a good HELLO exchange
        self._dock: _AuthenticatedDock | None = None  # set by a good AUTH_DOCK

    @property
    def phase(self) -> Phase:
        """Where the session stands: NEW, GREETED (HELLO done) or AUTHENTICATED."""
        if self._dock is not None:
            return Phase.AUTHENTICATED
        return Phase.NEW if self._transcript is None else Phase.GREETED

    def _forget(self) -> None:
        self._transcript = None
        self._dock = None

    def new_peer(self, seq: int) -> None:
        """Another connection is talking (the Responder's ``on_new_peer``): start over.

        A request whose number this session's dock cannot send comes from somebody else,
        e.g. a second process on the same tty after the dock died without BYE. It must not
        inherit the authentication: back to ``NEW``; the next requests need HELLO and AUTH.
        """
        self.log.foreign_requests += 1
        if self.phase is not Phase.NEW:
            _log.warning(
                "dock %s: request %d came from another connection; session dropped, "
                "HELLO and AUTH needed again",
                self.log.dock_id,
                seq,
            )
        self._forget()

    async def handle(self, message: Message) -> Message | None:
        if isinstance(message, Hello):
            return self._hello(message)
        if isinstance(message, Bye):
            raise SessionEnded(ByeAck())
        if isinstance(message, AuthDock):
            return self._auth(message)
        if self.phase is not Phase.AUTHENTICATED:
            raise ProtocolError(
                ErrorCode.NOT_AUTHENTICATED,
                f"{type(message).__name__} refused: the dock has not authenticated",
            )
        if isinstance(message, Read):
            return self._read(message)
        if isinstance(message, ListClips):
            if message.cursor == 0:
                await self.hooks.wait_sealed()
            entries, following, total = self.outbox.page(
                message.cursor, min(message.max_entries, LIST_PAGE)
            )
            return ListReply(total=total, next_cursor=following, entries=tuple(entries))
        if isinstance(message, Commit):
            return self._commit(message)
        if isinstance(message, TimeSet):
            return self._time(message)
        if isinstance(message, ConfigPush):
            return self._config(message)
        if isinstance(message, StatusReq):
            return self.hooks.status()
        raise ProtocolError(
            ErrorCode.BAD_STATE, f"{type(message).__name__} is not a request a camera answers"
        )

    # ----- handshake ----------------------------------------------------------------------

    def _hello(self, hello: Hello) -> Hello:
        self._forget()
        if hello.role != Role.DOCK:
            raise ProtocolError(ErrorCode.BAD_STATE, "HELLO must come from a dock")
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.VERSION_MISMATCH,
                f"camera speaks protocol {PROTOCOL_VERSION}, dock {hello.protocol_version}",
            )
        if hello.schema_hash != SCHEMA_HASH:
            raise ProtocolError(
                ErrorCode.SCHEMA_MISMATCH,
                f"message schema {hello.schema_hash.hex()} differs from the camera's "
                f"{SCHEMA_HASH.hex()}",
            )
        reply = Hello(
            protocol_version=PROTOCOL_VERSION,
            schema_hash=SCHEMA_HASH,
            role=Role.CAMERA,
            node_id=self.identity.device_id,
            firmware=self.identity.firmware[:64],
            capabilities=CAMERA_CAPABILITIES,
            max_payload=MAX_REQUEST_PAYLOAD,
            window=DEFAULT_WINDOW,
            nonce=os.urandom(32),
        )
        self._transcript = transcript_hash(encode_message(hello), encode_message(reply))
        self.log.dock_id = hello.node_id
        return reply

    def _auth(self, auth: AuthDock) -> AuthDevice:
        transcript = self._transcript
        if transcript is None:
            raise ProtocolError(ErrorCode.BAD_STATE, "AUTH_DOCK before HELLO")
        self.limiter.check()
        try:
            dock_key = self._check_dock(auth, transcript)
        except AuthError as exc:
            self.limiter.failed()
            self.log.refusal = str(exc)
            _log.warning("dock authentication failed (%d in a row): %s", self.limiter.failures, exc)
            raise ProtocolError(ErrorCode.AUTH_FAILED, str(exc)[:200]) from None
        self.limiter.succeeded()
        self._dock = _AuthenticatedDock(dock_key, auth.certificate, transcript)
        self.log.authenticated = True
        self.log.dock_id = auth.certificate.dock_id
        _log.info("dock %s authenticated", auth.certificate.dock_id)
        key = self.identity.signing_key
        return AuthDevice(
            device_id=self.identity.device_id,
            public_key=raw_public_bytes(key.public_key()),
            signature=sign(key, AUTH_DEVICE_CONTEXT, transcript),
        )

    def _check_dock(self, auth: AuthDock, transcript: bytes) -> Ed25519PublicKey:
        authority = self.identity.authority
        if authority is None:
            raise AuthError("this camera holds no force authority key (not provisioned)")
        # Checked against the clock only once two docks agree on it (docs/protocol.md,
        # "Clock trust"): one wrong dock must not lock out every honest one.
        now = self.clock_trust.certificate_time(self.hooks.utc_now(), self.hooks.clock_is_set())
        dock_key = verify_dock_certificate(auth.certificate, authority, now=now)
        if not verify(dock_key, auth.signature, AUTH_DOCK_CONTEXT, transcript):
            raise AuthError(
                f"dock {auth.certificate.dock_id!r} did not sign this session's transcript"
            )
        return dock_key

    # ----- after authentication -----------------------------------------------------------

    def _read(self, read: Read) -> Data:
        data, size = self.outbox.read(read.clip_id, read.kind, read.index, read.offset, read.length)
        self.log.data_bytes += len(data)
        return Data(
            clip_id=read.clip_id,
            kind=read.kind,
            index=read.index,
            offset=read.offset,
            file_size=size,
            data=data,
        )

    def _signed_by_dock(self, signature: bytes, context: bytes, *parts: bytes) -> DockCertificate:
        """Check a request's signature by the authenticated dock; its certificate."""
        dock = self._dock
        if dock is None:  # handle() serves these only when authenticated
            raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "the dock has not authenticated")
        if not verify(dock.key, signature, context, dock.transcript, *parts):
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "not signed by the authenticated dock")
        return dock.certificate

    def _commit(self, commit: Commit) -> CommitAck:
        self._signed_by_dock(commit.signature, COMMIT_CONTEXT, commit.clip_id, commit.chain_head)
        if commit.clip_id in self.outbox.deleted:
            return CommitAck(clip_id=commit.clip_id, status=CommitStatus.ALREADY_GONE)
        clip = self.outbox.get(commit.clip_id)
        if commit.chain_head != clip.chain_head:
            raise ProtocolError(
                ErrorCode.CHAIN_MISMATCH,
                f"clip {commit.clip_id.hex()}: the dock's chain head is not the camera's",
            )
        try:
            self.outbox.delete(clip)
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.STORAGE_ERROR, f"cannot delete {clip.directory.name}: {exc.strerror}"
            ) from None
        self.log.clips_deleted += 1
        self.hooks.committed(commit.clip_id.hex(), self.log.dock_id or "?")
        return CommitAck(clip_id=commit.clip_id, status=CommitStatus.DELETED)

    def _time(self, message: TimeSet) -> TimeAck:
        cert = self._signed_by_dock(
            message.signature, TIME_CONTEXT, message.utc_us.to_bytes(8, "little", signed=True)
        )
        try:
            utc = dt.datetime.fromtimestamp(message.utc_us / 1_000_000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ProtocolError(ErrorCode.BAD_RANGE, "TIME_SET: no such time") from None
        try:
            decision = self.clock_trust.check(
                dock_id=cert.dock_id,
                not_before_s=cert.not_before_s,
                not_after_s=cert.not_after_s,
                utc=utc,
                now=self.hooks.utc_now(),
                clock_is_set=self.hooks.clock_is_set(),
            )
        except ClockRefused as exc:
            self.log.clock_refusal = str(exc)
            _log.warning("clock: TIME_SET refused: %s", exc)
            raise ProtocolError(ErrorCode.BAD_RANGE, f"TIME_SET refused: {exc}"[:200]) from None
        change = self.hooks.set_time(utc)
        record = self.clock_trust.applied(decision, change.offset_s)
        self.log.clock_offset_s = change.offset_s
        _log.info(
            "clock: set by dock %s, corrected by %+.3f s; now %s",
            cert.dock_id,
            change.offset_s,
            record.status,
        )
        return TimeAck(
            previous_utc_us=int(change.previous_utc.timestamp() * 1_000_000),
            offset_us=round(change.offset_s * 1_000_000),
            was_set=change.was_set,
        )

    def _config(self, message: ConfigPush) -> ConfigAck:
        authority = self.identity.authority
        assert authority is not None  # authenticated, so provisioned
        try:
            signed = check_signed_policy(
                message.policy, message.signature, authority, source="pushed policy"
            )
        except PolicyError as exc:
            raise ProtocolError(ErrorCode.POLICY_REJECTED, str(exc)[:200]) from None
        applied = self.hooks.apply_policy(signed)
        self.log.policy_serial = signed.policy.serial
        return ConfigAck(serial=signed.policy.serial, applied=applied)


__all__ = [
    "CAMERA_CAPABILITIES",
    "LIST_PAGE",
    "MAX_REQUEST_PAYLOAD",
    "AuthLimiter",
    "CameraHooks",
    "CameraIdentity",
    "CameraSession",
    "Phase",
    "SessionLog",
    "TimeChange",
    "largest_requests",
]
