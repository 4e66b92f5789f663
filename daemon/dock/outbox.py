"""The camera's finished clips as the dock sees them: listed, read by offset, deleted on COMMIT.

Only finished clips (a manifest and its signature on the card) are offered; a clip still
being sealed appears in the next LIST. Reads are served from exactly the bytes on the card,
so the dock verifies what the camera sealed. A clip is deleted only by :meth:`delete`, which
the session calls after a COMMIT whose signature and chain head check out; the deletion is
made crash-safe by renaming the directory to a hidden name first (``.deleting-*`` is never
listed, and :func:`finish_deletions` completes it after a power cut).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import fsync_dir
from bodycam.daemon.evidence.journal import JOURNAL_NAME
from bodycam.daemon.evidence.manifest import MANIFEST_NAME, SIGNATURE_NAME, load_manifest
from bodycam.daemon.evidence.schema import parse_utc
from bodycam.daemon.evidence.verify import is_clip_dir, unlisted_segment_files
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import ClipEntry, ErrorCode, FileKind

_log = logging.getLogger(__name__)

DELETING_PREFIX: Final = ".deleting-"


@dataclass(frozen=True)
class OutboxClip:
    """One finished clip on the card, as listed to the dock."""

    clip_id: bytes
    directory: Path
    entry: ClipEntry
    segment_names: tuple[str, ...]
    chain_head: bytes


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _load(directory: Path) -> OutboxClip | None:
    try:
        data, manifest = load_manifest(directory)
    except FileNotFoundError:
        return None  # still recording, or not recovered yet
    except EvidenceError as exc:
        # Offered anyway? No: a manifest the camera cannot parse, the dock cannot verify.
        # It stays on the card (never deleted) and is reported here.
        _log.error("not offering %s to the dock: %s", directory.name, exc)
        return None
    unlisted = unlisted_segment_files(directory, manifest)
    if unlisted:
        # The dock would receive only the listed files, find them good and COMMIT, and the
        # deletion would take the unlisted ones with it, unseen. `bodycam verify` fails such a
        # clip; it stays on the card for someone to look at.
        _log.error(
            "not offering %s to the dock: %s not listed in its manifest (added?)",
            directory.name,
            ", ".join(unlisted[:5]),
        )
        return None
    signature_size = _file_size(directory / SIGNATURE_NAME)
    clip_id = bytes.fromhex(manifest.clip_id)
    chain_head = bytes.fromhex(manifest.chain_head)
    entry = ClipEntry(
        clip_id=clip_id,
        name=directory.name,
        started_utc_us=int(parse_utc(manifest.started_utc).timestamp() * 1_000_000),
        segments=len(manifest.segments),
        total_bytes=manifest.total_bytes,
        manifest_size=len(data),
        manifest_sha256=hashlib.sha256(data).digest(),
        signature_size=signature_size,
        journal_size=_file_size(directory / JOURNAL_NAME),
        chain_head=chain_head,
    )
    names = tuple(segment.name for segment in manifest.segments)
    return OutboxClip(clip_id, directory, entry, names, chain_head)


class Outbox:
    """A snapshot of the finished clips, taken when the dock first asks for the list."""

    def __init__(self, clips_dir: Path) -> None:
        self.clips_dir = clips_dir
        self._clips: dict[bytes, OutboxClip] = {}
        self._order: list[bytes] = []
        self._open: tuple[Path, int] | None = None
        self.deleted: set[bytes] = set()

    def refresh(self) -> list[OutboxClip]:
        """Re-read the card (oldest clip first)."""
        self.close()
        clips: list[OutboxClip] = []
        if self.clips_dir.is_dir():
            for child in sorted(self.clips_dir.iterdir()):
                if is_clip_dir(child):
                    clip = _load(child)
                    if clip is not None:
                        clips.append(clip)
        self._clips = {clip.clip_id: clip for clip in clips}
        self._order = [clip.clip_id for clip in clips]
        return clips

    def page(self, cursor: int, limit: int) -> tuple[list[ClipEntry], int, int]:
        """Entries from ``cursor``; returns (entries, next cursor or 0, total)."""
        if cursor == 0:
            self.refresh()
        ids = self._order[cursor : cursor + limit]
        following = cursor + len(ids)
        more = following < len(self._order)
        return [self._clips[i].entry for i in ids], following if more else 0, len(self._order)

    def get(self, clip_id: bytes) -> OutboxClip:
        clip = self._clips.get(clip_id)
        if clip is None:
            raise ProtocolError(ErrorCode.NO_SUCH_CLIP, f"no clip {clip_id.hex()} in the list")
        return clip

    def path_of(self, clip: OutboxClip, kind: FileKind, index: int) -> Path:
        if kind == FileKind.MANIFEST:
            return clip.directory / MANIFEST_NAME
        if kind == FileKind.SIGNATURE:
            return clip.directory / SIGNATURE_NAME
        if kind == FileKind.JOURNAL:
            return clip.directory / JOURNAL_NAME
        count = len(clip.segment_names)
        if index >= count:
            raise ProtocolError(
                ErrorCode.NO_SUCH_FILE, f"clip {clip.clip_id.hex()} has {count} segments only"
            )
        return clip.directory / clip.segment_names[index]

    def read(
        self, clip_id: bytes, kind: FileKind, index: int, offset: int, length: int
    ) -> tuple[bytes, int]:
        """``length`` bytes at ``offset`` (fewer at the end) and the file's size."""
        path = self.path_of(self.get(clip_id), kind, index)
        fd = self._fd(path)
        try:
            size = os.fstat(fd).st_size
            if offset > size:
                raise ProtocolError(
                    ErrorCode.BAD_RANGE, f"{path.name}: offset {offset} beyond size {size}"
                )
            return os.pread(fd, min(length, size - offset), offset), size
        except OSError as exc:
            self.close()
            raise ProtocolError(
                ErrorCode.STORAGE_ERROR, f"{path.name}: {exc.strerror or exc}"
            ) from None

    def _fd(self, path: Path) -> int:
        # One file open at a time: the dock reads files front to back.
        if self._open is not None and self._open[0] == path:
            return self._open[1]
        self.close()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ProtocolError(ErrorCode.NO_SUCH_FILE, f"{path.name}: missing") from None
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.STORAGE_ERROR, f"{path.name}: {exc.strerror or exc}"
            ) from None
        self._open = (path, fd)
        return fd

    def close(self) -> None:
        if self._open is not None:
            os.close(self._open[1])
            self._open = None

    def delete(self, clip: OutboxClip) -> None:
        """Delete a committed clip from the card, crash-safely."""
        self.close()
        hidden = clip.directory.with_name(DELETING_PREFIX + clip.directory.name)
        clip.directory.rename(hidden)
        fsync_dir(clip.directory.parent)
        shutil.rmtree(hidden)
        fsync_dir(clip.directory.parent)
        self._clips.pop(clip.clip_id, None)
        self._order = [i for i in self._order if i != clip.clip_id]
        self.deleted.add(clip.clip_id)


def finish_deletions(clips_dir: Path) -> int:
    """Complete deletions a power cut interrupted; returns how many were finished."""
    if not clips_dir.is_dir():
        return 0
    done = 0
    for child in clips_dir.iterdir():
        if child.name.startswith(DELETING_PREFIX) and child.is_dir():
            shutil.rmtree(child)
            done += 1
    if done:
        fsync_dir(clips_dir)
        _log.warning("finished deleting %d committed clip(s) after a restart", done)
    return done
