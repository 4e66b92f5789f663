"""The reference dock's side of a session: authenticate, set time, push policy, offload.

For each clip the camera lists, the dock pulls the signed manifest first and checks its
signature with the camera's *registered* key (not the one the manifest carries), then
streams the segments, each checked against the manifest's SHA-256 as it lands, then runs the
complete offline verification (:func:`verify_clip`: records, chain, links) on the copy. Only
a clip that passes is moved into the store, fsynced, logged, and then COMMITted, which is
the one message that lets the camera delete it. A clip that fails is quarantined, logged and
left on the camera.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.daemon.dock.auth import (
    AUTH_DEVICE_CONTEXT,
    AUTH_DOCK_CONTEXT,
    COMMIT_CONTEXT,
    TIME_CONTEXT,
    DockIdentity,
    sign,
    transcript_hash,
    verify,
)
from bodycam.daemon.dock.policy import SignedPolicy
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded
from bodycam.daemon.evidence.journal import JOURNAL_NAME
from bodycam.daemon.evidence.keys import fingerprint, load_device_public_key, raw_public_bytes
from bodycam.daemon.evidence.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SIGNATURE_SIZE,
    load_manifest,
    load_signature,
    signature_valid,
)
from bodycam.daemon.evidence.schema import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.fetch import FetchCounters, FetchError, FileJob, fetch_files
from bodycam.dock.store import DockStore, StoreError
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.endpoint import Requester
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.frame import MAX_PAYLOAD
from bodycam.drivers.link.messages import (
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    AuthDevice,
    AuthDock,
    Bye,
    ByeReason,
    Capability,
    ClipEntry,
    Commit,
    CommitAck,
    ConfigAck,
    ConfigPush,
    FileKind,
    Hello,
    ListClips,
    ListReply,
    Message,
    Role,
    Status,
    StatusReq,
    TimeAck,
    TimeSet,
    encode_message,
)

_log = logging.getLogger(__name__)

DOCK_CAPABILITIES = Capability.RESUME | Capability.TIME | Capability.CONFIG


class DockRefused(Exception):  # noqa: N818 - an outcome, reported to the operator
    """The session cannot go on (an unknown camera, a failed proof, a version mismatch)."""


@dataclass
class ClipOutcome:
    clip_id: str
    name: str
    status: str  # "committed", "rejected", "kept" (stored, commit not confirmed)
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """Offload progress for a view: a callback gets this after every chunk."""

    device_id: str = ""
    clips_total: int = 0
    clips_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    current: str = ""


@dataclass
class DockReport:
    port: str
    device_id: str | None = None
    dock_id: str = ""
    authenticated: bool = False
    clock_offset_s: float | None = None
    policy_applied: bool | None = None
    clips: list[ClipOutcome] = field(default_factory=list)
    camera_status: Status | None = None
    bytes_received: int = 0
    bytes_resumed: int = 0
    error: str | None = None

    @property
    def committed(self) -> list[ClipOutcome]:
        return [c for c in self.clips if c.status == "committed"]

    @property
    def rejected(self) -> list[ClipOutcome]:
        return [c for c in self.clips if c.status == "rejected"]


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
        """Run one session with the camera on ``link``; never raises for link or peer faults."""
        report = DockReport(port=link.name, dock_id=self.identity.dock_id)
        counters = FetchCounters()
        try:
            async with Requester(link, window=self.window, retry_s=self.retry_s) as requester:
                session = _Session(self, requester, report, counters)
                await session.run()
        except (LinkClosedError, ProtocolError, DockRefused) as exc:
            report.error = str(exc)
            _log.warning("%s: session ended early: %s", link.name, exc)
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
        self.transcript = b""
        self.device_id = ""
        self.device_key: Ed25519PublicKey | None = None
        self.progress = Progress()

    async def call(self, message: Message, expected: type[Message]) -> Message:
        reply = await self.req.call(message)
        if not isinstance(reply, expected):
            raise DockRefused(f"expected {expected.__name__}, camera sent {type(reply).__name__}")
        return reply

    async def run(self) -> None:
        await self.handshake()
        await self.set_time()
        if self.agent.policy is not None:
            await self.push_policy(self.agent.policy)
        entries = await self.list_clips()
        self.progress = Progress(
            device_id=self.device_id,
            clips_total=len(entries),
            bytes_total=sum(e.total_bytes for e in entries),
        )
        for entry in entries:
            self.report.clips.append(await self.offload(entry))
            self.progress.clips_done += 1
            self._progress()
        status = await self.call(StatusReq(), Status)
        assert isinstance(status, Status)
        self.report.camera_status = status
        await self.req.call(Bye(reason=ByeReason.DONE))

    # ----- handshake ----------------------------------------------------------------------

    async def handshake(self) -> None:
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            schema_hash=SCHEMA_HASH,
            role=Role.DOCK,
            node_id=self.agent.identity.dock_id,
            firmware=self.agent.firmware,
            capabilities=DOCK_CAPABILITIES,
            max_payload=MAX_PAYLOAD,
            window=self.agent.window,
            nonce=os.urandom(32),
        )
        reply = await self.call(hello, Hello)
        assert isinstance(reply, Hello)
        if reply.role != Role.CAMERA:
            raise DockRefused("the peer is not a camera")
        # The smaller window of the two: the camera keeps at most that many replies.
        self.req.window = max(1, min(self.req.window, reply.window))
        self.device_id = reply.node_id
        self.report.device_id = reply.node_id
        self.transcript = transcript_hash(encode_message(hello), encode_message(reply))
        try:
            key_path = self.store.device_key_path(reply.node_id)
            self.device_key = load_device_public_key(key_path)
        except (EvidenceError, StoreError) as exc:
            self._refuse_unknown(reply.node_id, str(exc))
        identity = self.agent.identity
        auth = AuthDock(
            certificate=identity.certificate,
            signature=sign(identity.key, AUTH_DOCK_CONTEXT, self.transcript),
        )
        proof = await self.call(auth, AuthDevice)
        assert isinstance(proof, AuthDevice)
        assert self.device_key is not None
        if proof.device_id != self.device_id or proof.public_key != raw_public_bytes(
            self.device_key
        ):
            self._refuse_unknown(self.device_id, "its key is not the registered one")
        if not verify(self.device_key, proof.signature, AUTH_DEVICE_CONTEXT, self.transcript):
            self._refuse_unknown(self.device_id, "it did not sign this session's transcript")
        self.report.authenticated = True
        _log.info("camera %s authenticated (key %s)", self.device_id, fingerprint(self.device_key))

    def _refuse_unknown(self, device_id: str, why: str) -> None:
        message = f"camera {device_id!r} refused: {why}"
        _log.warning("%s", message)
        raise DockRefused(message)

    async def set_time(self) -> None:
        utc_us = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
        stamp = utc_us.to_bytes(8, "little", signed=True)
        signature = sign(self.agent.identity.key, TIME_CONTEXT, self.transcript, stamp)
        ack = await self.call(TimeSet(utc_us=utc_us, signature=signature), TimeAck)
        assert isinstance(ack, TimeAck)
        self.report.clock_offset_s = ack.offset_us / 1_000_000
        _log.info(
            "camera %s clock corrected by %+.3f s (was %s)",
            self.device_id,
            self.report.clock_offset_s,
            "set" if ack.was_set else "never set",
        )

    async def push_policy(self, policy: SignedPolicy) -> None:
        ack = await self.call(ConfigPush(policy=policy.data, signature=policy.signature), ConfigAck)
        assert isinstance(ack, ConfigAck)
        self.report.policy_applied = ack.applied

    async def list_clips(self) -> list[ClipEntry]:
        entries: list[ClipEntry] = []
        cursor = 0
        while True:
            page = await self.call(ListClips(cursor=cursor, max_entries=64), ListReply)
            assert isinstance(page, ListReply)
            entries.extend(page.entries)
            if page.next_cursor == 0:
                return entries
            if page.next_cursor <= cursor:
                raise DockRefused("camera's LIST cursor went backwards")
            cursor = page.next_cursor

    # ----- one clip -----------------------------------------------------------------------

    async def offload(self, entry: ClipEntry) -> ClipOutcome:
        clip_id = entry.clip_id.hex()
        outcome = ClipOutcome(clip_id, entry.name, "kept", bytes=entry.total_bytes)
        self.progress.current = entry.name
        stored = self.store.stored_clip_dir(clip_id)
        if stored is None:
            problems = await self.pull_and_verify(entry)
            if problems:
                outcome.status, outcome.problems = "rejected", problems
                return outcome
            stored = self.store.stored_clip_dir(clip_id)
        else:
            self.progress.bytes_done += entry.total_bytes
        assert stored is not None
        if _stored_chain_head(stored) != entry.chain_head:
            outcome.status = "rejected"
            outcome.problems = ["the store holds a different clip under this id; not committed"]
            _log.error("clip %s: %s", clip_id, outcome.problems[0])
            return outcome
        if await self.commit(entry):
            outcome.status = "committed"
        return outcome

    async def pull_and_verify(self, entry: ClipEntry) -> list[str]:
        """Fetch and verify one clip; [] when it was accepted into the store."""
        clip_id = entry.clip_id.hex()
        if entry.manifest_size > MAX_MANIFEST_BYTES or entry.signature_size != SIGNATURE_SIZE:
            # Bounded before anything is fetched: a listing is input from the link.
            problems = [
                f"listing claims a {entry.manifest_size}-byte manifest and a "
                f"{entry.signature_size}-byte signature; refused unfetched"
            ]
            _log.error("clip %s: %s", clip_id, problems[0])
            return problems
        incoming = self.store.incoming_dir(self.device_id, entry.name)
        head = [
            FileJob(FileKind.MANIFEST, 0, incoming / MANIFEST_NAME, entry.manifest_size, None),
            FileJob(FileKind.SIGNATURE, 0, incoming / SIGNATURE_NAME, entry.signature_size, None),
            FileJob(FileKind.JOURNAL, 0, incoming / JOURNAL_NAME, entry.journal_size, None),
        ]
        await fetch_files(self.req, entry.clip_id, head, counters=self.counters)
        problems, manifest = self._check_manifest(incoming, entry)
        if manifest is None:
            self.store.quarantine(self.device_id, clip_id, incoming, problems)
            return problems
        jobs = [
            FileJob(FileKind.SEGMENT, s.index, incoming / s.name, s.size, bytes.fromhex(s.sha256))
            for s in manifest.segments
        ]
        for attempt in (1, 2):
            try:
                await fetch_files(
                    self.req, entry.clip_id, jobs, counters=self.counters, on_bytes=self._bytes
                )
                break
            except FetchError as exc:
                # Once could be the link (CRC-32 misses 1 in 4 billion); twice is the file.
                _log.warning("clip %s: %s (attempt %d)", clip_id, exc, attempt)
                if attempt == 2:
                    problems = [f"{exc} (altered on the camera?)"]
                    self.store.quarantine(self.device_id, clip_id, incoming, problems)
                    return problems
        verdict = verify_clip(incoming, device_key=self.device_key)
        if not verdict.ok:
            self.store.quarantine(self.device_id, clip_id, incoming, verdict.problems)
            _log.error("clip %s rejected: %s", clip_id, "; ".join(verdict.problems))
            return verdict.problems
        assert self.device_key is not None
        self.store.accept(
            self.device_id,
            clip_id,
            incoming,
            segments=verdict.segments,
            bytes=manifest.total_bytes,
            chain_head=manifest.chain_head,
            signer=fingerprint(self.device_key),
            dock_id=self.agent.identity.dock_id,
            clock_offset_s=self.report.clock_offset_s,
        )
        return []

    def _check_manifest(
        self, incoming: Path, entry: ClipEntry
    ) -> tuple[list[str], Manifest | None]:
        try:
            data = read_bounded(incoming / MANIFEST_NAME, MAX_MANIFEST_BYTES, what="manifest")
            signature = load_signature(incoming)
        except EvidenceError:
            signature = b""
            data = b""
        if hashlib.sha256(data).digest() != entry.manifest_sha256:
            return ["manifest: differs from the one the camera listed"], None
        assert self.device_key is not None
        if not signature_valid(data, signature, self.device_key):
            return ["manifest: signature invalid for the registered camera key (edited?)"], None
        try:
            manifest = parse_manifest(data, source=f"{entry.name}/{MANIFEST_NAME}")
        except EvidenceError as exc:
            return [str(exc)], None
        if manifest.clip_id != entry.clip_id.hex() or manifest.device_id != self.device_id:
            return ["manifest: names another clip or camera than the listing"], None
        return [], manifest

    async def commit(self, entry: ClipEntry) -> bool:
        signature = sign(
            self.agent.identity.key,
            COMMIT_CONTEXT,
            self.transcript,
            entry.clip_id,
            entry.chain_head,
        )
        ack = await self.call(
            Commit(clip_id=entry.clip_id, chain_head=entry.chain_head, signature=signature),
            CommitAck,
        )
        assert isinstance(ack, CommitAck)
        self.store.mark_committed(
            self.device_id,
            entry.clip_id.hex(),
            dock_id=self.agent.identity.dock_id,
            camera=ack.status.name.lower(),
        )
        return True

    def _bytes(self, n: int) -> None:
        self.progress.bytes_done += n
        self._progress()

    def _progress(self) -> None:
        if self.agent.on_progress is not None:
            self.agent.on_progress(self.progress)


def _stored_chain_head(directory: Path) -> bytes | None:
    try:
        _, manifest = load_manifest(directory)
    except (OSError, EvidenceError):
        return None
    return bytes.fromhex(manifest.chain_head)


__all__ = ["ClipOutcome", "DockAgent", "DockRefused", "DockReport", "Progress"]
