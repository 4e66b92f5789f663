"""The reference dock's side of a session: authenticate, set time, push policy, offload.

Everything the camera says is bounded before it is believed (:mod:`bodycam.dock.limits`):
every name passes the store's name rule before a path is built from it, sizes and page
counts are capped, and a clip that cannot fit in the store's free space is refused before a
byte is written. For each clip left, the dock pulls the signed manifest first and checks its
signature with the camera's *registered* key (not the one the manifest carries), then
streams the segments, each checked against the manifest's SHA-256 as it lands. The final
word is :func:`verify_clip` with the registered key, the very check ``bodycam verify
--device-key`` runs. Only a clip that passes is stored under this camera's own device id,
and only a clip stored so, with the chain head the camera listed, is COMMITted: the one
message that lets the camera delete it. A clip that fails is quarantined or refused, logged
in custody and left on the camera.

Faults stay where they happen: a bad clip ends that clip, a full disk or a broken store ends
the session with a reason, and nothing the camera or the store does escapes :meth:`serve`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
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
from bodycam.daemon.evidence.keys import fingerprint, load_device_public_key, raw_public_bytes
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock import limits
from bodycam.dock.fetch import FetchCounters, FetchError, fetch_clip
from bodycam.dock.store import DockStore, StoreError, check_name
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.endpoint import RemoteError, Requester
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
    """The session cannot go on (an unknown camera, a failed proof, a lying listing, no room)."""


@dataclass
class ClipOutcome:
    clip_id: str
    name: str
    # "committed"; "rejected" (fetched, failed verification); "refused" (refused before
    # anything was fetched); "kept" (stored, commit not confirmed); "skipped" (not tried:
    # the session stopped first). All but "committed" stay on the camera.
    status: str
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    conflict_with: list[str] = field(default_factory=list)  # other devices holding this id


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
    clock_refused: str | None = None  # the camera's reason for refusing TIME_SET
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
        """Clips the dock refused or rejected (each is a custody event and an alert)."""
        return [c for c in self.clips if c.status in ("rejected", "refused")]

    @property
    def conflicts(self) -> list[ClipOutcome]:
        """Clips whose id another device's stored clip also carries."""
        return [c for c in self.clips if c.conflict_with]


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
        except (LinkClosedError, ProtocolError, DockRefused) as exc:
            report.error = str(exc)
            _log.warning("%s: session ended early: %s", link.name, exc)
        except EvidenceError as exc:  # the store (StoreError) or a file it could not read
            report.error = f"store: {exc}"
            _log.error("%s: session ended by the store: %s", link.name, exc)
        except OSError as exc:
            report.error = f"dock host: {exc.strerror or exc}"
            _log.error("%s: session ended by the dock host: %s", link.name, exc)
        except Exception as exc:  # a bug must cost this session, not every bay
            report.error = f"internal error: {type(exc).__name__}: {exc}"
            _log.exception("%s: session ended by an internal error", link.name)
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
        self.progress = Progress()
        self.stopped: str | None = None  # why no further clip is pulled this session
        self.planned: set[str] = set()  # names of the clips this session may pull

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
        entries = self.screen(await self.list_clips())
        self.planned = {e.name for e in entries}
        removed = self.store.clean_incoming(self.device_id, keep=self.planned)
        if removed:
            _log.info("camera %s: removed stale transfers %s", self.device_id, removed)
        self.progress = Progress(
            device_id=self.device_id,
            clips_total=len(entries),
            bytes_total=sum(e.total_bytes for e in entries),
        )
        for entry in entries:
            if self.stopped is not None:
                self.report.clips.append(
                    ClipOutcome(entry.clip_id.hex(), entry.name, "skipped", entry.total_bytes)
                )
                continue
            self.report.clips.append(await self.offload(entry))
            self.progress.clips_done += 1
            self._progress()
        await self.finish()
        if self.stopped is not None:
            self.report.error = self.stopped

    async def finish(self) -> None:
        """STATUS and BYE. Every listed clip has been handled: a link lost now is an end."""
        try:
            status = await self.call(StatusReq(), Status)
            assert isinstance(status, Status)
            self.report.camera_status = status
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
        assert isinstance(reply, Hello)
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
        assert isinstance(proof, AuthDevice)
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
        try:
            ack = await self.call(TimeSet(utc_us=utc_us, signature=signature), TimeAck)
        except RemoteError as exc:
            # The camera bounds what one dock may move its clock; a refusal is its right and
            # no reason to leave its footage on it. Recorded, then the session goes on.
            self.report.clock_refused = exc.detail or str(exc)
            _log.warning("camera %s refused the time: %s", self.device_id, exc)
            self._record_clock(offset_s=None, was_set=None, refused=self.report.clock_refused)
            return
        assert isinstance(ack, TimeAck)
        self.report.clock_offset_s = ack.offset_us / 1_000_000
        _log.info(
            "camera %s clock corrected by %+.3f s (was %s)",
            self.device_id,
            self.report.clock_offset_s,
            "set" if ack.was_set else "never set",
        )
        self._record_clock(offset_s=self.report.clock_offset_s, was_set=ack.was_set, refused=None)

    def _record_clock(
        self, *, offset_s: float | None, was_set: bool | None, refused: str | None
    ) -> None:
        self.store.record_clock(
            self.device_id,
            dock_id=self.dock_id,
            offset_s=offset_s,
            was_set=was_set,
            refused=refused,
        )

    async def push_policy(self, policy: SignedPolicy) -> None:
        ack = await self.call(ConfigPush(policy=policy.data, signature=policy.signature), ConfigAck)
        assert isinstance(ack, ConfigAck)
        self.report.policy_applied = ack.applied

    # ----- the listing --------------------------------------------------------------------

    async def list_clips(self) -> list[ClipEntry]:
        """Every page of the camera's listing, bounded in pages and entries."""
        entries: list[ClipEntry] = []
        cursor = 0
        for _ in range(limits.MAX_LIST_PAGES):
            request = ListClips(cursor=cursor, max_entries=limits.LIST_PAGE)
            page = await self.call(request, ListReply)
            assert isinstance(page, ListReply)
            if len(page.entries) > limits.LIST_PAGE:
                raise DockRefused(
                    f"camera sent a LIST page of {len(page.entries)} entries "
                    f"(asked for {limits.LIST_PAGE})"
                )
            entries.extend(page.entries)
            if len(entries) > limits.MAX_LIST_ENTRIES:
                raise DockRefused(
                    f"camera listed more than {limits.MAX_LIST_ENTRIES} clips; listing cut off"
                )
            if page.next_cursor == 0:
                return entries
            if page.next_cursor <= cursor:
                raise DockRefused("camera's LIST cursor did not advance")
            cursor = page.next_cursor
        raise DockRefused(
            f"camera kept paging its listing past {limits.MAX_LIST_PAGES} pages; cut off"
        )

    def screen(self, entries: list[ClipEntry]) -> list[ClipEntry]:
        """The entries worth pulling; each other one is refused (custody) and reported."""
        dup_ids, dup_names = limits.duplicates(entries)
        kept: list[ClipEntry] = []
        for entry in entries:
            problems: list[str] = []
            try:
                check_name(entry.name, "clip name")
            except StoreError as exc:
                problems.append(str(exc))  # the store's message shows the name as a repr
            if entry.clip_id in dup_ids:
                problems.append("clip id listed more than once")
            if entry.name in dup_names:
                problems.append("clip name listed more than once")
            problems += limits.entry_problems(entry)
            if problems:
                self.refuse(entry, problems)
            else:
                kept.append(entry)
        return kept

    def refuse(self, entry: ClipEntry, problems: list[str], status: str = "refused") -> None:
        clip_id = entry.clip_id.hex()
        _log.error("camera %s: clip %s refused: %s", self.device_id, clip_id, "; ".join(problems))
        self.store.refuse(self.device_id, clip_id, entry.name, problems)
        # The name may be anything a camera sent: only its repr reaches a screen or a log.
        name = entry.name if _valid_name(entry.name) else repr(entry.name)[:80]
        self.report.clips.append(
            ClipOutcome(clip_id, name, status, entry.total_bytes, problems=problems)
        )

    # ----- one clip -----------------------------------------------------------------------

    async def offload(self, entry: ClipEntry) -> ClipOutcome:
        clip_id = entry.clip_id.hex()
        outcome = ClipOutcome(clip_id, entry.name, "kept", bytes=entry.total_bytes)
        self.progress.current = entry.name
        try:
            stored = self.store.stored_clip_dir(self.device_id, clip_id)
            if stored is None:
                problems = await self.pull(entry, outcome)
                if problems:
                    return _failed(outcome, outcome.status, problems)
                stored = self.store.stored_clip_dir(self.device_id, clip_id)
                if stored is None:
                    return _failed(outcome, "rejected", ["not in the store after accepting it"])
            else:
                # Stored by an earlier session (its COMMIT was lost): the same final check
                # again, against the key registered now, before the camera may delete it.
                verdict = await asyncio.to_thread(verify_clip, stored, device_key=self._key())
                if not verdict.ok:
                    _log.error("clip %s: stored copy fails: %s", clip_id, verdict.problems)
                    return _failed(outcome, "rejected", verdict.problems)
                self.progress.bytes_done += entry.total_bytes
        except FetchError as exc:  # a file that broke its promise: this clip only
            return _failed(outcome, "rejected", [str(exc)])
        except (EvidenceError, RemoteError) as exc:
            # The store refused this clip (StoreError), a stored copy cannot be read, or the
            # camera answered ERROR for one of its files: the next clip may still go well.
            _log.error("clip %s: %s", clip_id, exc)
            return _failed(outcome, "rejected", [str(exc)])
        except OSError as exc:
            # The dock's own disk, not the camera: this clip ends, its transfer is removed
            # to give the space back, and nothing more is pulled this session.
            self._drop_incoming(entry)
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno == errno.ENOSPC:
                why = "store full (no space left on device)"
            problem = f"cannot write clip {entry.name}: {why}"
            _log.error("camera %s: %s", self.device_id, problem)
            self.stopped = f"{problem}; the remaining clips stay on the camera"
            return _failed(outcome, "rejected", [problem])
        if _stored_chain_head(stored) != entry.chain_head:
            problem = "the stored copy's chain head is not the listed one; not committed"
            _log.error("clip %s: %s", clip_id, problem)
            return _failed(outcome, "rejected", [problem])
        try:
            if await self.commit(entry):
                outcome.status = "committed"
        except RemoteError as exc:
            _log.error("clip %s: camera refused COMMIT: %s", clip_id, exc)
            outcome.problems = [f"COMMIT refused: {exc}"]
        return outcome

    def _drop_incoming(self, entry: ClipEntry) -> None:
        """Free the disk a failed write filled: that clip's transfer starts over next time."""
        try:
            self.store.clean_incoming(self.device_id, keep=self.planned - {entry.name})
        except (OSError, EvidenceError) as exc:
            _log.error("cannot remove the transfer of %s: %s", entry.name, exc)

    async def pull(self, entry: ClipEntry, outcome: ClipOutcome) -> list[str]:
        """Fetch, verify and store one clip; [] when it was accepted into the store."""
        clip_id = entry.clip_id.hex()
        incoming = self.store.incoming_dir(self.device_id, entry.name)
        need = max(0, limits.fetch_bytes(entry) - _bytes_in(incoming))
        free = self.store.free_bytes()
        if need > free:
            reason = f"store full: needs {need}, has {free} free"
            self.stopped = f"{reason}; the remaining clips stay on the camera"
            outcome.status = "refused"
            self.store.refuse(self.device_id, clip_id, entry.name, [reason])
            _log.error("camera %s: clip %s refused: %s", self.device_id, clip_id, reason)
            return [reason]
        others = self.store.other_holders(self.device_id, clip_id)
        if others:
            # One of the two cameras re-signed the other's clip. Alert, and keep going:
            # this camera's copy is pulled and checked under its own id like any other.
            outcome.conflict_with = sorted({o.device_id for o in others})
            self.store.record_conflict(
                self.device_id, clip_id, chain_head=entry.chain_head.hex(), others=others
            )
        outcome.status = "rejected"
        result = await fetch_clip(
            self.req,
            entry,
            incoming,
            device_id=self.device_id,
            device_key=self._key(),
            counters=self.counters,
            on_bytes=self._bytes,
        )
        if result.problems:
            self.store.quarantine(self.device_id, clip_id, incoming, result.problems)
            return result.problems
        assert result.manifest is not None
        # The one verdict that counts: the same function and key `bodycam verify
        # --device-key` uses. Off the event loop, so other bays keep streaming.
        verdict = await asyncio.to_thread(verify_clip, incoming, device_key=self._key())
        if not verdict.ok:
            self.store.quarantine(self.device_id, clip_id, incoming, verdict.problems)
            _log.error("clip %s rejected: %s", clip_id, "; ".join(verdict.problems))
            return verdict.problems
        self.store.accept(
            self.device_id,
            clip_id,
            incoming,
            segments=len(result.manifest.segments),
            bytes=result.manifest.total_bytes,
            chain_head=result.manifest.chain_head,
            signer=fingerprint(self._key()),
            dock_id=self.dock_id,
            clock_offset_s=self.report.clock_offset_s,
        )
        return []

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
        if ack.clip_id != entry.clip_id:
            raise DockRefused(f"camera acknowledged COMMIT of another clip ({ack.clip_id.hex()})")
        self.store.mark_committed(
            self.device_id,
            entry.clip_id.hex(),
            dock_id=self.dock_id,
            camera=ack.status.name.lower(),
        )
        return True

    def _bytes(self, n: int) -> None:
        self.progress.bytes_done += n
        self._progress()

    def _progress(self) -> None:
        if self.agent.on_progress is not None:
            self.agent.on_progress(self.progress)


def _valid_name(name: str) -> bool:
    try:
        check_name(name, "clip name")
    except StoreError:
        return False
    return True


def _failed(outcome: ClipOutcome, status: str, problems: list[str]) -> ClipOutcome:
    outcome.status, outcome.problems = status, problems
    return outcome


def _bytes_in(directory: Path) -> int:
    """Bytes of the regular files a previous transfer left (resumed, not fetched again)."""
    total = 0
    try:
        with os.scandir(directory) as it:
            for item in it:
                if item.is_file(follow_symlinks=False):
                    total += item.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total


def _stored_chain_head(directory: Path) -> bytes | None:
    try:
        _, manifest = load_manifest(directory)
    except (OSError, EvidenceError):
        return None
    return bytes.fromhex(manifest.chain_head)


__all__ = ["ClipOutcome", "DockAgent", "DockRefused", "DockReport", "Progress"]
