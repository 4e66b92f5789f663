"""The store's operator-side jobs: retention (prune), export for court, and the audit.

Retention: the force's policy keeps footage a fixed number of days after it reached the store
(31 by default) unless it is flagged as evidence. A clip is deleted as a whole: it is renamed
out of ``clips/`` to ``.deleting-<clip id>`` first (fsynced), so a power cut leaves it either
where it was or in that leftover, which the next prune finishes.

Everything here works through :class:`~bodycam.dock.store.DockStore`'s public methods;
only that class calls these functions (its methods of the same names are the API).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bodycam.daemon.evidence.export import ExportResult, export_clip
from bodycam.daemon.evidence.fsio import fsync_dir
from bodycam.daemon.evidence.keys import (
    fingerprint,
    load_device_public_key,
    load_force_private_key,
)
from bodycam.daemon.evidence.schema import parse_utc
from bodycam.dock.custody_format import replay
from bodycam.dock.store_fs import remove_durably, sha256_file

if TYPE_CHECKING:  # store.py imports this module; only the types are needed here
    from bodycam.dock.store import DockStore, StoredClip

_log = logging.getLogger(__name__)

__all__ = ["DELETING", "DISCARDING", "audit", "expired", "export", "prune"]

DELETING: Final = ".deleting-"  # + clip id: a pruned clip on its way out
DISCARDING: Final = ".discarding-"  # + a tag: a copy that was never the stored one


def expired(store: DockStore, now: dt.datetime) -> list[StoredClip]:
    """Stored clips past retention at ``now`` and not flagged, oldest first.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return [
        clip
        for clip in store.clips()
        if clip.expires_utc is not None and parse_utc(clip.expires_utc) <= now
    ]


def prune(store: DockStore, *, now: dt.datetime, dry_run: bool) -> list[StoredClip]:
    """Delete the expired clips (after finishing interrupted removals); return them."""
    if dry_run:
        return expired(store, now)
    with store.lock():
        _finish_leftovers(store)
        doomed = expired(store, now)
        for clip in doomed:
            remove_durably(clip.directory, store.root / f"{DELETING}{clip.clip_id}")
            name, size = clip.directory.name, clip.bytes
            _log_deleted(store, clip.clip_id, clip.device_id, name=name, bytes=size)
            _log.info("deleted clip %s (retention ended %s)", clip.clip_id, clip.expires_utc)
    return doomed


def _log_deleted(store: DockStore, clip_id: str, device_id: str, **detail: Any) -> None:
    store.custody.append(
        "deleted",
        clip_id=clip_id,
        device_id=device_id,
        utc=store.now(),
        reason="retention",
        retention_days=store.retention_days,
        **detail,
    )


def _finish_leftovers(store: DockStore) -> None:
    """Complete deletions and discards that a power cut interrupted (the lock is held)."""
    records = replay(store.custody.entries())
    for child in sorted(store.root.iterdir()):
        if not child.name.startswith((DELETING, DISCARDING)):
            continue
        shutil.rmtree(child)
        fsync_dir(store.root)
        _log.warning("%s: finished an interrupted removal", child.name)
        if not child.name.startswith(DELETING):
            continue
        rec = records.get(child.name.removeprefix(DELETING))
        # Logged only if the power cut came before the "deleted" line.
        if rec is not None and rec.stored and store.stored_clip_dir(rec.clip_id) is None:
            _log_deleted(store, rec.clip_id, rec.device_id, name=rec.name, interrupted=True)


def export(
    store: DockStore, clip: StoredClip, *, force_key: Path, output: Path, by: str
) -> ExportResult:
    """Export a stored clip with the device key pinned when registered; log ``exported``.

    Raises:
        EvidenceError: A key cannot be loaded, the clip does not verify, or ``output`` exists.
    """
    key_path = store.device_key_path(clip.device_id)
    private = load_force_private_key(Path(force_key))
    device_key = load_device_public_key(key_path) if key_path.exists() else None
    if device_key is None:
        _log.warning("%s: no registered key; verifying with the manifest's key", key_path)
    result = export_clip(clip.directory, private, Path(output), device_key=device_key)
    with store.lock():
        store.custody.append(
            "exported",
            clip_id=clip.clip_id,
            device_id=clip.device_id,
            utc=store.now(),
            by=by,
            output=str(result.path.resolve()),
            bytes=result.bytes,
            sha256=sha256_file(result.path),
            segments=result.segments,
            frames=result.frames,
            pinned=device_key is not None,
            force_key_fingerprint=fingerprint(private.public_key()),
        )
    return result


def audit(store: DockStore) -> list[str]:
    """Problems with the store as a whole: the custody log, and clips it cannot find."""
    problems = store.custody.verify()
    recorded = {clip.directory for clip in store.clips()}
    for rec in replay(store.custody.entries()).values():
        if rec.stored and store.stored_clip_dir(rec.clip_id) is None:
            left = (store.root / f"{DELETING}{rec.clip_id}").exists()
            why = "deletion interrupted; prune finishes it" if left else "directory missing"
            problems.append(f"clip {rec.clip_id}: recorded as stored but {why}")
    clips_dir = store.root / "clips"
    for device in sorted(clips_dir.iterdir()) if clips_dir.is_dir() else []:
        for child in sorted(device.iterdir()) if device.is_dir() else []:
            if child not in recorded:
                where = child.relative_to(store.root).as_posix()
                problems.append(f"{where}: not recorded in the custody log")
    return problems
