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
import os
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
from bodycam.dock.store_config import (
    CONFIG_NAME,
    StoreConfig,
    check_value,
    create_layout,
    load_config,
)
from bodycam.dock.store_fs import (
    dir_bytes,
    ensure_dir,
    exclusive_lock,
    fsync_tree,
    irregular_entries,
    remove_durably,
)

_log = logging.getLogger(__name__)

__all__ = ["DockStore", "IncomingTransfer", "StoreError", "StoredClip", "check_name"]

CUSTODY_NAME: Final = "custody.jsonl"
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
# A stored clip keeps the camera's name, or (when another clip of that camera holds the name
# already) that name plus "~" and the first 8 hex digits of its id, and "-N" if even that is taken.
STORED_NAME_RE: Final = re.compile(
    r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}(~[0-9a-f]{8}(-[0-9]{1,3})?)?$"
)
CLIP_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
PREFIX_RE: Final = re.compile(r"^[0-9a-f]{8,32}$")


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


@dataclass(frozen=True)
class IncomingTransfer:
    """A transfer in ``incoming/``: in progress, interrupted, or left behind by a camera."""

    device_id: str
    name: str
    directory: Path
    bytes: int
    modified_utc: str  # the newest change to the directory or any file in it


def check_name(value: str, what: str) -> str:
    """The store's name rule for anything that becomes a path part (device id, clip name).

    1-64 of ``A-Z a-z 0-9 . _ -`` with no leading dot, so ``.``, ``..``, hidden names,
    separators and non-ASCII letters are all refused. Apply it to every name a camera sends
    before any path is built from it.

    Returns:
        ``value`` unchanged.

    Raises:
        StoreError: Naming the value (its repr, so control characters show).
    """
    if not isinstance(value, str) or not NAME_RE.match(value):
        rule = "use 1-64 of A-Z a-z 0-9 . _ - (no leading dot)"
        raise StoreError(f"invalid {what} {shown(value)}: {rule}")
    return value


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a peer's string in a message or log."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _check_clip_id(clip_id: str) -> str:
    if not isinstance(clip_id, str) or not CLIP_ID_RE.match(clip_id):
        raise StoreError(f"invalid clip id {shown(clip_id)}: expected 32 lower-case hex digits")
    return clip_id


class DockStore:
    """The dock host's store of verified clips and their custody log."""

    def __init__(
        self,
        root: Path,
        *,
        retention_days: float | None = None,
        create: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """Open (or create) the store at ``root``.

        Args:
            root: The store directory.
            retention_days: Overrides ``retention_days`` of the store's ``store.toml``
                (None: the file's value, 31 when it has none).
            create: Create the store if missing (with ``store.toml`` holding
                ``retention_days`` when given); when False, ``root`` must already be one.
            clock: Stamps custody entries (default: real UTC; a simulator passes its own).

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
            if not create:
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
        self.custody = CustodyLog(log_path)

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

    def _clip_dir(self, rec: ClipRecord) -> Path | None:
        if not rec.stored or rec.name is None:
            return None
        if not STORED_NAME_RE.match(rec.name) or not NAME_RE.match(rec.device_id):
            # Only a hand-made log line can get here; never let it steer a path elsewhere.
            _log.error("clip %s: unusable directory name in the custody log", rec.clip_id)
            return None
        path = self.root / "clips" / rec.device_id / rec.name
        return path if path.is_dir() and not path.is_symlink() else None

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
        key = (check_name(device_id, "device id"), _check_clip_id(clip_id))
        rec = self._records().get(key)
        return self._clip_dir(rec) if rec is not None else None

    def is_committed(self, device_id: str, clip_id: str) -> bool:
        """Whether camera ``device_id`` was told it may delete ``clip_id``."""
        key = (check_name(device_id, "device id"), _check_clip_id(clip_id))
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
        _check_clip_id(clip_id)
        incoming = Path(incoming)
        stored = self._stored_for(device_id, clip_id, self._records())
        if stored is not None:
            self._discard(incoming, f"{device_id}-{clip_id}")
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
                self._discard(incoming, f"{device_id}-{clip_id}")
                return stored
            target = self._free_target(device_id, clip_id, incoming.name, records)
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
        self, device_id: str, clip_id: str, records: dict[tuple[str, str], ClipRecord]
    ) -> Path | None:
        rec = records.get((device_id, clip_id))
        path = self._clip_dir(rec) if rec is not None else None
        if rec is not None and rec.stored and path is None:
            _log.warning("clip %s: recorded as stored but its directory is missing", clip_id)
        return path

    def _check_incoming(self, clip_id: str, incoming: Path) -> None:
        if not incoming.is_dir():
            raise StoreError(f"{incoming}: no such incoming clip directory")
        check_name(incoming.name, "clip directory name")
        try:
            _, manifest = load_manifest(incoming)
        except (FileNotFoundError, EvidenceError):
            raise StoreError(
                f"{incoming}: no valid manifest; only verified clips are accepted"
            ) from None
        if manifest.clip_id != clip_id:
            raise StoreError(f"{incoming}: holds clip {manifest.clip_id}, not {clip_id}")

    def _free_target(
        self, device_id: str, clip_id: str, name: str, records: dict[tuple[str, str], ClipRecord]
    ) -> Path:
        """Where a new clip goes: its own name unless another stored clip of the camera has it.

        A directory there that the log does not list is what a power cut left between the
        rename and the custody lines; it is replaced (the camera still holds that clip).
        """
        parent = ensure_dir(ensure_dir(self.root / "clips") / device_id)
        # Names of clips recorded as stored, present or not: a missing one is an audit
        # problem, and reusing its name would make its record point at another clip.
        taken = {r.name for r in records.values() if r.device_id == device_id and r.stored}
        tagged = f"{name}~{clip_id[:8]}"
        for candidate in (name, tagged, *(f"{tagged}-{n}" for n in range(2, 1000))):
            if candidate in taken:
                continue
            target = parent / candidate
            if target.exists() or target.is_symlink():
                _log.warning(
                    "%s: not in the custody log (interrupted accept); replacing it", target
                )
                self._discard(target, f"{device_id}-{candidate}")
            if candidate != name:
                _log.warning(
                    "clip %s: %s/%s is taken; stored as %s", clip_id, device_id, name, candidate
                )
            return target
        raise StoreError(f"clips/{device_id}: no free name for clip {clip_id} ({name})")

    def _discard(self, path: Path, tag: str) -> None:
        """Remove a copy that is not the evidence of record (renamed first: never half a clip)."""
        if path.exists() or path.is_symlink():
            remove_durably(path, self.root / f"{store_ops.DISCARDING}{tag}")

    def other_holders(self, device_id: str, clip_id: str) -> list[StoredClip]:
        """Stored copies of ``clip_id`` under other cameras than ``device_id`` (normally none).

        A clip id is random per clip, so a second holder means a camera copied another's
        clip: a custody event (:meth:`record_conflict`), never a reason to commit.
        """
        check_name(device_id, "device id")
        _check_clip_id(clip_id)
        found = []
        for rec in self._records().values():
            if rec.clip_id != clip_id or rec.device_id == device_id:
                continue
            directory = self._clip_dir(rec)
            if directory is not None:
                found.append(self._stored_clip(rec, directory))
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
            _check_clip_id(clip_id)
        return store_ops.quarantine(self, device_id, clip_id, Path(incoming), problems)

    def mark_committed(self, device_id: str, clip_id: str, **detail: Any) -> None:
        """Log that the camera deleted its copy (after COMMIT); a no-op when logged already.

        Raises:
            StoreError: The store does not hold this camera's copy of the clip (the camera
                must keep it).
        """
        check_name(device_id, "device id")
        _check_clip_id(clip_id)
        with self.lock():
            records = self._records()
            rec = records.get((device_id, clip_id))
            if rec is None or self._stored_for(device_id, clip_id, records) is None:
                raise StoreError(
                    f"clip {clip_id} of {device_id} is not stored here; it must not be committed"
                )
            if rec.committed:
                return
            self.custody.append(
                "committed", clip_id=clip_id, device_id=device_id, utc=self.now(), **detail
            )

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

        ``DEVICE/PREFIX`` picks that camera's copy when cameras share a clip id.

        Raises:
            StoreError: The prefix is malformed, matches no stored clip, or several.
        """
        device, _, prefix = clip_id_or_prefix.strip().rpartition("/")
        prefix = prefix.lower()
        if device:
            check_name(device, "device id")
        if not PREFIX_RE.match(prefix):
            raise StoreError(f"clip id {shown(clip_id_or_prefix)}: give 8 to 32 hex digits")
        matches = [
            clip
            for clip in self.clips()
            if clip.clip_id.startswith(prefix) and device in ("", clip.device_id)
        ]
        where = f" from {device}" if device else ""
        if not matches:
            raise StoreError(f"no stored clip{where} has an id starting with {prefix}")
        if len(matches) > 1:
            names = ", ".join(f"{clip.device_id}/{clip.clip_id}" for clip in matches[:5])
            raise StoreError(
                f"clip id {prefix} is ambiguous: matches {names}; give DEVICE/ID or more digits"
            )
        return matches[0]

    def flag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Mark a clip as evidence, kept beyond retention (StoreError if flagged already)."""
        return self._set_flag(clip_id, reason=reason, by=by, flagged=True)

    def unflag(self, clip_id: str, *, reason: str, by: str) -> StoredClip:
        """Remove the evidence flag; retention applies again (StoreError if not flagged)."""
        return self._set_flag(clip_id, reason=reason, by=by, flagged=False)

    def _set_flag(self, clip_id: str, *, reason: str, by: str, flagged: bool) -> StoredClip:
        return store_ops.set_flag(self, clip_id, reason=reason, by=by, flagged=flagged)

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
        return store_ops.incoming(self)

    def prune_incoming(self, *, now: dt.datetime, dry_run: bool = False) -> list[IncomingTransfer]:
        """Remove transfers untouched for ``incoming_max_age_days`` at ``now``; return them."""
        return store_ops.prune_incoming(self, now=now, dry_run=dry_run)

    def clean_incoming(self, device_id: str, keep: set[str]) -> list[str]:
        """Remove ``device_id``'s transfers whose names are not in ``keep``; return those names.

        The agent calls it after LIST with the names the camera still holds: a transfer of a
        clip the camera no longer lists can never finish.
        """
        return store_ops.clean_incoming(self, check_name(device_id, "device id"), keep)

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
