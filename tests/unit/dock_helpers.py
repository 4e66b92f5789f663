"""Helpers for the dock store tests: real signed clips delivered into a store's incoming/."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.store import DockStore
from bodycam.drivers.interfaces import VideoFormat
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    START,
    Keys,
    clip_info,
    h264_transport_stream,
    open_clip,
    write_clip,
    write_segment,
)

DEVICE = "BODYCAM-TEST-0001"
T0 = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)  # when the test clips reach the dock


class Clock:
    """A settable clock for ``DockStore(clock=...)``."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass(frozen=True)
class CameraClip:
    """A finished clip as the camera holds it."""

    clip_id: str
    directory: Path


def camera_clip(
    camera_dir: Path, keys: Keys, *, started: dt.datetime = START, h264: bool = False
) -> CameraClip:
    """Write a signed, encrypted clip on the "camera" (random bytes, or real H.264)."""
    camera_dir.mkdir(parents=True, exist_ok=True)
    if not h264:
        clip = write_clip(camera_dir, keys, segments=2, records=3, started=started)
        return CameraClip(clip.clip_id, clip.directory)
    ts = h264_transport_stream()
    step = 188 * 7
    pieces = [ts[i : i + step] for i in range(0, len(ts), step)]
    info = clip_info(video=VideoFormat(width=64, height=48))
    writer = open_clip(camera_dir, keys, info=info, started=started)
    half = len(pieces) // 2
    write_segment(writer, pieces[:half], start_us=FIRST_TIMESTAMP_US)
    write_segment(writer, pieces[half:], start_us=FIRST_TIMESTAMP_US + 1_000_000)
    writer.close(ended_utc=END, reason="button")
    return CameraClip(writer.clip_id, writer.directory)


def deliver(store: DockStore, clip: CameraClip, device_id: str = DEVICE) -> Path:
    """Copy a camera clip into the store's incoming/ as a finished transfer would."""
    incoming = store.incoming_dir(device_id, clip.directory.name)
    shutil.copytree(clip.directory, incoming, dirs_exist_ok=True)
    return incoming


def register_device(store: DockStore, keys: Keys, device_id: str = DEVICE) -> Path:
    """Put the camera's public key in the store's device registry."""
    path = store.device_key_path(device_id)
    pem = keys.device.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)
    return path


def write_force_key(path: Path, keys: Keys) -> Path:
    """The force private key as a PEM file (mode 0600), for export."""
    path.write_bytes(keys.force.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def receive(
    store: DockStore,
    keys: Keys,
    camera_dir: Path,
    *,
    started: dt.datetime = START,
    h264: bool = False,
) -> CameraClip:
    """Write a clip, deliver it, verify it pinned and accept it, as the dock does."""
    clip = camera_clip(camera_dir, keys, started=started, h264=h264)
    incoming = deliver(store, clip)
    verdict = verify_clip(incoming, device_key=keys.device.public_key())
    assert verdict.ok, verdict.problems
    stored = store.accept(
        DEVICE,
        clip.clip_id,
        incoming,
        segments=verdict.segments,
        dock_id="dock-test",
        signer=verdict.signer_fingerprint,
    )
    return CameraClip(clip.clip_id, stored)


def count_frames(path: Path) -> int:
    """Decode every video frame of a media file; the number decoded."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
