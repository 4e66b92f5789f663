"""One authenticated camera's clips, one at a time: pull, verify, store, then COMMIT.

The session (:mod:`~bodycam.dock.agent`) authenticates the camera, sets its clock, lists
and screens its clips, and hands each entry left to :meth:`ClipOffload.offload`. A clip
already stored by an earlier session (its COMMIT was lost) is verified again against the
key registered now; any other clip is refused when it cannot fit in the store's free
space, pulled and verified against the camera's *registered* key by
:func:`~bodycam.dock.fetch.fetch_clip`, and accepted under this camera's own device id or
quarantined. Only a stored copy that names this clip, this camera and the chain head the
camera listed is COMMITted: the one message that lets the camera delete it. Every refusal
comes before that signature.

Faults stay in their clip: a bad file, a refused clip or a camera's ERROR end that clip
only. A failed write to the dock's own disk (a full disk) and a custody log that cannot
record a COMMIT set :attr:`ClipOffload.stopped`: the session pulls no further clip, and
the clips left stay on the camera.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.daemon.dock.auth import COMMIT_CONTEXT, DockIdentity, sign
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import fingerprint
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock import limits, listing
from bodycam.dock.fetch import FetchCounters, FetchError, bytes_on_disk, fetch_clip
from bodycam.dock.report import (
    COMMITTED,
    KEPT,
    REFUSED,
    REJECTED,
    ClipOutcome,
    DockRefused,
    Progress,
)
from bodycam.dock.store import DockStore
from bodycam.drivers.link.endpoint import RemoteError, Requester
from bodycam.drivers.link.messages import ClipEntry, Commit, CommitAck, Message

__all__ = ["ClipOffload", "call"]

_log = logging.getLogger(__name__)

_Reply = TypeVar("_Reply", bound=Message)


async def call(requester: Requester, message: Message, expected: type[_Reply]) -> _Reply:
    """``message``'s reply, which must be an ``expected``.

    Raises:
        DockRefused: The camera answered with another message (the session ends).
    """
    reply = await requester.call(message)
    if not isinstance(reply, expected):
        raise DockRefused(f"expected {expected.__name__}, camera sent {type(reply).__name__}")
    return reply


class ClipOffload:
    """Offloads the screened clips of one authenticated camera in one session.

    Attributes:
        stopped: Why no further clip may be pulled this session (None: go on).
    """

    def __init__(
        self,
        requester: Requester,
        store: DockStore,
        identity: DockIdentity,
        *,
        device_id: str,
        device_key: Ed25519PublicKey,
        transcript: bytes,
        clock_offset_s: float | None,
        planned: set[str],
        counters: FetchCounters,
        progress: Progress,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        """Set up for one session.

        Args:
            requester: The session's link to the camera.
            store: Where clips are stored.
            identity: The dock's key and certificate (it signs COMMIT).
            device_id: The authenticated camera's id (checked by the store's name rule).
            device_key: That camera's registered key, which every clip must verify against.
            transcript: The session's handshake transcript (bound into every COMMIT).
            clock_offset_s: How far this session moved the camera's clock (custody detail).
            planned: Names of the clips this session may pull (their transfers are kept).
            counters: Bytes received and resumed, for the session's report.
            progress: The session's progress, updated as bytes arrive.
            on_progress: Called after each update of ``progress``.
        """
        self.req = requester
        self.store = store
        self.identity = identity
        self.device_id = device_id
        self.device_key = device_key
        self.transcript = transcript
        self.clock_offset_s = clock_offset_s
        self.planned = planned
        self.counters = counters
        self.progress = progress
        self.on_progress = on_progress
        self.stopped: str | None = None

    async def offload(self, entry: ClipEntry) -> ClipOutcome:
        """Pull, verify, store and COMMIT one screened entry; every refusal comes first."""
        clip_id = entry.clip_id.hex()
        outcome = ClipOutcome(clip_id, entry.name, KEPT, bytes=entry.total_bytes)
        self.progress.current = entry.name
        try:
            stored = self.store.stored_clip_dir(self.device_id, clip_id)
            if stored is None:
                problems = await self.pull(entry, outcome)
                if problems:
                    return outcome.fail(outcome.status, problems)
                stored = self.store.stored_clip_dir(self.device_id, clip_id)
                if stored is None:
                    return outcome.fail(REJECTED, ["not in the store after accepting it"])
            else:
                # Stored by an earlier session (its COMMIT was lost): the same final check
                # again, against the key registered now, before the camera may delete it.
                verdict = await asyncio.to_thread(verify_clip, stored, device_key=self.device_key)
                if not verdict.ok:
                    _log.error("clip %s: stored copy fails: %s", clip_id, verdict.problems)
                    return outcome.fail(REJECTED, verdict.problems)
                self.progress.bytes_done += entry.total_bytes
        except FetchError as exc:  # a file that broke its promise: this clip only
            return outcome.fail(REJECTED, [str(exc)])
        except (EvidenceError, RemoteError) as exc:
            # The store refused this clip (StoreError), a stored copy cannot be read, or the
            # camera answered ERROR for one of its files: the next clip may still go well.
            _log.error("clip %s: %s", clip_id, exc)
            return outcome.fail(REJECTED, [str(exc)])
        except OSError as exc:
            return outcome.fail(REJECTED, [self._write_failed(entry, exc)])
        # The last gate before the signature that lets the camera delete its copy.
        problems = _stored_problems(stored, entry, self.device_id)
        if problems:
            _log.error("clip %s: %s", clip_id, "; ".join(problems))
            return outcome.fail(REJECTED, problems)
        try:
            await self.commit(entry, outcome)
        except RemoteError as exc:
            _log.error("clip %s: camera refused COMMIT: %s", clip_id, exc)
            outcome.problems = [f"COMMIT refused: {exc}"]
        return outcome

    def _write_failed(self, entry: ClipEntry, exc: OSError) -> str:
        """The dock's own disk failed: free the clip's transfer, stop pulling; the problem."""
        try:  # the clip's transfer starts over next time; the space goes back now
            self.store.clean_incoming(self.device_id, keep=self.planned - {entry.name})
        except (OSError, EvidenceError) as err:
            _log.error("cannot remove the transfer of %s: %s", entry.name, err)
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOSPC:
            why = "store full (no space left on device)"
        problem = f"cannot write clip {entry.name}: {why}"
        _log.error("camera %s: %s", self.device_id, problem)
        self.stopped = f"{problem}; the remaining clips stay on the camera"
        return problem

    async def pull(self, entry: ClipEntry, outcome: ClipOutcome) -> list[str]:
        """Fetch, verify and store one clip; [] when it was accepted into the store."""
        clip_id = entry.clip_id.hex()
        incoming = self.store.incoming_dir(self.device_id, entry.name)
        need = max(0, limits.fetch_bytes(entry) - bytes_on_disk(incoming))
        free = self.store.free_bytes()
        if need > free:
            reason = f"store full: needs {need}, has {free} free"
            self.stopped = f"{reason}; the remaining clips stay on the camera"
            outcome.status = REFUSED
            listing.refuse(self.store, self.device_id, entry, [reason])
            return [reason]
        others = self.store.other_holders(self.device_id, clip_id)
        if others:
            # One of the two cameras re-signed the other's clip. Alert, and keep going:
            # this camera's copy is pulled and checked under its own id like any other.
            outcome.conflict_with = sorted({o.device_id for o in others})
            self.store.record_conflict(
                self.device_id, clip_id, chain_head=entry.chain_head.hex(), others=others
            )
        outcome.status = REJECTED
        result = await fetch_clip(
            self.req,
            entry,
            incoming,
            device_id=self.device_id,
            device_key=self.device_key,
            counters=self.counters,
            on_bytes=self._bytes,
        )
        if result.manifest is None:  # fetch_clip ran `verify_clip` with the registered key
            self.store.quarantine(self.device_id, clip_id, incoming, result.problems)
            _log.error("clip %s rejected: %s", clip_id, "; ".join(result.problems))
            return result.problems
        self.store.accept(
            self.device_id,
            clip_id,
            incoming,
            segments=len(result.manifest.segments),
            bytes=result.manifest.total_bytes,
            chain_head=result.manifest.chain_head,
            signer=fingerprint(self.device_key),
            dock_id=self.identity.dock_id,
            clock_offset_s=self.clock_offset_s,
        )
        return []

    async def commit(self, entry: ClipEntry, outcome: ClipOutcome) -> None:
        """COMMIT: the camera deletes its copy. Every check is done before this is signed."""
        key, head = self.identity.key, entry.chain_head
        signature = sign(key, COMMIT_CONTEXT, self.transcript, entry.clip_id, head)
        commit = Commit(clip_id=entry.clip_id, chain_head=head, signature=signature)
        ack = await call(self.req, commit, CommitAck)
        if ack.clip_id != entry.clip_id:
            raise DockRefused(f"camera acknowledged COMMIT of another clip ({ack.clip_id.hex()})")
        # The camera has deleted it: the report says so whatever the custody log does next.
        outcome.status = COMMITTED
        try:
            self.store.mark_committed(
                self.device_id,
                entry.clip_id.hex(),
                dock_id=self.identity.dock_id,
                camera=ack.status.name.lower(),
            )
        except (EvidenceError, OSError) as exc:
            # The clip is stored and verified (custody says so); only this mark is missing.
            # A store that cannot log must not take more clips off cameras this session.
            problem = f"committed, but the custody log could not record it: {exc}"
            _log.error("camera %s: clip %s %s", self.device_id, entry.clip_id.hex(), problem)
            outcome.problems = [problem]
            self.stopped = f"store: {problem}; the remaining clips stay on the camera"

    def progressed(self) -> None:
        """Tell the listener (if any) that :attr:`progress` changed."""
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _bytes(self, n: int) -> None:
        self.progress.bytes_done += n
        self.progressed()


def _stored_problems(stored: Path, entry: ClipEntry, device_id: str) -> list[str]:
    """Why the stored copy may not stand for ``entry`` in a COMMIT (empty: it may)."""
    if stored.parent.name != device_id:  # clips/<device id>/<name>, this camera's own
        return [f"stored under {stored.parent.name!r}, not under this camera's id; not committed"]
    try:
        _, manifest = load_manifest(stored)
    except (OSError, EvidenceError) as exc:
        return [f"the stored copy cannot be read ({exc}); not committed"]
    return limits.stored_problems(manifest, entry, device_id)
