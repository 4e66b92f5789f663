"""The store's jobs beyond accepting a clip: retention (prune), flags, quarantine, export
for court, the audit, and custody notes that name no stored clip (refusals, clip id
conflicts, clock corrections). Transfers in ``incoming/`` are :mod:`bodycam.dock.store_incoming`'s.

Retention: the force's policy keeps footage a fixed number of days after it reached the store
(31 by default) unless it is flagged as evidence. A clip is deleted as a whole: it is renamed
out of ``clips/`` to ``.deleting-<device>-<clip id>`` first (fsynced), so a power cut leaves
it either where it was or in that leftover, which the next prune finishes.

Everything here works through :class:`~bodycam.dock.store.DockStore`'s public methods;
only that class calls these functions (its methods of the same names are the API).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.export import ExportResult, export_clip
from bodycam.daemon.evidence.fsio import fsync_dir
from bodycam.daemon.evidence.keys import (
    fingerprint,
    load_device_public_key,
    load_force_private_key,
)
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.schema import parse_utc
from bodycam.dock.custody_format import CustodyEntry, replay
from bodycam.dock.store_fs import (
    ensure_dir,
    fsync_tree,
    remove_durably,
    remove_path,
    sha256_file,
)
from bodycam.dock.store_records import (
    CLIP_ID_RE,
    DELETING,
    DISCARDING,
    NAME_RE,
    StoredClip,
    StoreError,
    check_name,
    shown,
)

if TYPE_CHECKING:  # store.py imports this module; only the type is needed here
    from bodycam.dock.store import DockStore

_log = logging.getLogger(__name__)

__all__ = [
    "DELETING",
    "DISCARDING",
    "audit",
    "expired",
    "export",
    "mark_committed",
    "note_summary",
    "prune",
    "quarantine",
    "record_clock",
    "record_conflict",
    "refuse",
    "set_flag",
]

MAX_PROBLEMS: Final = 50  # per rejected or refused clip in the custody log
MAX_PROBLEM_CHARS: Final = 512
_HEX: Final = re.compile(r"^[0-9a-f]{1,128}$")


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
            trash = store.root / f"{DELETING}{clip.device_id}-{clip.clip_id}"
            remove_durably(clip.directory, trash)
            name, size = clip.directory.name, clip.bytes
            _log_deleted(store, clip.clip_id, clip.device_id, name=name, bytes=size)
            _log.info("deleted clip %s (retention ended %s)", clip.clip_id, clip.expires_utc)
    return doomed


def set_flag(store: DockStore, clip_id: str, *, reason: str, by: str, flagged: bool) -> StoredClip:
    """Flag or unflag one stored clip (``clip_id`` as :meth:`DockStore.find` takes it)."""
    verb = "flag" if flagged else "unflag"
    if not reason.strip():
        raise StoreError(f"a reason is required to {verb} a clip")
    if not by.strip():
        raise StoreError(f"a name (--by) is required to {verb} a clip")
    with store.lock():
        clip = store.find(clip_id)
        if clip.flagged and flagged:
            raise StoreError(
                f"clip {clip.clip_id} is already flagged ({clip.flag_reason}); "
                "unflag it first to change the reason"
            )
        if not clip.flagged and not flagged:
            raise StoreError(f"clip {clip.clip_id} is not flagged; nothing to unflag")
        store.custody.append(
            "flagged" if flagged else "unflagged",
            clip_id=clip.clip_id,
            device_id=clip.device_id,
            utc=store.now(),
            reason=reason.strip(),
            by=by.strip(),
        )
        return store.find(f"{clip.device_id}/{clip.clip_id}")


def mark_committed(store: DockStore, device_id: str, clip_id: str, detail: dict[str, Any]) -> None:
    """Log ``committed`` for a stored clip (ids checked by the caller); no-op if logged."""
    with store.lock():
        records = replay(store.custody.entries())
        rec = records.get((device_id, clip_id))
        if rec is None or store.stored_for(device_id, clip_id, records) is None:
            raise StoreError(
                f"clip {clip_id} of {device_id} is not stored here; it must not be committed"
            )
        if rec.committed:
            return
        store.custody.append(
            "committed", clip_id=clip_id, device_id=device_id, utc=store.now(), **detail
        )


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
        remove_path(child)
        fsync_dir(store.root)
        _log.warning("%s: finished an interrupted removal", child.name)
        if not child.name.startswith(DELETING):
            continue
        # Logged only if the power cut came before the "deleted" line.
        for rec in records.values():
            if (
                rec.stored
                and _is_leftover_of(child.name, rec.device_id, rec.clip_id)
                and store.stored_clip_dir(rec.device_id, rec.clip_id) is None
            ):
                name = rec.name
                _log_deleted(store, rec.clip_id, rec.device_id, name=name, interrupted=True)


def _is_leftover_of(name: str, device_id: str, clip_id: str) -> bool:
    # ".deleting-<clip id>" is what prunes before (device, clip id) identity left behind.
    return name in (f"{DELETING}{device_id}-{clip_id}", f"{DELETING}{clip_id}")


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
        if rec.stored and store.stored_clip_dir(rec.device_id, rec.clip_id) is None:
            left = any(
                (store.root / f"{DELETING}{tag}").exists()
                for tag in (f"{rec.device_id}-{rec.clip_id}", rec.clip_id)
            )
            why = "deletion interrupted; prune finishes it" if left else "directory missing"
            problems.append(f"clip {rec.clip_id} ({rec.device_id}): recorded as stored but {why}")
    clips_dir = store.root / "clips"
    for device in sorted(clips_dir.iterdir()) if clips_dir.is_dir() else []:
        for child in sorted(device.iterdir()) if device.is_dir() else []:
            if child not in recorded:
                where = child.relative_to(store.root).as_posix()
                problems.append(f"{where}: not recorded in the custody log")
    return problems


def quarantine(
    store: DockStore, device_id: str, clip_id: str, incoming: Path, problems: list[str]
) -> Path:
    """Move a failed clip (ids checked by the caller) to ``quarantine/`` and log ``rejected``."""
    if not incoming.is_dir():
        raise StoreError(f"{incoming}: no such incoming clip directory")
    fsync_tree(incoming)
    now = store.now()
    with store.lock():
        parent = ensure_dir(ensure_dir(store.root / "quarantine") / device_id)
        base = f"{incoming.name}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
        target, n = parent / base, 1
        while target.exists():
            n += 1
            target = parent / f"{base}-{n}"
        incoming.rename(target)
        fsync_dir(parent)
        fsync_dir(incoming.parent)
        store.custody.append(
            "rejected",
            clip_id=clip_id,
            device_id=device_id,
            utc=now,
            **_problems(problems),
            directory=target.relative_to(store.root).as_posix(),
        )
    first = problems[0] if problems else "no reason given"
    _log.warning("quarantined %s from %s: %s", incoming.name, device_id, first)
    return target


def _problems(problems: list[str]) -> dict[str, Any]:
    kept = [str(p)[:MAX_PROBLEM_CHARS] for p in problems[:MAX_PROBLEMS]]
    return {"problems": kept, "problem_count": len(problems)}


def refuse(store: DockStore, device_id: str, clip_id: str, name: str, problems: list[str]) -> None:
    """Log ``refused``: a listed clip turned down before anything was fetched."""
    check_name(device_id, "device id")
    clip = clip_id if isinstance(clip_id, str) and CLIP_ID_RE.match(clip_id) else ""
    named = name if isinstance(name, str) and NAME_RE.match(name) else shown(name)
    with store.lock():
        store.custody.append(
            "refused",
            clip_id=clip,
            device_id=device_id,
            utc=store.now(),
            name=named,
            **_problems(problems),
        )
    first = problems[0] if problems else "no reason given"
    _log.error("refused clip %s from %s: %s", named, device_id, first)


def record_conflict(
    store: DockStore,
    device_id: str,
    clip_id: str,
    *,
    chain_head: str,
    others: list[StoredClip],
) -> None:
    """Log ``clip_id_conflict`` with every device holding ``clip_id`` and its chain head."""
    check_name(device_id, "device id")
    devices = [device_id, *(clip.device_id for clip in others)]
    heads = [_hex(chain_head), *(_stored_head(clip.directory) for clip in others)]
    with store.lock():
        store.custody.append(
            "clip_id_conflict",
            clip_id=clip_id if CLIP_ID_RE.match(clip_id) else "",
            device_id=device_id,
            utc=store.now(),
            devices=devices,
            chain_heads=heads,
            same_chain_head=len(set(heads)) == 1,
            stored=[clip.directory.relative_to(store.root).as_posix() for clip in others],
        )
    _log.error(
        "clip id %s is listed by %s and stored for %s (chain heads %s): not committed",
        clip_id,
        device_id,
        ", ".join(devices[1:]),
        " / ".join(head[:16] for head in heads),
    )


def _hex(value: str) -> str:
    return value if isinstance(value, str) and _HEX.match(value) else ""


def _stored_head(directory: Path) -> str:
    try:
        return load_manifest(directory)[1].chain_head
    except (OSError, EvidenceError):
        return ""


def record_clock(
    store: DockStore,
    device_id: str,
    *,
    dock_id: str,
    offset_s: float | None,
    was_set: bool | None,
    refused: str | None,
) -> None:
    """Log ``clock``: what a session's TIME_SET did to the camera's clock."""
    check_name(device_id, "device id")
    offset = None if offset_s is None or not math.isfinite(offset_s) else float(offset_s)
    with store.lock():
        store.custody.append(
            "clock",
            clip_id="",
            device_id=device_id,
            utc=store.now(),
            dock_id=str(dock_id)[:64],
            offset_s=offset,
            was_set=None if was_set is None else bool(was_set),
            refused=None if refused is None else str(refused)[:MAX_PROBLEM_CHARS],
        )


def note_summary(entry: CustodyEntry) -> str:
    """An entry's detail for ``bodycam store log``: a sentence for a note, else JSON.

    Notes are the kinds about no one stored clip (``clock``, ``clip_id_conflict``,
    ``refused``); they are written here, so their fields are read back here too.
    """
    d = entry.detail
    if entry.event == "clock":
        if d.get("refused"):
            return f"dock {d.get('dock_id')}: camera refused the time: {d.get('refused')}"
        offset = d.get("offset_s")
        moved = "clock set" if d.get("was_set") else "clock not changed"
        off = f"offset {offset:+.3f} s" if isinstance(offset, int | float) else "offset unknown"
        return f"dock {d.get('dock_id')}: {off}, {moved}"
    if entry.event == "clip_id_conflict":
        devices, heads = d.get("devices") or [], d.get("chain_heads") or []
        pairs = ", ".join(
            f"{dev} (head {str(h)[:16]})" for dev, h in zip(devices, heads, strict=False)
        )
        same = "same chain head" if d.get("same_chain_head") else "different chain heads"
        return f"CONFLICT: one clip id listed by {pairs}; {same}; not committed"
    if entry.event == "refused":
        problems = d.get("problems") or []
        first = problems[0] if problems else "no reason given"
        more = f" (+{d.get('problem_count', 1) - 1} more)" if d.get("problem_count", 1) > 1 else ""
        return f"refused {d.get('name')}: {first}{more}"
    return json.dumps(d, sort_keys=True, ensure_ascii=False)
