"""Finishing clips that a power cut (or a crash) left open, without the clip key.

Run by the daemon at start, before anything records. For every clip directory without a
manifest it repairs the journal, seals what can be sealed and writes a signed manifest marked
``recovered``. It only ever truncates a ``.part`` (never a sealed ``.bcs``), every step is
durable before the next, and each step is one that a re-run recognises as done, so a crash
during recovery is itself recovered by running it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.evidence.chain import chain_next
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import fsync_dir
from bodycam.daemon.evidence.journal import JOURNAL_NAME, ClipJournal, JournalWriter, read_journal
from bodycam.daemon.evidence.manifest import (
    MANIFEST_NAME,
    build_manifest,
    load_manifest,
    load_signature,
    remove_stale_temporaries,
    signature_valid,
    write_manifest,
)
from bodycam.daemon.evidence.schema import (
    UNKNOWN_TIMESTAMP,
    CloseEvent,
    SealedSegment,
    SealEvent,
    format_utc,
    parse_utc,
)
from bodycam.daemon.evidence.segfile import (
    PART_RE,
    SEGMENT_RE,
    IntactPrefix,
    part_name,
    scan_intact_prefix,
    segment_name,
)
from bodycam.daemon.evidence.writer import CREATING_SUFFIX

_log = logging.getLogger(__name__)

__all__ = ["RecoveryReport", "recover_clip", "recover_clips"]

RECOVERED_REASON = "recovered"


@dataclass
class RecoveryReport:
    """What recovery did to one clip directory (or why it left it alone)."""

    clip_id: str | None
    directory: Path
    recovered_segments: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    manifest_written: bool = False
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log: what was sealed, dropped, written, and what is wrong."""
        parts = [f"sealed {', '.join(self.recovered_segments) or 'nothing'}"]
        if self.discarded:
            parts.append(f"discarded {'; '.join(self.discarded)}")
        parts.append("manifest written" if self.manifest_written else "no manifest written")
        if self.problems:
            parts.append(f"problems: {'; '.join(self.problems)}")
        return ", ".join(parts)


class _BlockedError(Exception):
    """The clip is in a state recovery does not understand: report it, change nothing more."""


def recover_clips(
    clips_dir: Path, *, signing_key: Ed25519PrivateKey, now_utc: dt.datetime
) -> list[RecoveryReport]:
    """Recover every unfinished clip in ``clips_dir``; return a report per clip touched.

    Finished clips (a manifest that verifies with this device's key) get no report. A
    manifest that does not verify is reported and left alone: re-signing it would launder
    whatever changed it.
    """
    if not clips_dir.is_dir():
        return []
    reports = []
    for entry in sorted(clips_dir.iterdir()):
        if not entry.is_dir():
            continue
        if entry.name.startswith("."):
            if entry.name.endswith(CREATING_SUFFIX):
                reports.append(_remove_unborn(entry))
            continue
        if (entry / MANIFEST_NAME).exists():
            problem = _finished_problem(entry, signing_key)
            if problem is not None:
                reports.append(RecoveryReport(None, entry, problems=[problem]))
            continue
        reports.append(recover_clip(entry, signing_key=signing_key, now_utc=now_utc))
    for report in reports:
        log = _log.warning if report.problems else _log.info
        log("recovery of %s: %s", report.directory.name, report.summary())
    return reports


def _finished_problem(directory: Path, signing_key: Ed25519PrivateKey) -> str | None:
    try:
        data, _ = load_manifest(directory)
        signature = load_signature(directory)
    except (FileNotFoundError, EvidenceError) as exc:
        return f"manifest present but unreadable, left alone: {exc}"
    if not signature_valid(data, signature, signing_key.public_key()):
        return "manifest present but not signed by this device's key, left alone"
    return None


def _remove_unborn(directory: Path) -> RecoveryReport:
    """A clip directory that crashed before its rename into place holds no footage."""
    report = RecoveryReport(None, directory)
    if any(child.name.startswith("seg-") for child in directory.iterdir()):
        report.problems.append(f"{directory.name}: holds segment files; left alone")
        return report
    try:
        shutil.rmtree(directory)
        fsync_dir(directory.parent)
    except OSError as exc:
        report.problems.append(f"{directory.name}: cannot remove: {exc.strerror}")
        return report
    report.discarded.append(f"{directory.name}: clip never started (no footage)")
    return report


def recover_clip(
    directory: Path, *, signing_key: Ed25519PrivateKey, now_utc: dt.datetime
) -> RecoveryReport:
    """Finish one clip directory that has no manifest (see the module docstring)."""
    report = RecoveryReport(None, directory)
    try:
        journal = read_journal(directory / JOURNAL_NAME)
    except EvidenceError as exc:
        report.problems.append(f"{exc}; nothing changed")
        return report
    report.clip_id = journal.open.clip_id
    try:
        unjournaled, part = _plan(directory, journal)
    except _BlockedError as exc:
        report.problems.append(f"{exc}; nothing changed")
        return report
    _check_journaled_files(directory, journal, report)
    try:
        _finish(
            journal,
            unjournaled=unjournaled,
            part=part,
            signing_key=signing_key,
            now_utc=now_utc,
            report=report,
        )
    except OSError as exc:
        where = exc.filename or directory
        report.problems.append(f"{where}: {exc.strerror}; run recovery again")
    return report


def _finish(
    journal: ClipJournal,
    *,
    unjournaled: list[int],
    part: int | None,
    signing_key: Ed25519PrivateKey,
    now_utc: dt.datetime,
    report: RecoveryReport,
) -> None:
    """The steps that change the directory, each durable before the next."""
    directory = journal.path.parent
    if journal.torn_bytes:
        _cut_torn_journal(journal)
        report.discarded.append(f"{JOURNAL_NAME}: torn last line ({journal.torn_bytes} bytes)")
    seals = [seal.sealed() for seal in journal.seals]
    closed = journal.close
    writer = JournalWriter.reopen(journal.path, journal.intact_length)
    try:
        for index in unjournaled:
            sealed = _seal_existing(directory, journal, index, seals, report)
            writer.append(SealEvent.of(sealed))
            seals.append(sealed)
        if part is not None:
            sealed_part = _seal_part(directory, journal, part, seals, report)
            if sealed_part is not None:
                writer.append(SealEvent.of(sealed_part))
                seals.append(sealed_part)
        if closed is None:
            closed = _recovered_close(journal, seals, now_utc)
            writer.append(closed)
    except _BlockedError as exc:
        report.problems.append(f"{exc}; clip left without a manifest")
        return
    finally:
        writer.close()
    remove_stale_temporaries(directory)
    manifest = build_manifest(journal.open, seals, closed, signing_key.public_key())
    write_manifest(directory, manifest, signing_key)
    report.manifest_written = True


def _plan(directory: Path, journal: ClipJournal) -> tuple[list[int], int | None]:
    """Which sealed files lack a seal line, and which ``.part`` to finish; or _BlockedError."""
    sealed: set[int] = set()
    parts: set[int] = set()
    for name in (child.name for child in directory.iterdir()):
        if match := SEGMENT_RE.match(name):
            sealed.add(int(match.group(1)))
        elif match := PART_RE.match(name):
            parts.add(int(match.group(1)))
    next_index = len(journal.seals)
    unjournaled = sorted(i for i in sealed if i >= next_index)
    if unjournaled != list(range(next_index, next_index + len(unjournaled))):
        raise _BlockedError(f"sealed segments {unjournaled} do not follow segment {next_index - 1}")
    next_index += len(unjournaled)
    if journal.close is not None and (unjournaled or parts):
        raise _BlockedError("segment files newer than the journal's close line")
    if len(parts) > 1 or (parts and parts != {next_index}):
        raise _BlockedError(
            f"unexpected .part files {sorted(parts)} (next segment is {next_index})"
        )
    return unjournaled, (next_index if parts else None)


def _check_journaled_files(directory: Path, journal: ClipJournal, report: RecoveryReport) -> None:
    # Size only: hashing hours of sealed footage at every boot would delay recording for minutes.
    for seal in journal.seals:
        try:
            size = (directory / seal.name).stat().st_size
        except FileNotFoundError:
            report.problems.append(f"{seal.name}: sealed but missing")
            continue
        if size != seal.size:
            report.problems.append(f"{seal.name}: {size} bytes, sealed as {seal.size}")


def _cut_torn_journal(journal: ClipJournal) -> None:
    fd = os.open(journal.path, os.O_WRONLY)
    try:
        os.ftruncate(fd, journal.intact_length)
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path) -> tuple[IntactPrefix, int]:
    with path.open("rb") as stream:
        return scan_intact_prefix(stream), os.fstat(stream.fileno()).st_size


def _check_identity(name: str, prefix: IntactPrefix, journal: ClipJournal, index: int) -> None:
    header = prefix.header
    if header is None:
        return
    if header.clip_id != journal.clip_id:
        raise _BlockedError(f"{name}: belongs to clip {header.clip_id.hex()}")
    if header.index != index:
        raise _BlockedError(f"{name}: header says segment {header.index}")


def _sealed_entry(
    path: Path, index: int, records: int, previous: list[SealedSegment], journal: ClipJournal
) -> SealedSegment:
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256")
        size = os.fstat(stream.fileno()).st_size
    sha = digest.hexdigest()
    chain_before = previous[-1].chain if previous else journal.chain_head
    return SealedSegment(
        index=index,
        name=segment_name(index),
        sha256=sha,
        chain=chain_next(chain_before, index, sha, size),
        size=size,
        records=records,
        # The seal line that would have carried the timing was lost with the power.
        first_timestamp_us=UNKNOWN_TIMESTAMP,
        last_timestamp_us=UNKNOWN_TIMESTAMP,
        frames=records,
        recovered=True,
    )


def _seal_existing(
    directory: Path,
    journal: ClipJournal,
    index: int,
    previous: list[SealedSegment],
    report: RecoveryReport,
) -> SealedSegment:
    """A ``.bcs`` renamed into place whose seal line never made it: journal it as it is."""
    name = segment_name(index)
    prefix, size = _scan(directory / name)
    if prefix.header is None:
        raise _BlockedError(f"{name}: sealed file without a valid header: {prefix.stopped_because}")
    _check_identity(name, prefix, journal, index)
    if prefix.length != size:
        report.problems.append(f"{name}: damaged after record {prefix.records}; kept as is")
    report.recovered_segments.append(name)
    return _sealed_entry(directory / name, index, prefix.records, previous, journal)


def _seal_part(
    directory: Path,
    journal: ClipJournal,
    index: int,
    previous: list[SealedSegment],
    report: RecoveryReport,
) -> SealedSegment | None:
    """Keep the intact records of the segment being written, seal them; or drop an empty one."""
    name = part_name(index)
    path = directory / name
    prefix, size = _scan(path)
    _check_identity(name, prefix, journal, index)
    if prefix.header is None or prefix.records == 0:
        why = prefix.stopped_because or "header only"
        path.unlink()
        fsync_dir(directory)
        report.discarded.append(f"{name}: no intact record ({why}); removed")
        return None
    fd = os.open(path, os.O_WRONLY)
    try:
        if prefix.length < size:
            os.ftruncate(fd, prefix.length)
            report.discarded.append(
                f"{name}: {size - prefix.length} bytes after record {prefix.records} "
                f"({prefix.stopped_because})"
            )
        os.fsync(fd)
    finally:
        os.close(fd)
    final = directory / segment_name(index)
    path.rename(final)
    fsync_dir(directory)
    report.recovered_segments.append(final.name)
    return _sealed_entry(final, index, prefix.records, previous, journal)


def _recovered_close(
    journal: ClipJournal, seals: list[SealedSegment], now_utc: dt.datetime
) -> CloseEvent:
    """The close line recovery writes: the end time is estimated, and says so.

    Estimate: ``started_utc`` plus the span of the known segment timestamps (first to last);
    segments whose seal line was lost carry no timing and add nothing, so the estimate is a
    lower bound.
    """
    known = [s for s in seals if s.first_timestamp_us != UNKNOWN_TIMESTAMP]
    span_us = 0
    if known:
        span_us = max(s.last_timestamp_us for s in known) - min(s.first_timestamp_us for s in known)
    ended = parse_utc(journal.open.started_utc) + dt.timedelta(microseconds=max(0, span_us))
    return CloseEvent(
        ended_utc=format_utc(ended),
        ended_utc_estimated=True,
        end_reason=RECOVERED_REASON,
        trigger_timestamp_us=None,
        pre_event_actual_s=None,
        continued_by=None,
        recovered_utc=format_utc(now_utc),
    )
