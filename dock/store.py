"""The dock's evidence store: verified clips, quarantine, custody, retention and export.

The transfer writes each clip into ``incoming/``; once ``verify_clip`` passes, :meth:`accept`
makes it durable and renames it into ``clips/`` (one atomic step), and only then may the camera
be told to delete its copy. Everything that happens to a clip is appended to the custody log,
and the state of every clip (stored, committed, flagged, exported, deleted) is derived from
that log, so the log is the single record. Layout and rules: ``docs/dock-store.md``.

This module is the API: :class:`DockStore`, and (re-exported) the names of
:mod:`~bodycam.dock.store_records`. The work behind the methods is in
:mod:`~bodycam.dock.store_incoming` (transfers in ``incoming/``) and
:mod:`~bodycam.dock.store_ops` (retention, flags, quarantine, export, audit, notes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.export import ExportResult
from bodycam.daemon.evidence.fsio import fsync_dir, write_file_durably
from bodycam.daemon.evidence.keys import load_device_public_key
from bodycam.dock import store_incoming, store_ops
from bodycam.dock.custody import CustodyLog
from bodycam.dock.custody_format import ClipRecord, replay
from bodycam.dock.store_config import (
    CONFIG_NAME,
    StoreConfig,
    check_value,
    create_layout,
    load_config,
)
from bodycam.dock.store_fs import ensure_dir, exclusive_lock, fsync_tree
from bodycam.dock.store_records import (
    CLIP_ID_RE,
    CUSTODY_NAME,
    NAME_RE,
    PREFIX_RE,
    STORED_NAME_RE,
    IncomingTransfer,
    StoredClip,
    StoreError,
    check_clip_id,
    check_name,
    clip_dir,
    pick_clip,
    shown,
    stored_clip,
)

_log = logging.getLogger(__name__)

# Every name here was importable from this module before the split into store_records,
# store_incoming and store_ops; the dock agent, the CLIs and the tests import them from here.
__all__ = [
    "CLIP_ID_RE",
    "CUSTODY_NAME",
    "NAME_RE",
    "PREFIX_RE",
    "STORED_NAME_RE",
    "DockStore",
    "IncomingTransfer",
    "StoreError",
    "StoredClip",
    "check_name",
    "shown",
]


class DockStore:
    """The dock host's store of verified clips and their custody log."""

    def __init__(
        self,
        root: Path,
        *,
        retention_days: float | None = None,
        create: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
        read_only: bool = False,
    ) -> None:
        """Open (or create) the store at ``root``.

        Args:
            root: The store directory.
            retention_days: Overrides ``retention_days`` of the store's ``store.toml``
                (None: the file's value, 31 when it has none).
            create: Create the store if missing (with ``store.toml`` holding
                ``retention_days`` when given); when False, ``root`` must already be one.
            clock: Stamps custody entries (default: real UTC; a simulator passes its own).
            read_only: Open to look only (``store list``, ``store log``): the custody log is
                neither repaired nor appended to, so a reader leaves no file behind.

        Raises:
            StoreError: ``root`` is not a store (``create=False``), cannot be created, a
                setting is bad, or the custody log is broken.
        """
        self.root = Path(root)
        if retention_days is not None:
            retention_days = check_value("retention_days", retention_days, "retention")
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        log_path = self.root / CUSTODY_NAME
        if not log_path.is_file():
            if not create or read_only:
                raise StoreError(
                    f"{self.root}: not a dock store (no {CUSTODY_NAME}); "
                    f"create one with: bodycam store init --store {self.root}"
                )
            config = StoreConfig(retention_days=retention_days or StoreConfig.retention_days)
            create_layout(self.root, config, CUSTODY_NAME)
        self.config = load_config(self.root)
        self.retention_days = retention_days or self.config.retention_days
        self.min_free_bytes = self.config.min_free_bytes
        self.incoming_max_age_days = self.config.incoming_max_age_days
        self.custody = CustodyLog(log_path, read_only=read_only)

    @classmethod
    def init(
        cls,
        root: Path,
        config: StoreConfig,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> DockStore:
        """Create a new store with ``config`` in its ``store.toml`` (``bodycam store init``).

        Raises:
            StoreError: ``root`` is a store already (or holds a ``store.toml``), or cannot
                be created.
        """
        root = Path(root)
        for name in (CUSTODY_NAME, CONFIG_NAME):
            if (root / name).exists():
                raise StoreError(f"{root}: already a dock store ({name} exists); not changed")
        for key, value in vars(config).items():
            check_value(key, value, "store init")
        create_layout(root, config, CUSTODY_NAME)
        return cls(root, create=False, clock=clock)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store's lock: changes to ``clips/`` by other processes wait for it."""
        return exclusive_lock(self.root / ".lock")

    def now(self) -> dt.datetime:
        """The store's clock (what custody entries are stamped with)."""
        return self._clock()

    def _records(self) -> dict[tuple[str, str], ClipRecord]:
        return replay(self.custody.entries())

    def device_key_path(self, device_id: str) -> Path:
        """Where the registry keeps camera ``device_id``'s public key."""
        return self.root / "devices" / f"{check_name(device_id, 'device id')}.pub"

    def register_device(self, device_id: str, public_key: Path) -> Path:
        """Enrol a camera: copy its public key file (PEM or base64) into the registry.

        Raises:
            EvidenceError: ``public_key`` is not an Ed25519 public key.
        """
        load_device_public_key(public_key)  # never register something that cannot verify
        path = self.device_key_path(device_id)
        write_file_durably(path, public_key.read_bytes(), overwrite=True)
        return path

    def incoming_dir(self, device_id: str, clip_name: str) -> Path:
        """The directory a transfer of ``clip_name`` writes into (kept as is, to resume)."""
        check_name(device_id, "device id")
        check_name(clip_name, "clip directory name")
        path = ensure_dir(ensure_dir(self.root / "incoming") / device_id)
        return ensure_dir(path / clip_name)

    def stored_clip_dir(self, device_id: str, clip_id: str) -> Path | None:
        """The verified copy of ``clip_id`` from camera ``device_id``, if the store holds it."""
        key = (check_name(device_id, "device id"), check_clip_id(clip_id))
        rec = self._records().get(key)
        return clip_dir(self.root, rec) if rec is not None else None

    def is_committed(self, device_id: str, clip_id: str) -> bool:
        """Whether camera ``device_id`` was told it may delete ``clip_id``."""
        key = (check_name(device_id, "device id"), check_clip_id(clip_id))
        rec = self._records().get(key)
        return rec is not None and rec.committed

    def accept(self, device_id: str, clip_id: str, incoming: Path, **detail: Any) -> Path:
        """Store a clip that passed ``verify_clip``: fsync, rename into ``clips/``, log it.

        Idempotent: a clip this camera stored already is kept, the incoming copy discarded,
        and nothing is logged again. Another camera's copy of the same clip id is another
        record and changes nothing here (see :meth:`other_holders`).

        Args:
            device_id: The camera it came from.
            clip_id: The clip's id (its manifest must say the same).
            incoming: The verified directory (normally :meth:`incoming_dir`).
            **detail: Facts for the ``verified`` custody entry (segments, bytes, chain head,
                dock id, signer fingerprint, ...).

        Returns:
            The stored directory, ``clips/<device_id>/<incoming.name>``, or
            ``<incoming.name>~<first 8 hex of clip_id>`` when another clip of this camera
            holds that name already.

        Raises:
            StoreError: Bad ids, the directory is not the named clip, or it cannot be moved.
        """
        check_name(device_id, "device id")
        check_clip_id(clip_id)
        incoming = Path(incoming)
        stored = self.stored_for(device_id, clip_id, self._records())
        if stored is not None:
            store_incoming.discard(self, incoming, f"{device_id}-{clip_id}")
            return stored
        store_incoming.check_transfer(clip_id, incoming)
        fsync_tree(incoming)  # before taking the lock: hours of footage take a while
        with self.lock():
            records = self._records()
            stored = self.stored_for(device_id, clip_id, records)
            if stored is not None:  # another bay won the race
                store_incoming.discard(self, incoming, f"{device_id}-{clip_id}")
                return stored
            target = store_incoming.free_target(self, device_id, clip_id, incoming.name, records)
            try:
                incoming.rename(target)
            except OSError as exc:
                raise StoreError(f"{incoming}: cannot move into the store: {exc}") from None
            fsync_dir(target.parent)
            fsync_dir(incoming.parent)
            ids = {"clip_id": clip_id, "device_id": device_id}
            self.custody.append("received", **ids, utc=self.now(), name=target.name)
            self.custody.append("verified", **ids, utc=self.now(), **detail)
        _log.info("stored clip %s from %s in %s", clip_id, device_id, target)
        return target

    def stored_for(
        self, device_id: str, clip_id: str, records: dict[tuple[str, str], ClipRecord]
    ) -> Path | None:
        """The directory of ``records``' stored copy of the clip, if present (checked ids)."""
        rec = records.get((device_id, clip_id))
        path = clip_dir(self.root, rec) if rec is not None else None
        if rec is not None and rec.stored and path is None:
            _log.warning("clip %s: recorded as stored but its directory is missing", clip_id)
        return path

    def other_holders(self, device_id: str, clip_id: str) -> list[StoredClip]:
        """Stored copies of ``clip_id`` under other cameras than ``device_id`` (normally none).

        A clip id is random per clip, so a second holder means a camera copied another's
        clip: a custody event (:meth:`record_conflict`), never a reason to commit.
        """
        check_name(device_id, "device id")
        check_clip_id(clip_id)
        records = self._records().values()
        return self._present(
            r for r in records if r.clip_id == clip_id and r.device_id != device_id
        )

    def _present(self, records: Iterable[ClipRecord]) -> list[StoredClip]:
        """The clips of ``records`` that are stored and whose directory is there, in order."""
        found = []
        for rec in records:
            directory = clip_dir(self.root, rec)
            if directory is not None:
                found.append(stored_clip(rec, directory, self.retention_days))
        return found

    def record_conflict(
        self, device_id: str, clip_id: str, *, chain_head: str, others: list[StoredClip]
    ) -> None:
        """Log ``clip_id_conflict``: ``device_id`` lists a clip id other cameras hold too."""
        store_ops.record_conflict(self, device_id, clip_id, chain_head=chain_head, others=others)

    def record_clock(
        self,
        device_id: str,
        *,
        dock_id: str,
        offset_s: float | None,
        was_set: bool | None,
        refused: str | None = None,
    ) -> None:
        """Log ``clock``: a session's TIME_SET (the correction applied, or refused and why)."""
        store_ops.record_clock(
            self, device_id, dock_id=dock_id, offset_s=offset_s, was_set=was_set, refused=refused
        )

    def refuse(self, device_id: str, clip_id: str, name: str, problems: list[str]) -> None:
        """Log ``refused``: a listed clip turned down before anything of it was fetched.

        ``clip_id`` is kept only when it is 32 hex digits (else ""), ``name`` as it is when
        it passes :func:`check_name`, else its repr cut to 80 characters.
        """
        store_ops.refuse(self, device_id, clip_id, name, problems)

    def quarantine(self, device_id: str, clip_id: str, incoming: Path, problems: list[str]) -> Path:
        """Keep a clip that failed verification for investigation, and log the rejection.

        Args:
            device_id: The camera it came from.
            clip_id: Its id, or "" when the transfer could not tell.
            incoming: The directory that failed.
            problems: What verification found (the custody entry keeps the first 50).

        Returns:
            ``quarantine/<device_id>/<name>-<UTC stamp>``.
        """
        check_name(device_id, "device id")
        if clip_id:
            check_clip_id(clip_id)
        return store_ops.quarantine(self, device_id, clip_id, Path(incoming), problems)

    def mark_committed(self, device_id: str, clip_id: str, **detail: Any) -> None:
        """Log that the camera deleted its copy (after COMMIT); a no-op when logged already.

        Raises:
            StoreError: The store does not hold this camera's copy of the clip (the camera
                must keep it).
        """
        check_name(device_id, "device id")
        store_ops.mark_committed(self, device_id, check_clip_id(clip_id), detail)

    def clips(self) -> list[StoredClip]:
        """Every stored clip, oldest first."""
        return self._present(sorted(self._records().values(), key=lambda r: r.order))

    def find(self, clip_id_or_prefix: str) -> StoredClip:
        """The stored clip whose id is, or starts with, the given hex (at least 8 digits).

        ``DEVICE/PREFIX`` picks that camera's copy when cameras share a clip id.

        Raises:
            StoreError: The prefix is malformed, matches no stored clip, or several.
        """
        return pick_clip(self.clips(), clip_id_or_prefix)

    def flag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Mark a clip as evidence, kept beyond retention (StoreError if flagged already)."""
        return store_ops.set_flag(self, clip_id, reason=reason, by=by, flagged=True)

    def unflag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Remove the evidence flag; retention applies again (StoreError if not flagged)."""
        return store_ops.set_flag(self, clip_id, reason=reason, by=by, flagged=False)

    def expired(self, now: dt.datetime) -> list[StoredClip]:
        """Stored clips past retention at ``now`` and not flagged (what prune would delete)."""
        return store_ops.expired(self, now)

    def prune(self, *, now: dt.datetime, dry_run: bool = False) -> list[StoredClip]:
        """Delete every unflagged clip whose retention ended at or before ``now``.

        Each clip is renamed out of ``clips/`` to ``.deleting-<device>-<clip id>`` (fsynced)
        before it is removed, so a power cut never leaves half a clip there; leftovers of an
        interrupted prune are finished first. Each deletion is logged (``deleted``, reason
        ``retention``). Stale transfers go too (:meth:`prune_incoming`).

        Returns:
            The clips deleted (or, with ``dry_run``, those that would be; nothing changes).
        """
        clips = store_ops.prune(self, now=now, dry_run=dry_run)
        self.prune_incoming(now=now, dry_run=dry_run)
        return clips

    def incoming(self) -> list[IncomingTransfer]:
        """Every transfer in ``incoming/``, by device and name."""
        return store_incoming.incoming(self)

    def prune_incoming(self, *, now: dt.datetime, dry_run: bool = False) -> list[IncomingTransfer]:
        """Remove transfers untouched for ``incoming_max_age_days`` at ``now``; return them."""
        return store_incoming.prune_incoming(self, now=now, dry_run=dry_run)

    def clean_incoming(self, device_id: str, keep: set[str]) -> list[str]:
        """Remove ``device_id``'s transfers whose names are not in ``keep``; return those names.

        The agent calls it after LIST with the names the camera still holds (a transfer of a
        clip the camera no longer lists can never finish), and after a failed write with the
        failed clip left out (its space goes back at once; it starts over next time).
        """
        return store_incoming.clean_incoming(self, check_name(device_id, "device id"), keep)

    def free_bytes(self) -> int:
        """Bytes the store may still write: the file system's free space less the reserve.

        Raises:
            StoreError: The file system cannot be asked.
        """
        try:
            fs = os.statvfs(self.root)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot read free space: {exc.strerror}") from None
        return max(0, fs.f_bavail * fs.f_frsize - self.min_free_bytes)

    def export(self, clip_id: str, *, force_key: Path, output: Path, by: str) -> ExportResult:
        """Decrypt a stored clip to ``output`` (MPEG-TS, or MP4 for ``.mp4``) and log it.

        The clip is verified again first, with the device's registered key pinned when
        ``devices/<device_id>.pub`` exists.

        Raises:
            StoreError: No such clip, a bad key, verification failed, or ``output`` exists.
        """
        if not by.strip():
            raise StoreError("a name (--by) is required to export a clip")
        clip = self.find(clip_id)
        try:
            return store_ops.export(self, clip, force_key=force_key, output=output, by=by.strip())
        except EvidenceError as exc:
            raise StoreError(str(exc)) from None

    def audit(self) -> list[str]:
        """Problems with the store as a whole: the custody log, and clips it cannot find."""
        return store_ops.audit(self)
