"""Transfers in the dock store's ``incoming/``: checked before they are accepted, given their
place in ``clips/``, listed, and removed when they can never finish.

A transfer is never evidence of record (the camera keeps its copy until COMMIT), so removing
one writes no custody entry, only a log line. Like a clip, it is renamed out first
(``.discarding-incoming-<device>-<name>``), so a power cut leaves a leftover the next prune
finishes, never half a directory where the transfer was.

Only :class:`~bodycam.dock.store.DockStore` calls these functions; its methods of the same
names are the API.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.schema import format_utc, parse_utc
from bodycam.dock.custody_format import ClipRecord
from bodycam.dock.store_fs import ensure_dir, irregular_entries, remove_durably, tree_usage
from bodycam.dock.store_records import DISCARDING, IncomingTransfer, StoreError, check_name

if TYPE_CHECKING:  # store.py imports this module; only the type is needed here
    from bodycam.dock.store import DockStore

_log = logging.getLogger(__name__)

__all__ = [
    "check_transfer",
    "clean_incoming",
    "discard",
    "free_target",
    "incoming",
    "prune_incoming",
]


def check_transfer(clip_id: str, incoming: Path) -> None:
    """Raise :class:`StoreError` unless ``incoming`` is clip ``clip_id`` and only files.

    ``verify_clip`` checked the contents already; this checks what a rename into
    ``clips/`` relies on: the directory's name, the clip it says it is, and that nothing
    in it points outside it.
    """
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
    irregular = irregular_entries(incoming)
    if irregular:
        # A symlink or subdirectory would make the stored copy depend on things outside it.
        raise StoreError(f"{irregular[0]}: not a regular file; a clip holds only files")


def free_target(
    store: DockStore,
    device_id: str,
    clip_id: str,
    name: str,
    records: dict[tuple[str, str], ClipRecord],
) -> Path:
    """Where a new clip goes: its own name unless another stored clip of the camera has it.

    A directory there that the log does not list is what a power cut left between the
    rename and the custody lines; it is replaced (the camera still holds that clip). The
    store's lock is held.
    """
    parent = ensure_dir(ensure_dir(store.root / "clips") / device_id)
    # Names of clips recorded as stored, present or not: a missing one is an audit
    # problem, and reusing its name would make its record point at another clip.
    taken = {r.name for r in records.values() if r.device_id == device_id and r.stored}
    tagged = f"{name}~{clip_id[:8]}"
    for candidate in (name, tagged, *(f"{tagged}-{n}" for n in range(2, 1000))):
        if candidate in taken:
            continue
        target = parent / candidate
        if target.exists() or target.is_symlink():
            _log.warning("%s: not in the custody log (interrupted accept); replacing it", target)
            discard(store, target, f"{device_id}-{candidate}")
        if candidate != name:
            _log.warning(
                "clip %s: %s/%s is taken; stored as %s", clip_id, device_id, name, candidate
            )
        return target
    raise StoreError(f"clips/{device_id}: no free name for clip {clip_id} ({name})")


def discard(store: DockStore, path: Path, tag: str) -> None:
    """Remove a copy that is not the evidence of record (renamed first: never half a clip)."""
    if path.exists() or path.is_symlink():
        remove_durably(path, store.root / f"{DISCARDING}{tag}")


def incoming(store: DockStore) -> list[IncomingTransfer]:
    """Every transfer directory under ``incoming/<device>/``, sorted by device and name."""
    found = []
    base = store.root / "incoming"
    for device in _subdirs(base):
        for child in _subdirs(device):
            try:
                size, mtime = tree_usage(child)
            except FileNotFoundError:  # removed meanwhile
                continue
            when = dt.datetime.fromtimestamp(mtime, dt.UTC)
            found.append(IncomingTransfer(device.name, child.name, child, size, format_utc(when)))
    return found


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(c for c in path.iterdir() if c.is_dir() and not c.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def prune_incoming(store: DockStore, *, now: dt.datetime, dry_run: bool) -> list[IncomingTransfer]:
    """Remove transfers untouched for ``incoming_max_age_days`` at ``now``; return them."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now - dt.timedelta(days=store.incoming_max_age_days)
    stale = [t for t in incoming(store) if parse_utc(t.modified_utc) <= cutoff]
    if dry_run or not stale:
        return stale
    with store.lock():
        for transfer in stale:
            _remove_transfer(store, transfer.directory, transfer.device_id)
            _log.warning(
                "removed stale transfer incoming/%s/%s (%d bytes, last written %s)",
                transfer.device_id,
                transfer.name,
                transfer.bytes,
                transfer.modified_utc,
            )
    return stale


def clean_incoming(store: DockStore, device_id: str, keep: set[str]) -> list[str]:
    """Remove ``device_id``'s transfers whose names are not in ``keep``; return the names."""
    removed = []
    with store.lock():
        device = store.root / "incoming" / device_id
        for child in sorted(device.iterdir()) if device.is_dir() else []:
            if child.name in keep:
                continue
            _remove_transfer(store, child, device_id)
            removed.append(child.name)
    if removed:
        _log.info(
            "%s: removed %d transfer(s) that will not be resumed: %s",
            device_id,
            len(removed),
            ", ".join(removed[:10]),
        )
    return removed


def _remove_transfer(store: DockStore, path: Path, device_id: str) -> None:
    # Renamed out first, like a clip: a power cut leaves a .discarding-* the next prune ends.
    trash = store.root / f"{DISCARDING}incoming-{device_id}-{path.name[:64]}"
    try:
        remove_durably(path, trash)
    except OSError as exc:
        raise StoreError(f"{path}: cannot remove the transfer: {exc.strerror}") from None
