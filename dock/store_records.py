"""The dock store's vocabulary: its error, its records, and the rules for names and ids.

Everything here is free of I/O except reading a stored clip's size: :class:`StoreError`,
the records the store hands out (:class:`StoredClip`, :class:`IncomingTransfer`), the name
rules every path part must pass before a path is built (:func:`check_name`,
:func:`check_clip_id`), how a custody record maps to its directory under ``clips/``, and how
a ``CLIP`` argument (id, prefix or ``DEVICE/PREFIX``) picks one stored clip.
:mod:`bodycam.dock.store` re-exports the public names; import them from there.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.schema import format_utc, parse_utc
from bodycam.dock.custody_format import ClipRecord
from bodycam.dock.store_fs import dir_bytes

_log = logging.getLogger(__name__)

__all__ = [
    "CLIP_ID_RE",
    "CUSTODY_NAME",
    "DELETING",
    "DISCARDING",
    "NAME_RE",
    "PREFIX_RE",
    "STORED_NAME_RE",
    "IncomingTransfer",
    "StoreError",
    "StoredClip",
    "check_clip_id",
    "check_name",
    "clip_dir",
    "pick_clip",
    "shown",
    "stored_clip",
]

CUSTODY_NAME: Final = "custody.jsonl"
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
# A stored clip keeps the camera's name, or (when another clip of that camera holds the name
# already) that name plus "~" and the first 8 hex digits of its id, and "-N" if even that is taken.
STORED_NAME_RE: Final = re.compile(
    r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}(~[0-9a-f]{8}(-[0-9]{1,3})?)?$"
)
CLIP_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
PREFIX_RE: Final = re.compile(r"^[0-9a-f]{8,32}$")
DELETING: Final = ".deleting-"  # + device id, "-", clip id: a pruned clip on its way out
DISCARDING: Final = ".discarding-"  # + a tag: a copy that was never the stored one


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


def check_clip_id(clip_id: str) -> str:
    """``clip_id`` unchanged if it is 32 lower-case hex digits, else :class:`StoreError`."""
    if not isinstance(clip_id, str) or not CLIP_ID_RE.match(clip_id):
        raise StoreError(f"invalid clip id {shown(clip_id)}: expected 32 lower-case hex digits")
    return clip_id


def clip_dir(root: Path, rec: ClipRecord) -> Path | None:
    """The directory under ``root/clips/`` holding ``rec``'s clip, if stored and present."""
    if not rec.stored or rec.name is None:
        return None
    if not STORED_NAME_RE.match(rec.name) or not NAME_RE.match(rec.device_id):
        # Only a hand-made log line can get here; never let it steer a path elsewhere.
        _log.error("clip %s: unusable directory name in the custody log", rec.clip_id)
        return None
    path = root / "clips" / rec.device_id / rec.name
    return path if path.is_dir() and not path.is_symlink() else None


def stored_clip(rec: ClipRecord, directory: Path, retention_days: float) -> StoredClip:
    """The :class:`StoredClip` for a stored record whose directory is ``directory``."""
    assert rec.verified_utc is not None  # stored implies verified
    expires = parse_utc(rec.verified_utc) + dt.timedelta(days=retention_days)
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


def pick_clip(clips: Iterable[StoredClip], clip_id_or_prefix: str) -> StoredClip:
    """The one clip of ``clips`` an id, a prefix of 8+ hex digits or ``DEVICE/PREFIX`` names.

    Raises:
        StoreError: The text is malformed, matches no clip, or several.
    """
    device, _, prefix = clip_id_or_prefix.strip().rpartition("/")
    prefix = prefix.lower()
    if device:
        check_name(device, "device id")
    if not PREFIX_RE.match(prefix):
        raise StoreError(f"clip id {shown(clip_id_or_prefix)}: give 8 to 32 hex digits")
    matches = [
        clip for clip in clips if clip.clip_id.startswith(prefix) and device in ("", clip.device_id)
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
