"""Verifying clips offline: signature, manifest, every segment, the chain, the links.

Anyone holding a clip directory (and, to pin it, the device's public key) can run this; it
needs no secret. A verdict lists every problem found, in the order a person should read them,
and names the first bad segment so that a report can say which file was touched.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.daemon.evidence.chain import chain_over
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.journal import JOURNAL_NAME, read_journal
from bodycam.daemon.evidence.keys import fingerprint
from bodycam.daemon.evidence.manifest import (
    MANIFEST_NAME,
    load_manifest,
    load_signature,
    signature_valid,
)
from bodycam.daemon.evidence.schema import Manifest, SegmentEntry
from bodycam.daemon.evidence.segfile import HeaderError, RecordError, SegmentReader

_log = logging.getLogger(__name__)

__all__ = ["ClipVerdict", "check_clip", "find_clip", "is_clip_dir", "verify_clip", "verify_path"]

NO_MANIFEST = "no manifest: still recording or not recovered"


@dataclass
class ClipVerdict:
    """The outcome of verifying one clip directory."""

    directory: Path
    clip_id: str | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    first_bad_segment: str | None = None
    segments: int = 0
    recovered_segments: int = 0
    signer_fingerprint: str | None = None
    pinned: bool = False


def verify_clip(directory: Path, *, device_key: Ed25519PublicKey | None = None) -> ClipVerdict:
    """Check one clip directory completely.

    Args:
        directory: The clip directory.
        device_key: The device's public key, when known from elsewhere (pinned). Without it
            the key recorded in the manifest is used, which proves integrity since signing
            but not *who* signed: the verdict's ``pinned`` says which was done.

    Raises:
        EvidenceError: ``directory`` is not a directory.
    """
    return check_clip(directory, device_key=device_key)[0]


def check_clip(
    directory: Path, *, device_key: Ed25519PublicKey | None = None
) -> tuple[ClipVerdict, Manifest | None]:
    """:func:`verify_clip`, also returning the very manifest that was checked (if parsed).

    Export uses it so that what it decrypts is described by the bytes whose signature was
    checked, not by a second read of the file.
    """
    if not directory.is_dir():
        raise EvidenceError(f"{directory}: not a clip directory")
    verdict = ClipVerdict(directory, None, ok=False, pinned=device_key is not None)
    try:
        data, manifest = load_manifest(directory)
    except FileNotFoundError:
        verdict.clip_id = _clip_id_from_journal(directory)
        verdict.problems.append(NO_MANIFEST)
        return verdict, None
    except EvidenceError as exc:
        verdict.clip_id = _clip_id_from_journal(directory)
        verdict.problems.append(f"manifest: {exc}")
        return verdict, None
    verdict.clip_id = manifest.clip_id
    verdict.segments = len(manifest.segments)
    verdict.recovered_segments = sum(1 for s in manifest.segments if s.recovered)
    _check_signature(directory, data, manifest, device_key, verdict)
    _check_manifest_chain(manifest, verdict)
    clip_id = bytes.fromhex(manifest.clip_id)
    for entry in manifest.segments:
        problem = _check_segment(directory / entry.name, entry, clip_id)
        if problem is not None:
            _bad_segment(verdict, entry.name, problem)
    for name in unlisted_segment_files(directory, manifest):
        _bad_segment(verdict, name, "not listed in the manifest (added?)")
    _check_continues(directory, manifest, verdict)
    verdict.ok = not verdict.problems
    return verdict, manifest


def unlisted_segment_files(directory: Path, manifest: Manifest) -> list[str]:
    """Segment files in ``directory`` that ``manifest`` does not list (added, or left over).

    The signature covers only what the manifest lists, so such a file is footage (or a
    forgery) no verifier can vouch for: verification fails on it, and the camera does not
    offer the clip to a dock, whose copy would hold only the listed files and pass.
    """
    listed = {entry.name for entry in manifest.segments}
    return [
        name
        for name in sorted(child.name for child in directory.iterdir())
        if name.startswith("seg-") and name not in listed
    ]


def _bad_segment(verdict: ClipVerdict, name: str, problem: str) -> None:
    verdict.problems.append(f"{name}: {problem}")
    if verdict.first_bad_segment is None:
        verdict.first_bad_segment = name


def _check_signature(
    directory: Path,
    data: bytes,
    manifest: Manifest,
    pinned: Ed25519PublicKey | None,
    verdict: ClipVerdict,
) -> None:
    recorded: Ed25519PublicKey | None = None
    try:
        recorded = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(manifest.device_public_key, validate=True)
        )
    except (ValueError, binascii.Error):
        verdict.problems.append("manifest: device_public_key is not an Ed25519 key")
    if recorded is not None and fingerprint(recorded) != manifest.device_key_fingerprint:
        verdict.problems.append("manifest: device_key_fingerprint does not match the key")
    key = pinned or recorded
    if key is None:
        return
    verdict.signer_fingerprint = fingerprint(key)
    try:
        signature = load_signature(directory)
    except EvidenceError as exc:
        verdict.problems.append(f"manifest: {exc}")
        return
    if signature_valid(data, signature, key):
        return
    if pinned is not None and recorded is not None and signature_valid(data, signature, recorded):
        verdict.problems.append(
            f"manifest: signed by device key {fingerprint(recorded)}, not by the pinned key "
            f"{fingerprint(pinned)} (another device, or re-signed)"
        )
    else:
        verdict.problems.append("manifest: signature invalid (edited?)")


def _check_manifest_chain(manifest: Manifest, verdict: ClipVerdict) -> None:
    for position, entry in enumerate(manifest.segments):
        if entry.index != position or entry.name != f"seg-{position:06d}.bcs":
            verdict.problems.append(
                f"manifest: segment entry {position} is {entry.name} (index {entry.index})"
            )
            return
    links = chain_over(
        bytes.fromhex(manifest.clip_id),
        ((e.index, e.sha256, e.size) for e in manifest.segments),
    )
    for entry, link in zip(manifest.segments, links[1:], strict=True):
        if entry.chain != link:
            verdict.problems.append(f"manifest: {entry.name}: chain link does not match")
            return
    if manifest.chain_head != links[-1]:
        verdict.problems.append("manifest: chain head does not match the segments")
    if manifest.total_bytes != sum(e.size for e in manifest.segments):
        verdict.problems.append("manifest: total_bytes does not match the segments")


def _check_segment(path: Path, entry: SegmentEntry, clip_id: bytes) -> str | None:
    """What is wrong with one listed segment file, or None."""
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    with stream:
        size = os.fstat(stream.fileno()).st_size
        try:
            reader = SegmentReader(stream)
        except HeaderError as exc:
            return f"{exc} (altered)"
        header = reader.header
        if header.clip_id != clip_id:
            return f"belongs to clip {header.clip_id.hex()} (swapped between clips)"
        if header.index != entry.index:
            return (
                f"header says segment {header.index}, listed as {entry.index} "
                "(reordered or renamed)"
            )
        if size != entry.size:
            return f"{size} bytes, manifest says {entry.size} (truncated or extended)"
        record_problem: str | None = None
        try:
            sha, _ = reader.finish()
        except RecordError as exc:
            record_problem = str(exc)
            sha, _ = reader.drain()
    if sha != entry.sha256:
        return "SHA-256 mismatch (altered)"
    if record_problem is not None:
        return record_problem
    if reader.records != entry.records:
        return f"{reader.records} records, manifest says {entry.records}"
    return None


def _check_continues(directory: Path, manifest: Manifest, verdict: ClipVerdict) -> None:
    """A rollover clip's link to its predecessor, when that clip is beside it."""
    if manifest.continues is None:
        return
    previous = find_clip(directory.parent, manifest.continues)
    if previous is None:
        return
    try:
        _, before = load_manifest(previous)
    except (FileNotFoundError, EvidenceError):
        return  # its own verdict says what is wrong with it
    if before.chain_head != manifest.continues_chain_head:
        verdict.problems.append(
            f"continues: chain head of previous clip {manifest.continues} does not match"
        )
    if before.continued_by not in (None, manifest.clip_id):
        verdict.problems.append(
            f"continues: previous clip {manifest.continues} says it is continued by "
            f"{before.continued_by}"
        )


def find_clip(clips_dir: Path, clip_id: str) -> Path | None:
    """The directory in ``clips_dir`` holding clip ``clip_id``, if any."""
    try:
        candidates = sorted(clips_dir.glob(f"*-{clip_id[:8]}"))
    except OSError:
        return None
    for candidate in candidates:
        if _clip_id_of(candidate) == clip_id:
            return candidate
    return None


def _clip_id_of(directory: Path) -> str | None:
    try:
        return load_manifest(directory)[1].clip_id
    except (FileNotFoundError, EvidenceError):
        return _clip_id_from_journal(directory)


def _clip_id_from_journal(directory: Path) -> str | None:
    try:
        return read_journal(directory / JOURNAL_NAME).open.clip_id
    except EvidenceError:
        return None


def is_clip_dir(path: Path) -> bool:
    """Whether ``path`` looks like a clip directory (finished or not)."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    if (path / MANIFEST_NAME).exists() or (path / JOURNAL_NAME).exists():
        return True
    return any(child.name.startswith("seg-") for child in path.iterdir())


def verify_path(path: Path, *, device_key: Ed25519PublicKey | None = None) -> list[ClipVerdict]:
    """Verify a clip directory, a clips directory, or a state directory holding ``clips/``.

    Raises:
        EvidenceError: ``path`` does not exist or holds no clip.
    """
    if not path.exists():
        raise EvidenceError(f"{path}: no such file or directory")
    if path.is_file() and path.name == MANIFEST_NAME:
        path = path.parent
    if is_clip_dir(path):
        return [verify_clip(path, device_key=device_key)]
    clips_dir = path / "clips" if (path / "clips").is_dir() else path
    if not clips_dir.is_dir():
        raise EvidenceError(f"{path}: not a clip, clips or state directory")
    clip_dirs = [child for child in sorted(clips_dir.iterdir()) if is_clip_dir(child)]
    if not clip_dirs:
        raise EvidenceError(f"{path}: no clips to verify")
    verdicts = [verify_clip(child, device_key=device_key) for child in clip_dirs]
    _log.info("verified %d clips, %d ok", len(verdicts), sum(v.ok for v in verdicts))
    return verdicts
