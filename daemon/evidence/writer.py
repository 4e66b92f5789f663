"""Writing a clip: encrypted segments, sealed one by one, then a signed manifest.

Blocking API for the daemon's single writer thread. The durability rule is the one in
``docs/evidence-format.md``: records are written as they come (no fsync per record); sealing
fsyncs the ``.part``, renames it to ``.bcs``, fsyncs the directory, and only then appends the
``seal`` line (itself fsynced). A power cut at any instant leaves something recovery can
finish without the clip key, which exists only in this object's memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from bodycam.daemon.evidence import crypto
from bodycam.daemon.evidence.chain import chain_next, chain_start
from bodycam.daemon.evidence.clipinfo import ClipInfo, clip_dir_name, first_error, open_event
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import fsync_dir, pwrite_all, pwritev_all
from bodycam.daemon.evidence.journal import JOURNAL_NAME, JournalWriter
from bodycam.daemon.evidence.manifest import build_manifest, write_manifest
from bodycam.daemon.evidence.schema import (
    UNKNOWN_TIMESTAMP,
    ClockSource,
    CloseEvent,
    OpenEvent,
    SealedSegment,
    SealEvent,
    format_utc,
)
from bodycam.daemon.evidence.segfile import (
    GCM_TAG_SIZE,
    MAX_CHUNK_SIZE,
    MAX_SEGMENT_INDEX,
    RECORD_FRAME,
    SegmentHeader,
    part_name,
    record_prefix,
    segment_name,
)
from bodycam.drivers.interfaces import Storage

_log = logging.getLogger(__name__)

__all__ = ["ClipInfo", "ClipWriter", "SealedSegment", "clip_dir_name"]

CREATING_SUFFIX = ".creating"


@dataclass
class _OpenSegment:
    index: int
    path: Path
    fd: int
    cipher: crypto.SegmentCipher
    sha256: hashlib._Hash
    size: int
    records: int = 0
    first_timestamp_us: int | None = None
    last_timestamp_us: int | None = None
    failed: bool = False


def _with_clock_source(opened: OpenEvent, source: ClockSource) -> OpenEvent:
    """``opened`` with ``source`` added, validated as a whole (it must agree with clock_set)."""
    try:
        return OpenEvent.model_validate({**dict(opened), "clock_source": source})
    except ValueError as exc:
        raise EvidenceError(f"cannot start a clip: {first_error(exc)}") from None


class ClipWriter:
    """One clip being recorded. Create with :meth:`create`; finish with :meth:`close`."""

    def __init__(
        self,
        *,
        directory: Path,
        opened: OpenEvent,
        clip_key: bytes,
        signing_key: Ed25519PrivateKey,
        storage: Storage | None,
        journal: JournalWriter,
    ) -> None:
        self.clip_id = opened.clip_id
        self.directory = directory
        self.segments: list[SealedSegment] = []
        self.chain_head = chain_start(bytes.fromhex(opened.clip_id))
        self._clip_id_bytes = bytes.fromhex(opened.clip_id)
        self._opened = opened
        self._clip_key: bytes | None = clip_key
        self._signing_key = signing_key
        self._storage = storage
        self._journal = journal
        self._segment: _OpenSegment | None = None
        self._closed = False
        self._broken: str | None = None

    @classmethod
    def create(
        cls,
        clips_dir: Path,
        info: ClipInfo,
        *,
        started_utc: dt.datetime,
        signing_key: Ed25519PrivateKey,
        force_key: X25519PublicKey,
        storage: Storage | None = None,
        clock_source: ClockSource | None = None,
    ) -> ClipWriter:
        """Start a clip: a new directory whose journal's ``open`` line is on disk.

        The directory is built under a hidden ``.<name>.creating`` name and renamed into place
        once the ``open`` line is fsynced, so a clip directory never lacks its ``open`` line;
        recovery removes a leftover ``.creating`` directory (it can hold no footage).

        ``clock_source`` (who set the clock, from the dock hooks) goes into the ``open`` line
        and from there into the manifest, whether ``close`` or recovery writes it.

        Raises:
            EvidenceError: ``info`` is not valid (the message names the field).
            OSError: The card refused the write.
        """
        clip_uuid = uuid.uuid4()
        clip_id = clip_uuid.bytes
        clip_key = crypto.new_clip_key()
        wrapped = crypto.wrap_clip_key(clip_key, clip_id, force_key)
        opened = open_event(
            info,
            clip_id=clip_uuid.hex,
            started_utc=started_utc,
            device_key=signing_key.public_key(),
            force_key=force_key,
            wrapped=wrapped,
        )
        if clock_source is not None:
            opened = _with_clock_source(opened, clock_source)
        name = clip_dir_name(started_utc, clip_uuid.hex)
        clips_dir.mkdir(parents=True, exist_ok=True)
        final = clips_dir / name
        staging = clips_dir / f".{name}{CREATING_SUFFIX}"
        if final.exists():
            raise EvidenceError(f"{final}: a clip directory of that name exists already")
        staging.mkdir(mode=0o750)
        journal: JournalWriter | None = None
        try:
            journal = JournalWriter.create(staging / JOURNAL_NAME)
            journal.append(opened)
            fsync_dir(staging)
            staging.rename(final)
            fsync_dir(clips_dir)
        except BaseException:
            if journal is not None:
                journal.close()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        journal.path = final / JOURNAL_NAME
        _log.debug("clip %s opened in %s", clip_uuid.hex, final)
        return cls(
            directory=final,
            opened=opened,
            clip_key=clip_key,
            signing_key=signing_key,
            storage=storage,
            journal=journal,
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has written the manifest."""
        return self._closed

    @property
    def segment_open(self) -> bool:
        """True between :meth:`begin_segment` and :meth:`seal_segment`."""
        return self._segment is not None

    @property
    def segment_records(self) -> int:
        """Records in the open segment (0 when none is open)."""
        return self._segment.records if self._segment else 0

    def begin_segment(self) -> None:
        """Open the next segment (``seg-NNNNNN.bcs.part``) and write its header.

        Raises:
            EvidenceError: A segment is open already, or the clip is closed.
            OSError: The card refused the header (nothing is left behind).
        """
        key = self._require_usable()
        if self._segment is not None:
            raise EvidenceError(f"{self._segment.path}: a segment is open already")
        index = len(self.segments)
        if index > MAX_SEGMENT_INDEX:
            raise EvidenceError(
                f"{self.directory}: a clip holds at most {MAX_SEGMENT_INDEX + 1} segments"
            )
        header = SegmentHeader(self._clip_id_bytes, index).pack()
        path = self.directory / part_name(index)
        if self._storage is not None:
            self._storage.check_write(len(header))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            pwrite_all(fd, header, 0)
        except BaseException:
            os.close(fd)
            path.unlink()
            raise
        cipher = crypto.SegmentCipher(key, self._clip_id_bytes, index, header)
        self._segment = _OpenSegment(index, path, fd, cipher, hashlib.sha256(header), len(header))

    def append(self, chunk: bytes, *, timestamp_us: int | None = None) -> None:
        """Encrypt ``chunk`` (one video frame's MPEG-TS bytes) as the next record.

        Args:
            chunk: 1 byte to 16 MiB of plaintext.
            timestamp_us: The frame's sensor timestamp, optional; used only when
                :meth:`close` has to seal the open segment itself.

        Raises:
            OSError: From ``storage.check_write`` (nothing written, the segment goes on) or
                from the write itself: then the partial record is cut away and the segment
                takes no more records (its next nonce may have reached the card), but it
                stays sealable.
            EvidenceError: No segment is open, the chunk size is out of range, or an
                earlier write in this segment failed.
        """
        seg = self._require_segment()
        if seg.failed:
            raise EvidenceError(
                f"{seg.path.name}: a write failed earlier; seal it and begin a new segment"
            )
        if not 1 <= len(chunk) <= MAX_CHUNK_SIZE:
            raise EvidenceError(f"chunk of {len(chunk)} bytes; 1 to {MAX_CHUNK_SIZE} allowed")
        if self._storage is not None:
            self._storage.check_write(RECORD_FRAME.size + len(chunk) + GCM_TAG_SIZE)
        ciphertext = seg.cipher.encrypt(seg.records, chunk)
        # Prefix and ciphertext go out in one pwritev: no copy of the frame to join them.
        prefix = record_prefix(ciphertext)
        try:
            pwritev_all(seg.fd, [prefix, ciphertext], seg.size)
        except OSError:
            seg.failed = True
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                _log.exception("%s: cannot cut a failed record away", seg.path)
            raise
        seg.sha256.update(prefix)
        seg.sha256.update(ciphertext)
        seg.size += len(prefix) + len(ciphertext)
        seg.records += 1
        if timestamp_us is not None:
            if seg.first_timestamp_us is None:
                seg.first_timestamp_us = timestamp_us
            seg.last_timestamp_us = timestamp_us

    def seal_segment(
        self, *, first_timestamp_us: int, last_timestamp_us: int, frames: int
    ) -> SealedSegment:
        """Make the open segment permanent: fsync, rename to ``.bcs``, hash, chain, journal.

        Raises:
            EvidenceError: No segment is open, it has no records, or the arguments are
                inconsistent.
            OSError: The card failed; the writer is then unusable and the clip is finished
                by recovery at the next start.
        """
        seg = self._require_segment()
        if seg.records == 0:
            raise EvidenceError(f"{seg.path.name}: no records to seal (discard it instead)")
        if not 0 <= first_timestamp_us <= last_timestamp_us or frames < 0:
            raise EvidenceError(
                f"{seg.path.name}: bad seal arguments (timestamps {first_timestamp_us}.."
                f"{last_timestamp_us}, frames {frames})"
            )
        return self._seal(seg, first_timestamp_us, last_timestamp_us, frames)

    def _seal(self, seg: _OpenSegment, first_us: int, last_us: int, frames: int) -> SealedSegment:
        self._segment = None
        try:
            os.fsync(seg.fd)
            size = os.fstat(seg.fd).st_size
        finally:
            os.close(seg.fd)
        name = segment_name(seg.index)
        if size != seg.size:
            self._broken = f"{seg.path}: {size} bytes on disk, {seg.size} written"
            raise EvidenceError(self._broken)
        try:
            seg.path.rename(self.directory / name)
            fsync_dir(self.directory)
            sha = seg.sha256.hexdigest()
            chain = chain_next(self.chain_head, seg.index, sha, size)
            sealed = SealedSegment(
                index=seg.index,
                name=name,
                sha256=sha,
                chain=chain,
                size=size,
                records=seg.records,
                first_timestamp_us=first_us,
                last_timestamp_us=last_us,
                frames=frames,
                recovered=False,
            )
            self._journal.append(SealEvent.of(sealed))
        except OSError as exc:
            self._broken = f"{self.directory / name}: sealing failed ({exc.strerror})"
            raise
        self.segments.append(sealed)
        self.chain_head = chain
        _log.debug("%s sealed: %d records, %d bytes", name, seg.records, size)
        return sealed

    def discard_segment(self) -> None:
        """Drop the open segment and its records (used for a segment that got none)."""
        seg = self._require_segment()
        self._segment = None
        os.close(seg.fd)
        seg.path.unlink()
        fsync_dir(self.directory)

    def close(
        self,
        *,
        ended_utc: dt.datetime,
        reason: str,
        trigger_timestamp_us: int | None = None,
        pre_event_actual_s: float | None = None,
        continued_by: str | None = None,
    ) -> Path:
        """Finish the clip: seal or discard the open segment, journal ``close``, sign.

        An open segment with records is sealed with the timestamps given to :meth:`append`
        (0, "unknown", if none were) and one frame per record.

        Returns:
            The path of ``manifest.json``.

        Raises:
            EvidenceError: The clip is closed already or an argument is invalid.
            OSError: The card failed; recovery finishes the clip at the next start.
        """
        self._require_usable()
        seg = self._segment
        if seg is not None:
            if seg.records:
                first = seg.first_timestamp_us or UNKNOWN_TIMESTAMP
                last = seg.last_timestamp_us or first
                self._seal(seg, first, max(first, last), seg.records)
            else:
                self.discard_segment()
        try:
            closed = CloseEvent(
                ended_utc=format_utc(ended_utc),
                ended_utc_estimated=False,
                end_reason=reason,
                trigger_timestamp_us=trigger_timestamp_us,
                pre_event_actual_s=pre_event_actual_s,
                continued_by=continued_by,
                recovered_utc=None,
            )
        except ValueError as exc:
            raise EvidenceError(f"clip {self.clip_id}: cannot close: {first_error(exc)}") from None
        manifest = build_manifest(
            self._opened, self.segments, closed, self._signing_key.public_key()
        )
        try:
            self._journal.append(closed)
            self._journal.close()
            path = write_manifest(self.directory, manifest, self._signing_key)
        except OSError as exc:
            self._broken = f"{self.directory}: closing failed ({exc.strerror})"
            raise
        self._closed = True
        self._clip_key = None  # drop the only copy; the wrapped one is all that remains
        _log.debug("clip %s closed (%s): %d segments", self.clip_id, reason, len(self.segments))
        return path

    def abandon(self) -> None:
        """Let go of the clip as a power cut would: files stay as they are, for recovery.

        For a writer that hit a fatal error (and for tests). The key is dropped.
        """
        if self._segment is not None:
            with contextlib.suppress(OSError):
                os.close(self._segment.fd)
            self._segment = None
        self._journal.close()
        self._clip_key = None
        self._broken = self._broken or f"{self.directory}: abandoned"

    def _require_usable(self) -> bytes:
        if self._closed:
            raise EvidenceError(f"{self.directory}: clip is closed")
        if self._broken is not None:
            raise EvidenceError(f"{self._broken}; the clip is finished by recovery")
        assert self._clip_key is not None  # only ever dropped with _closed or _broken set
        return self._clip_key

    def _require_segment(self) -> _OpenSegment:
        self._require_usable()
        if self._segment is None:
            raise EvidenceError(f"{self.directory}: no segment is open")
        return self._segment
