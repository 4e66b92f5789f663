"""Exporting a clip for a court or an investigator: verify, unwrap, decrypt, write.

This runs on the force's side with the force private key; the camera never can. Nothing is
written unless the clip verifies, every record's GCM tag is checked, and the output appears
only complete (written to a temporary name, fsynced, renamed).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.daemon.evidence.crypto import SegmentCipher, WrappedKey, unwrap_clip_key
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import fsync_dir
from bodycam.daemon.evidence.keys import fingerprint
from bodycam.daemon.evidence.schema import Manifest, SegmentEntry
from bodycam.daemon.evidence.segfile import RecordError, SegmentReader
from bodycam.daemon.evidence.verify import check_clip

_log = logging.getLogger(__name__)

__all__ = ["ExportResult", "decrypt_segment", "export_clip"]


@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path
    segments: int
    frames: int
    bytes: int


def export_clip(
    directory: Path,
    force_private_key: X25519PrivateKey,
    out: Path,
    *,
    device_key: Ed25519PublicKey | None = None,
) -> ExportResult:
    """Verify a clip and write its video: MPEG-TS, or MP4 when ``out`` ends in ``.mp4``.

    Args:
        directory: The clip directory.
        force_private_key: The force key the clip was encrypted to.
        out: Destination file; must not exist (an export never replaces a file).
        device_key: Pin the device's public key for the verification step.

    Raises:
        EvidenceError: Verification failed (names the first bad segment), the key is not
            the clip's force key, a record fails authentication, or ``out`` is unusable.
    """
    manifest = _verified(directory, device_key)
    clip_key = _unwrap(manifest, force_private_key)
    if out.exists():
        raise EvidenceError(f"{out}: already exists; refusing to overwrite")
    if not out.parent.is_dir():
        raise EvidenceError(f"{out.parent}: no such directory")
    as_mp4 = out.suffix.lower() == ".mp4"
    ts_tmp = out.with_name(f".{out.name}.{os.getpid()}.ts.tmp")
    mp4_tmp = out.with_name(f".{out.name}.{os.getpid()}.mp4.tmp")
    try:
        with ts_tmp.open("xb") as sink:
            for chunk in _plaintext(directory, manifest, clip_key):
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        final_tmp = ts_tmp
        if as_mp4:
            _remux_to_mp4(ts_tmp, mp4_tmp)
            final_tmp = mp4_tmp
        final_tmp.replace(out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise EvidenceError(f"{out}: cannot write the export: {exc.strerror}") from None
    finally:
        for tmp in (ts_tmp, mp4_tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    result = ExportResult(
        path=out,
        segments=len(manifest.segments),
        frames=sum(entry.frames for entry in manifest.segments),
        bytes=out.stat().st_size,
    )
    _log.info("exported clip %s to %s (%d bytes)", manifest.clip_id, out, result.bytes)
    return result


def _verified(directory: Path, device_key: Ed25519PublicKey | None) -> Manifest:
    """The manifest of a clip that passed verification, or EvidenceError."""
    verdict, manifest = check_clip(directory, device_key=device_key)
    if not verdict.ok or manifest is None:
        bad = verdict.first_bad_segment
        where = f" (first bad segment: {bad})" if bad else ""
        raise EvidenceError(
            f"{directory}: refusing to export, verification failed{where}: {verdict.problems[0]}"
        )
    return manifest


def _unwrap(manifest: Manifest, force_private_key: X25519PrivateKey) -> bytes:
    encryption = manifest.encryption
    given = fingerprint(force_private_key.public_key())
    if given != encryption.force_key_fingerprint:
        raise EvidenceError(
            f"clip {manifest.clip_id} is encrypted to force key {encryption.force_key_fingerprint}"
            f", not to the key given ({given})"
        )
    wrapped = WrappedKey(
        base64.b64decode(encryption.ephemeral_public_key),
        base64.b64decode(encryption.wrapped_key),
    )
    try:
        return unwrap_clip_key(wrapped, bytes.fromhex(manifest.clip_id), force_private_key)
    except EvidenceError as exc:
        raise EvidenceError(f"clip {manifest.clip_id}: {exc}") from None


def _plaintext(directory: Path, manifest: Manifest, clip_key: bytes) -> Iterator[bytes]:
    """Every record's plaintext in order, re-checking each segment's hash as it is read."""
    for entry in manifest.segments:
        yield from _segment_plaintext(directory, entry, manifest.clip_id, clip_key)


def _segment_plaintext(
    directory: Path, entry: SegmentEntry, clip_id_hex: str, clip_key: bytes
) -> Iterator[bytes]:
    clip_id = bytes.fromhex(clip_id_hex)
    with (directory / entry.name).open("rb") as stream:
        reader = SegmentReader(stream)
        if reader.header.clip_id != clip_id or reader.header.index != entry.index:
            raise EvidenceError(f"{entry.name}: changed during export")
        cipher = SegmentCipher(clip_key, clip_id, entry.index, reader.header_bytes)
        try:
            for record in reader:
                try:
                    yield cipher.decrypt(record.index, record.ciphertext)
                except EvidenceError as exc:
                    raise EvidenceError(f"{entry.name}: {exc}") from None
            sha, _ = reader.finish()
        except RecordError as exc:
            raise EvidenceError(f"{entry.name}: {exc}") from None
    if sha != entry.sha256:
        raise EvidenceError(f"{entry.name}: changed during export")


def decrypt_segment(
    directory: Path,
    name: str,
    force_private_key: X25519PrivateKey,
    *,
    device_key: Ed25519PublicKey | None = None,
) -> bytes:
    """The MPEG-TS bytes of one segment of a verified clip, in memory (for tools and tests).

    Each segment starts at a keyframe, so the result plays on its own.

    Raises:
        EvidenceError: The clip does not verify, has no segment ``name``, or the key is wrong.
    """
    manifest = _verified(directory, device_key)
    entry = next((e for e in manifest.segments if e.name == name), None)
    if entry is None:
        raise EvidenceError(f"{directory}: the manifest lists no segment {name}")
    clip_key = _unwrap(manifest, force_private_key)
    return b"".join(_segment_plaintext(directory, entry, manifest.clip_id, clip_key))


def _remux_to_mp4(ts_path: Path, mp4_path: Path) -> None:
    """Copy the video stream from MPEG-TS into MP4 without re-encoding."""
    try:
        with (
            av.open(str(ts_path), format="mpegts") as source,
            av.open(str(mp4_path), "w", format="mp4") as target,
        ):
            video = next((s for s in source.streams if s.type == "video"), None)
            if video is None:
                raise EvidenceError(f"{ts_path}: the decrypted clip holds no video stream")
            stream = target.add_stream_from_template(video)
            for packet in source.demux(video):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = stream
                target.mux(packet)
        _fsync_file(mp4_path)
    except av.error.FFmpegError as exc:
        raise EvidenceError(f"cannot convert the clip to MP4: {exc}") from None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
