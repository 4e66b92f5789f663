"""Export: only verified clips, only with the right force key, MPEG-TS or MP4."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.daemon.evidence import EvidenceError, decrypt_segment, export_clip
from bodycam.daemon.evidence.crypto import new_clip_key, unwrap_clip_key, wrap_clip_key
from bodycam.daemon.evidence.keys import fingerprint
from bodycam.drivers.interfaces import VideoFormat
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    Keys,
    WrittenClip,
    clip_info,
    flip_byte,
    h264_transport_stream,
    make_keys,
    open_clip,
    write_clip,
    write_segment,
)


@pytest.fixture
def clip(tmp_path: Path, keys: Keys) -> WrittenClip:
    return write_clip(tmp_path / "clips", keys, segments=3, records=4, seed=31)


def test_one_segment_decrypts_on_its_own(clip: WrittenClip, keys: Keys) -> None:
    assert decrypt_segment(clip.directory, "seg-000001.bcs", keys.force) == b"".join(clip.chunks[1])
    with pytest.raises(EvidenceError, match=r"no segment seg-000009\.bcs"):
        decrypt_segment(clip.directory, "seg-000009.bcs", keys.force)
    flip_byte(clip.directory / "seg-000002.bcs", 100)
    with pytest.raises(EvidenceError, match=r"first bad segment: seg-000002\.bcs"):
        decrypt_segment(clip.directory, "seg-000001.bcs", keys.force)


def test_wrong_force_key_is_refused_clearly(tmp_path: Path, clip: WrittenClip, keys: Keys) -> None:
    other = X25519PrivateKey.generate()
    out = tmp_path / "out.ts"
    with pytest.raises(EvidenceError) as caught:
        export_clip(clip.directory, other, out)
    message = str(caught.value)
    assert f"encrypted to force key {fingerprint(keys.force.public_key())}" in message
    assert fingerprint(other.public_key()) in message
    assert not out.exists()


def test_unwrap_with_the_wrong_key_fails_authentication() -> None:
    right, wrong = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    clip_id = bytes(range(16))
    clip_key = new_clip_key()
    wrapped = wrap_clip_key(clip_key, clip_id, right.public_key())
    assert unwrap_clip_key(wrapped, clip_id, right) == clip_key
    with pytest.raises(EvidenceError, match="does not unwrap"):
        unwrap_clip_key(wrapped, clip_id, wrong)
    with pytest.raises(EvidenceError, match="does not unwrap"):
        unwrap_clip_key(wrapped, bytes(16), right)  # bound to its clip id


def test_tampered_clip_is_not_exported(tmp_path: Path, clip: WrittenClip, keys: Keys) -> None:
    path = clip.directory / "seg-000001.bcs"
    flip_byte(path, path.stat().st_size - 3)
    out = tmp_path / "out.ts"
    with pytest.raises(EvidenceError, match=r"first bad segment: seg-000001\.bcs"):
        export_clip(clip.directory, keys.force, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.ts*"))


def test_unfinished_clip_is_not_exported(tmp_path: Path, keys: Keys) -> None:
    clip = write_clip(tmp_path / "clips", keys, close=False)
    with pytest.raises(EvidenceError, match="no manifest"):
        export_clip(clip.directory, keys.force, tmp_path / "out.ts")
    clip.writer.abandon()


def test_existing_output_is_not_replaced(tmp_path: Path, clip: WrittenClip, keys: Keys) -> None:
    out = tmp_path / "out.ts"
    out.write_bytes(b"earlier export")
    with pytest.raises(EvidenceError, match="already exists"):
        export_clip(clip.directory, keys.force, out)
    assert out.read_bytes() == b"earlier export"


def test_pinned_export_refuses_another_signer(
    tmp_path: Path, clip: WrittenClip, keys: Keys
) -> None:
    other = make_keys()
    with pytest.raises(EvidenceError, match="not by the pinned key"):
        export_clip(
            clip.directory, keys.force, tmp_path / "out.ts", device_key=other.device.public_key()
        )


def test_mp4_export_remuxes_without_reencoding(tmp_path: Path, keys: Keys) -> None:
    ts = h264_transport_stream(frames=20)
    chunk = 188 * 7
    pieces = [ts[i : i + chunk] for i in range(0, len(ts), chunk)]
    writer = open_clip(
        tmp_path / "clips", keys, info=clip_info(video=VideoFormat(width=64, height=48))
    )
    half = len(pieces) // 2
    write_segment(writer, pieces[:half], start_us=FIRST_TIMESTAMP_US)
    write_segment(writer, pieces[half:], start_us=FIRST_TIMESTAMP_US + 1_000_000)
    writer.close(ended_utc=END, reason="button")

    as_ts = export_clip(writer.directory, keys.force, tmp_path / "clip.ts")
    assert as_ts.path.read_bytes() == ts
    result = export_clip(writer.directory, keys.force, tmp_path / "clip.mp4")
    assert result.path == tmp_path / "clip.mp4"
    with av.open(str(result.path)) as container:
        assert container.format.name.startswith("mov,mp4")
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (64, 48)
        packets = [p for p in container.demux(video) if p.size]
    assert len(packets) == 20
