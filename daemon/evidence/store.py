"""Looking at what the card holds: clip summaries and manifests, without verifying.

For the dock session's LIST and the CLI's ``clips`` listing. These read only small files
(manifests, journals) and never hash footage; use :mod:`.verify` to check a clip.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded
from bodycam.daemon.evidence.journal import JOURNAL_NAME, read_journal
from bodycam.daemon.evidence.manifest import MANIFEST_NAME, load_manifest
from bodycam.daemon.evidence.schema import MAX_MANIFEST_BYTES
from bodycam.daemon.evidence.segfile import PART_RE, SEGMENT_RE
from bodycam.daemon.evidence.verify import is_clip_dir

_log = logging.getLogger(__name__)

__all__ = ["ClipSummary", "list_clips", "read_manifest"]


@dataclass
class ClipSummary:
    """One clip directory at a glance.

    ``clip_id`` is "" when neither a manifest nor a journal names the clip (a damaged
    directory is listed rather than hidden). ``closed`` means a manifest exists (it is not
    verified here); ``bytes`` counts segment files, sealed or being written.
    """

    clip_id: str
    directory: Path
    closed: bool
    segments: int
    bytes: int
    recovered: bool
    started_utc: str | None


def list_clips(clips_dir: Path) -> list[ClipSummary]:
    """Every clip directory in ``clips_dir``, oldest first (the names sort by start time)."""
    if not clips_dir.is_dir():
        return []
    return [_summarise(child) for child in sorted(clips_dir.iterdir()) if is_clip_dir(child)]


def _summarise(directory: Path) -> ClipSummary:
    try:
        _, manifest = load_manifest(directory)
    except FileNotFoundError:
        pass
    except EvidenceError as exc:
        _log.warning("%s", exc)
    else:
        return ClipSummary(
            clip_id=manifest.clip_id,
            directory=directory,
            closed=True,
            segments=len(manifest.segments),
            bytes=manifest.total_bytes,
            recovered=manifest.recovered,
            started_utc=manifest.started_utc,
        )
    clip_id, started, recovered = "", None, False
    try:
        journal = read_journal(directory / JOURNAL_NAME)
        clip_id, started = journal.open.clip_id, journal.open.started_utc
        recovered = any(seal.recovered for seal in journal.seals)
    except EvidenceError as exc:
        _log.warning("%s", exc)
    segments = 0
    size = 0
    for entry in os.scandir(directory):
        if SEGMENT_RE.match(entry.name) or PART_RE.match(entry.name):
            segments += 1
            size += entry.stat().st_size
    return ClipSummary(clip_id, directory, False, segments, size, recovered, started)


def read_manifest(directory: Path) -> dict[str, Any]:
    """A clip's manifest as plain data (not verified: see ``verify_clip``).

    Raises:
        EvidenceError: There is no manifest, or it is oversized or not JSON.
    """
    path = directory / MANIFEST_NAME
    try:
        data = read_bounded(path, MAX_MANIFEST_BYTES, what="manifest")
    except FileNotFoundError:
        raise EvidenceError(
            f"{directory}: no manifest (still recording or not recovered)"
        ) from None
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise EvidenceError(f"{path}: not a JSON object")
    return manifest
