"""The dock's evidence store: verified clips, quarantine, custody, retention and export.

The transfer writes each clip into ``incoming/``; once ``verify_clip`` passes, :meth:`accept`
makes it durable and renames it into ``clips/`` (one atomic step), and only then may the camera
be told to delete its copy. Everything that happens to a clip is appended to the custody log,
and the state of every clip (stored, committed, flagged, exported, deleted) is derived from
that log, so the log is the single record. Layout and rules: ``docs/dock-store.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.export import ExportResult
from bodycam.daemon.evidence.fsio import fsync_dir, write_file_durably
from bodycam.daemon.evidence.keys import load_device_public_key
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.schema import format_utc, parse_utc
from bodycam.dock import store_ops
from bodycam.dock.custody import CustodyLog
from bodycam.dock.custody_format import ClipRecord, replay
from bodycam.dock.store_fs import (
    create_empty_file,
    dir_bytes,
    ensure_dir,
    exclusive_lock,
    fsync_tree,
    irregular_entries,
    remove_durably,
)

_log = logging.getLogger(__name__)

__all__ = ["DockStore", "StoreError", "StoredClip"]

CUSTODY_NAME: Final = "custody.jsonl"
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
CLIP_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
PREFIX_RE: Final = re.compile(r"^[0-9a-f]{8,32}$")
MAX_PROBLEMS: Final = 50  # per rejected clip in the custody log; the clip itself is kept


class StoreError(EvidenceError):
    """A store, clip, id or custody log cannot be used; the one-line message says which.

    An :class:`EvidenceError` like any other evidence that cannot be used, so the ``bodycam``
    command reports it as one line without knowing the dock host's code.
    """


@dataclass(frozen=True)
class StoredClip:
    """A verified clip held by the store, as the custody log and ``clips/`` describe it."""

    clip_id: str
    device_id: str
    directory: Path
    received_utc: str  # when it was verified and stored; retention counts from here
    committed: bool
    flagged: bool
    flag_reason: str | None
    expires_utc: str | None  # None while flagged
    bytes: int
    exported: int


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise StoreError(
            f"invalid {what} {value!r}: use 1-64 of A-Z a-z 0-9 . _ - (no leading dot)"
        )
    return value


def _check_clip_id(clip_id: str) -> str:
    if not isinstance(clip_id, str) or not CLIP_ID_RE.match(clip_id):
        raise StoreError(f"invalid clip id {clip_id!r}: expected 32 lower-case hex digits")
    return clip_id


class DockStore:
    """The dock host's store of verified clips and their custody log."""

    def __init__(
        self,
        root: Path,
        *,
        retention_days: float = 31.0,
        create: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """Open (or create) the store at ``root``.

        Args:
            root: The store directory.
            retention_days: How long an unflagged clip is kept after it was verified.
            create: Create the store if missing; when False, ``root`` must already be one.
            clock: Stamps custody entries (default: real UTC; a simulator passes its own).

        Raises:
            StoreError: ``root`` is not a store (``create=False``), cannot be created, the
                retention is not a positive number of days, or the custody log is broken.
        """
        if not math.isfinite(retention_days) or retention_days <= 0:
            raise StoreError(f"retention must be a positive number of days, not {retention_days}")
        self.root = Path(root)
        self.retention_days = float(retention_days)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        log_path = self.root / CUSTODY_NAME
        if not log_path.is_file():
            if not create:
                raise StoreError(f"{self.root}: not a dock store (no {CUSTODY_NAME})")
            self._create_layout(log_path)
        self.custody = CustodyLog(log_path)

    def _create_layout(self, log_path: Path) -> None:
        try:
            if self.root.exists() and not self.root.is_dir():
                raise StoreError(f"{self.root}: exists and is not a directory")
            if not self.root.is_dir():
                self.root.mkdir(mode=0o700, parents=True)
                fsync_dir(self.root.parent)
            for part in ("devices", "incoming", "clips", "quarantine"):
                ensure_dir(self.root / part)
            create_empty_file(log_path)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store: {exc.strerror}") from None
        _log.info("created dock store %s", self.root)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store's lock: changes to ``clips/`` by other processes wait for it."""
        return exclusive_lock(self.root / ".lock")

    def now(self) -> dt.datetime:
        """The store's clock (what custody entries are stamped with)."""
        return self._clock()

    def _records(self) -> dict[str, ClipRecord]:
        return replay(self.custody.entries())

    def _clip_dir(self, rec: ClipRecord) -> Path | None:
        if not rec.stored or rec.name is None:
            return None
        if not NAME_RE.match(rec.name) or not NAME_RE.match(rec.device_id):
            # Only a hand-made log line can get here; never let it steer a path elsewhere.
            _log.error("clip %s: unusable directory name in the custody log", rec.clip_id)
            return None
        path = self.root / "clips" / rec.device_id / rec.name
        return path if path.is_dir() else None

    def device_key_path(self, device_id: str) -> Path:
        """Where the registry keeps camera ``device_id``'s public key."""
        return self.root / "devices" / f"{_check_name(device_id, 'device id')}.pub"

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
        _check_name(device_id, "device id")
        _check_name(clip_name, "clip directory name")
        path = ensure_dir(ensure_dir(self.root / "incoming") / device_id)
        return ensure_dir(path / clip_name)

    def stored_clip_dir(self, clip_id: str) -> Path | None:
        """The verified copy of ``clip_id`` under ``clips/``, if the store holds it."""
        rec = self._records().get(_check_clip_id(clip_id))
        return self._clip_dir(rec) if rec is not None else None

    def accept(self, device_id: str, clip_id: str, incoming: Path, **detail: Any) -> Path:
        """Store a clip that passed ``verify_clip``: fsync, rename into ``clips/``, log it.

        Idempotent: a clip stored already is kept, the incoming copy discarded, and nothing
        is logged again.

        Args:
            device_id: The camera it came from.
            clip_id: The clip's id (its manifest must say the same).
            incoming: The verified directory (normally :meth:`incoming_dir`).
            **detail: Facts for the ``verified`` custody entry (segments, bytes, chain head,
                dock id, signer fingerprint, ...).

        Returns:
            The stored directory, ``clips/<device_id>/<incoming.name>``.

        Raises:
            StoreError: Bad ids, the directory is not the named clip, or it cannot be moved.
        """
        _check_name(device_id, "device id")
        _check_clip_id(clip_id)
        incoming = Path(incoming)
        stored = self._stored_for(device_id, clip_id, self._records())
        if stored is not None:
            self._discard(incoming, clip_id)
            return stored
        self._check_incoming(clip_id, incoming)
        irregular = irregular_entries(incoming)
        if irregular:
            # A symlink or subdirectory would make the stored copy depend on things outside it.
            raise StoreError(f"{irregular[0]}: not a regular file; a clip holds only files")
        fsync_tree(incoming)  # before taking the lock: hours of footage take a while
        with self.lock():
            records = self._records()
            stored = self._stored_for(device_id, clip_id, records)
            if stored is not None:  # another bay won the race
                self._discard(incoming, clip_id)
                return stored
            target = ensure_dir(self.root / "clips" / device_id) / incoming.name
            self._clear_leftover(target, records)
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

    def _stored_for(
        self, device_id: str, clip_id: str, records: dict[str, ClipRecord]
    ) -> Path | None:
        rec = records.get(clip_id)
        path = self._clip_dir(rec) if rec is not None else None
        if rec is not None and path is not None and rec.device_id != device_id:
            raise StoreError(
                f"clip {clip_id} is stored for device {rec.device_id}, not {device_id}"
            )
        if rec is not None and rec.stored and path is None:
            _log.warning("clip %s: recorded as stored but its directory is missing", clip_id)
        return path

    def _check_incoming(self, clip_id: str, incoming: Path) -> None:
        if not incoming.is_dir():
            raise StoreError(f"{incoming}: no such incoming clip directory")
        _check_name(incoming.name, "clip directory name")
        try:
            _, manifest = load_manifest(incoming)
        except (FileNotFoundError, EvidenceError):
            raise StoreError(
                f"{incoming}: no valid manifest; only verified clips are accepted"
            ) from None
        if manifest.clip_id != clip_id:
            raise StoreError(f"{incoming}: holds clip {manifest.clip_id}, not {clip_id}")

    def _clear_leftover(self, target: Path, records: dict[str, ClipRecord]) -> None:
        """Remove a directory a power cut left in ``clips/`` before its custody lines."""
        if not target.exists():
            return
        for rec in records.values():
            if self._clip_dir(rec) == target:
                raise StoreError(f"{target}: already holds clip {rec.clip_id}")
        _log.warning("%s: not in the custody log (interrupted accept); replacing it", target)
        self._discard(target, target.name)

    def _discard(self, path: Path, tag: str) -> None:
        """Remove a copy that is not the evidence of record (renamed first: never half a clip)."""
        if path.exists():
            remove_durably(path, self.root / f"{store_ops.DISCARDING}{tag}")

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
        _check_name(device_id, "device id")
        if clip_id:
            _check_clip_id(clip_id)
        incoming = Path(incoming)
        if not incoming.is_dir():
            raise StoreError(f"{incoming}: no such incoming clip directory")
        fsync_tree(incoming)
        now = self.now()
        with self.lock():
            parent = ensure_dir(ensure_dir(self.root / "quarantine") / device_id)
            base = f"{incoming.name}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
            target, n = parent / base, 1
            while target.exists():
                n += 1
                target = parent / f"{base}-{n}"
            incoming.rename(target)
            fsync_dir(parent)
            fsync_dir(incoming.parent)
            self.custody.append(
                "rejected",
                clip_id=clip_id,
                device_id=device_id,
                utc=now,
                problems=[p[:512] for p in problems[:MAX_PROBLEMS]],
                problem_count=len(problems),
                directory=target.relative_to(self.root).as_posix(),
            )
        first = problems[0] if problems else "no reason given"
        _log.warning("quarantined %s from %s: %s", incoming.name, device_id, first)
        return target

    def mark_committed(self, device_id: str, clip_id: str, **detail: Any) -> None:
        """Log that the camera deleted its copy (after COMMIT); a no-op when logged already.

        Raises:
            StoreError: The store does not hold the clip (the camera must keep it), or holds
                it for another device.
        """
        _check_name(device_id, "device id")
        _check_clip_id(clip_id)
        with self.lock():
            rec = self._records().get(clip_id)
            if rec is None or self._stored_for(device_id, clip_id, {clip_id: rec}) is None:
                raise StoreError(f"clip {clip_id} is not stored here; it must not be committed")
            if rec.committed:
                return
            self.custody.append(
                "committed", clip_id=clip_id, device_id=device_id, utc=self.now(), **detail
            )

    def is_committed(self, clip_id: str) -> bool:
        """Whether the camera was told it may delete ``clip_id``."""
        rec = self._records().get(_check_clip_id(clip_id))
        return rec is not None and rec.committed

    def _stored_clip(self, rec: ClipRecord, directory: Path) -> StoredClip:
        assert rec.verified_utc is not None  # stored implies verified
        expires = parse_utc(rec.verified_utc) + dt.timedelta(days=self.retention_days)
        return StoredClip(
            clip_id=rec.clip_id,
            device_id=rec.device_id,
            directory=directory,
            received_utc=rec.verified_utc,
            committed=rec.committed,
            flagged=rec.flagged,
            flag_reason=rec.flag_reason,
            expires_utc=None if rec.flagged else format_utc(expires),
            bytes=dir_bytes(directory),
            exported=rec.exported,
        )

    def clips(self) -> list[StoredClip]:
        """Every stored clip, oldest first."""
        found = []
        for rec in sorted(self._records().values(), key=lambda r: r.order):
            directory = self._clip_dir(rec)
            if directory is not None:
                found.append(self._stored_clip(rec, directory))
        return found

    def find(self, clip_id_or_prefix: str) -> StoredClip:
        """The stored clip whose id is, or starts with, the given hex (at least 8 digits).

        Raises:
            StoreError: The prefix is malformed, matches no stored clip, or several.
        """
        prefix = clip_id_or_prefix.strip().lower()
        if not PREFIX_RE.match(prefix):
            raise StoreError(f"clip id {clip_id_or_prefix!r}: give 8 to 32 hex digits")
        matches = [clip for clip in self.clips() if clip.clip_id.startswith(prefix)]
        if not matches:
            raise StoreError(f"no stored clip has an id starting with {prefix}")
        if len(matches) > 1:
            names = ", ".join(clip.clip_id for clip in matches[:5])
            raise StoreError(f"clip id {prefix} is ambiguous: matches {names}")
        return matches[0]

    def flag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Mark a clip as evidence, kept beyond retention (StoreError if flagged already)."""
        return self._set_flag(clip_id, reason=reason, by=by, flagged=True)

    def unflag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Remove the evidence flag; retention applies again (StoreError if not flagged)."""
        return self._set_flag(clip_id, reason=reason, by=by, flagged=False)

    def _set_flag(self, clip_id: str, *, reason: str, by: str, flagged: bool) -> StoredClip:
        verb = "flag" if flagged else "unflag"
        if not reason.strip():
            raise StoreError(f"a reason is required to {verb} a clip")
        if not by.strip():
            raise StoreError(f"a name (--by) is required to {verb} a clip")
        with self.lock():
            clip = self.find(clip_id)
            if clip.flagged and flagged:
                raise StoreError(
                    f"clip {clip.clip_id} is already flagged ({clip.flag_reason}); "
                    "unflag it first to change the reason"
                )
            if not clip.flagged and not flagged:
                raise StoreError(f"clip {clip.clip_id} is not flagged; nothing to unflag")
            self.custody.append(
                "flagged" if flagged else "unflagged",
                clip_id=clip.clip_id,
                device_id=clip.device_id,
                utc=self.now(),
                reason=reason.strip(),
                by=by.strip(),
            )
            return self.find(clip.clip_id)

    def expired(self, now: dt.datetime) -> list[StoredClip]:
        """Stored clips past retention at ``now`` and not flagged (what prune would delete)."""
        return store_ops.expired(self, now)

    def prune(self, *, now: dt.datetime, dry_run: bool = False) -> list[StoredClip]:
        """Delete every unflagged clip whose retention ended at or before ``now``.

        Each clip is renamed out of ``clips/`` to ``.deleting-<clip id>`` (fsynced) before it
        is removed, so a power cut never leaves half a clip there; leftovers of an interrupted
        prune are finished first. Each deletion is logged (``deleted``, reason ``retention``).

        Returns:
            The clips deleted (or, with ``dry_run``, those that would be; nothing changes).
        """
        return store_ops.prune(self, now=now, dry_run=dry_run)

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
