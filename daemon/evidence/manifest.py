"""The clip manifest: built from the journal, signed with the device key, read back.

The manifest is a pure function of the journal (its ``open``, ``seal`` and ``close`` lines)
and the signing key. ``ClipWriter.close`` and recovery therefore share one code path, and a
crash between the journal's ``close`` line and the manifest reproduces the same bytes.

Write order: ``manifest.sig`` first, then ``manifest.json`` (its appearance is the commit
point). A directory with ``manifest.json`` is finished; one without is not, whatever else it
holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bodycam.daemon.evidence.chain import chain_start
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded, write_file_durably
from bodycam.daemon.evidence.keys import fingerprint, public_key_b64
from bodycam.daemon.evidence.schema import (
    MAX_MANIFEST_BYTES,
    CloseEvent,
    IntegrityInfo,
    Manifest,
    OpenEvent,
    SealedSegment,
    SegmentEntry,
    parse_manifest,
)

MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "manifest.sig"
SIGNATURE_SIZE: Final = 64  # raw Ed25519 signature


def build_manifest(
    opened: OpenEvent,
    seals: Sequence[SealedSegment],
    closed: CloseEvent,
    device_public_key: Ed25519PublicKey,
) -> Manifest:
    """The manifest of a clip whose journal holds these events."""
    clip_id = bytes.fromhex(opened.clip_id)
    segments = [SegmentEntry.of(seal) for seal in seals]
    return Manifest(
        clip_id=opened.clip_id,
        device_id=opened.device_id,
        officer_id=opened.officer_id,
        firmware_version=opened.firmware_version,
        started_utc=opened.started_utc,
        ended_utc=closed.ended_utc,
        ended_utc_estimated=closed.ended_utc_estimated,
        clock_set=opened.clock_set,
        clock_offset_s=opened.clock_offset_s,
        pre_event_s=opened.pre_event_s,
        pre_event_actual_s=closed.pre_event_actual_s,
        trigger=opened.trigger,
        trigger_timestamp_us=closed.trigger_timestamp_us,
        end_reason=closed.end_reason,
        video=opened.video,
        encryption=opened.encryption,
        integrity=IntegrityInfo(),
        continues=opened.continues,
        continues_chain_head=opened.continues_chain_head,
        continued_by=closed.continued_by,
        recovered=closed.recovered_utc is not None or any(s.recovered for s in segments),
        recovered_utc=closed.recovered_utc,
        segments=segments,
        total_bytes=sum(s.size for s in segments),
        chain_head=segments[-1].chain if segments else chain_start(clip_id),
        device_public_key=public_key_b64(device_public_key),
        device_key_fingerprint=fingerprint(device_public_key),
        clock_source=opened.clock_source,
    )


def write_manifest(directory: Path, manifest: Manifest, signing_key: Ed25519PrivateKey) -> Path:
    """Sign and durably write ``manifest.sig`` then ``manifest.json``; return the latter.

    Raises:
        EvidenceError: A manifest exists already (a signed manifest is never replaced).
        OSError: The card refused the write.
    """
    data = manifest.encode()
    path = directory / MANIFEST_NAME
    if path.exists():
        raise EvidenceError(f"{path}: already exists; a signed manifest is never replaced")
    write_file_durably(directory / SIGNATURE_NAME, signing_key.sign(data), overwrite=True)
    write_file_durably(path, data, overwrite=False)
    return path


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Remove half-written manifest temporaries left by a crash; return their names."""
    removed = []
    for name in (f".{MANIFEST_NAME}.tmp", f".{SIGNATURE_NAME}.tmp"):
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def load_manifest(directory: Path) -> tuple[bytes, Manifest]:
    """The exact manifest bytes and their parsed form.

    Raises:
        FileNotFoundError: There is no manifest.
        EvidenceError: It is oversized, unreadable or malformed.
    """
    path = directory / MANIFEST_NAME
    data = read_bounded(path, MAX_MANIFEST_BYTES, what="manifest")
    return data, parse_manifest(data, source=str(path))


def load_signature(directory: Path) -> bytes:
    """The 64 signature bytes.

    Raises:
        EvidenceError: Missing or not exactly 64 bytes.
    """
    path = directory / SIGNATURE_NAME
    try:
        sig = read_bounded(path, SIGNATURE_SIZE, what="signature")
    except FileNotFoundError:
        raise EvidenceError(f"{path}: missing") from None
    if len(sig) != SIGNATURE_SIZE:
        raise EvidenceError(f"{path}: {len(sig)} bytes, expected a {SIGNATURE_SIZE}-byte signature")
    return sig


def signature_valid(data: bytes, signature: bytes, key: Ed25519PublicKey) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature over exactly ``data``."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
