"""The reference dock's side of a session: authenticate, set time, push policy, offload.

The session's flow lives here; what it reads and decides with lives beside it. The listing
is paged and screened by :mod:`~bodycam.dock.listing` (every name through the store's name
rule before a path is built, every size through :mod:`~bodycam.dock.limits`). Each clip
left goes to :mod:`~bodycam.dock.offload`, one at a time: refused when it cannot fit in
the store's free space, pulled and verified against the camera's *registered* key by
:mod:`~bodycam.dock.fetch` (``verify_clip``, the very check ``bodycam verify --device-key``
runs), stored under this camera's own device id, and COMMITted (the one message that lets
the camera delete it) only when the stored copy names this clip, this camera and the chain
head the camera listed. Every refusal comes before that signature; a clip that fails is
quarantined or refused, logged in custody and left on the camera. The outcome types are
in :mod:`~bodycam.dock.report` (and re-exported here).

Faults stay where they happen: a bad clip ends that clip, a full disk or a broken store ends
the session with a reason, and nothing the camera or the store does escapes :meth:`serve`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.daemon.dock.auth import (
    AUTH_DEVICE_CONTEXT,
    AUTH_DOCK_CONTEXT,
    TIME_CONTEXT,
    DockIdentity,
    sign,
    transcript_hash,
    verify,
)
from bodycam.daemon.dock.policy import SignedPolicy
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import fingerprint, load_device_public_key, raw_public_bytes
from bodycam.dock import listing
from bodycam.dock.fetch import FetchCounters
from bodycam.dock.offload import ClipOffload, call
from bodycam.dock.report import (
    SKIPPED,
    ClipOutcome,
    DockRefused,
    DockReport,
    Progress,
    end_reason,
)
from bodycam.dock.store import DockStore, check_name
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.endpoint import RemoteError, Requester
from bodycam.drivers.link.frame import MAX_PAYLOAD
from bodycam.drivers.link.messages import (
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    AuthDevice,
    AuthDock,
    Bye,
    ByeReason,
    Capability,
    ConfigAck,
    ConfigPush,
    Hello,
    Message,
    Role,
    Status,
    StatusReq,
    TimeAck,
    TimeSet,
    encode_message,
)

# The CLI, the bays, telemetry, the simulator and the tests import the outcome types here.
__all__ = ["DOCK_CAPABILITIES", "ClipOutcome", "DockAgent", "DockRefused", "DockReport", "Progress"]

_log = logging.getLogger(__name__)

_Reply = TypeVar("_Reply", bound=Message)

DOCK_CAPABILITIES = Capability.RESUME | Capability.TIME | Capability.CONFIG


class DockAgent:
    """Serves cameras on one bay (one link at a time; run one agent per bay)."""

    def __init__(
        self,
        store: DockStore,
        identity: DockIdentity,
        *,
        policy: SignedPolicy | None = None,
        firmware: str = "bodycam-dock",
        window: int = 16,
        retry_s: float = 0.5,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.policy = policy
        self.firmware = firmware
        self.window = window
        self.retry_s = retry_s
        self.on_progress = on_progress

    async def serve(self, link: ByteLink) -> DockReport:
        """Run one session with the camera on ``link``.

        Never raises except :class:`asyncio.CancelledError`: whatever goes wrong (the link,
        the camera, the store, the disk, a bug) ends this session with ``report.error`` set
        and logged, and never another bay's session.
        """
        report = DockReport(port=link.name, dock_id=self.identity.dock_id)
        counters = FetchCounters()
        try:
            async with Requester(link, window=self.window, retry_s=self.retry_s) as requester:
                await _Session(self, requester, report, counters).run()
        except Exception as exc:  # any fault, a bug too, costs this session only
            report.error = end_reason(link.name, exc)
        report.bytes_received = counters.bytes_received
        report.bytes_resumed = counters.bytes_resumed
        return report


class _Session:
    def __init__(
        self,
        agent: DockAgent,
        requester: Requester,
        report: DockReport,
        counters: FetchCounters,
    ) -> None:
        self.agent = agent
        self.req = requester
        self.report = report
        self.counters = counters
        self.store = agent.store
        self.dock_id = agent.identity.dock_id
        self.transcript = b""
        self.device_id = ""
        self.device_key: Ed25519PublicKey | None = None

    async def call(self, message: Message, expected: type[_Reply]) -> _Reply:
        """``message``'s reply, which must be an ``expected`` (else the session ends)."""
        return await call(self.req, message, expected)

    async def run(self) -> None:
        await self.handshake()
        await self.set_time()
        if self.agent.policy is not None:
            await self.push_policy(self.agent.policy)
        entries, refused = listing.screen(await listing.list_clips(self.req))
        for entry, problems in refused:
            self.report.clips.append(listing.refuse(self.store, self.device_id, entry, problems))
        planned = {e.name for e in entries}  # the clips this session may pull
        removed = self.store.clean_incoming(self.device_id, keep=planned)
        if removed:
            _log.info("camera %s: removed stale transfers %s", self.device_id, removed)
        progress = Progress(
            device_id=self.device_id,
            clips_total=len(entries),
            bytes_total=sum(e.total_bytes for e in entries),
        )
        clips = ClipOffload(
            self.req,
            self.store,
            self.agent.identity,
            device_id=self.device_id,
            device_key=self._key(),
            transcript=self.transcript,
            clock_offset_s=self.report.clock_offset_s,
            planned=planned,
            counters=self.counters,
            progress=progress,
            on_progress=self.agent.on_progress,
        )
        for entry in entries:
            if clips.stopped is not None:  # a full disk or a broken store: pull no more
                self.report.clips.append(
                    ClipOutcome(entry.clip_id.hex(), entry.name, SKIPPED, entry.total_bytes)
                )
                continue
            self.report.clips.append(await clips.offload(entry))
            progress.clips_done += 1
            clips.progressed()
        await self.finish()
        if clips.stopped is not None:
            self.report.error = clips.stopped

    async def finish(self) -> None:
        """STATUS and BYE. Every listed clip has been handled: a link lost now is an end."""
        try:
            self.report.camera_status = await self.call(StatusReq(), Status)
            await self.req.call(Bye(reason=ByeReason.DONE))
        except LinkClosedError as exc:
            # The camera answers BYE and hangs up at once; its reply may be lost on the way.
            _log.info("camera %s: link closed at the end of the session (%s)", self.device_id, exc)
        except RemoteError as exc:
            _log.info("camera %s: %s at the end of the session", self.device_id, exc)

    # ----- handshake ----------------------------------------------------------------------

    async def handshake(self) -> None:
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            schema_hash=SCHEMA_HASH,
            role=Role.DOCK,
            node_id=self.dock_id,
            firmware=self.agent.firmware,
            capabilities=DOCK_CAPABILITIES,
            max_payload=MAX_PAYLOAD,
            window=self.agent.window,
            nonce=os.urandom(32),
        )
        reply = await self.call(hello, Hello)
        if reply.role != Role.CAMERA:
            raise DockRefused("the peer is not a camera")
        # The smaller window of the two: the camera keeps at most that many replies.
        self.req.window = max(1, min(self.req.window, reply.window))
        self.transcript = transcript_hash(encode_message(hello), encode_message(reply))
        try:
            self.device_id = check_name(reply.node_id, "device id")
            self.report.device_id = self.device_id
            self.device_key = load_device_public_key(self.store.device_key_path(self.device_id))
        except EvidenceError as exc:  # StoreError too
            self._refuse_unknown(reply.node_id, str(exc))
        identity = self.agent.identity
        auth = AuthDock(
            certificate=identity.certificate,
            signature=sign(identity.key, AUTH_DOCK_CONTEXT, self.transcript),
        )
        proof = await self.call(auth, AuthDevice)
        key = self._key()
        if proof.device_id != self.device_id or proof.public_key != raw_public_bytes(key):
            self._refuse_unknown(self.device_id, "its key is not the registered one")
        if not verify(key, proof.signature, AUTH_DEVICE_CONTEXT, self.transcript):
            self._refuse_unknown(self.device_id, "it did not sign this session's transcript")
        self.report.authenticated = True
        _log.info("camera %s authenticated (key %s)", self.device_id, fingerprint(key))

    def _key(self) -> Ed25519PublicKey:
        if self.device_key is None:
            raise DockRefused("no registered key for the camera")
        return self.device_key

    def _refuse_unknown(self, device_id: str, why: str) -> None:
        message = f"camera {device_id[:80]!r} refused: {why}"
        _log.warning("%s", message)
        raise DockRefused(message)

    async def set_time(self) -> None:
        utc_us = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
        stamp = utc_us.to_bytes(8, "little", signed=True)
        signature = sign(self.agent.identity.key, TIME_CONTEXT, self.transcript, stamp)
        was_set: bool | None = None
        try:
            ack = await self.call(TimeSet(utc_us=utc_us, signature=signature), TimeAck)
        except RemoteError as exc:
            # The camera bounds what one dock may move its clock; a refusal is its right and
            # no reason to leave its footage on it. Recorded, then the session goes on.
            self.report.clock_refused = exc.detail or str(exc)
            _log.warning("camera %s refused the time: %s", self.device_id, exc)
        else:
            self.report.clock_offset_s, was_set = ack.offset_us / 1_000_000, ack.was_set
            _log.info(
                "camera %s clock corrected by %+.3f s (was %s)",
                self.device_id,
                self.report.clock_offset_s,
                "set" if ack.was_set else "never set",
            )
        self.store.record_clock(
            self.device_id,
            dock_id=self.dock_id,
            offset_s=self.report.clock_offset_s,
            was_set=was_set,
            refused=self.report.clock_refused,
        )

    async def push_policy(self, policy: SignedPolicy) -> None:
        ack = await self.call(ConfigPush(policy=policy.data, signature=policy.signature), ConfigAck)
        self.report.policy_applied = ack.applied
