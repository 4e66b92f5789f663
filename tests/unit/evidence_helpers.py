"""Shared helpers for the evidence store tests: keys, clip metadata, clips written to disk."""

from __future__ import annotations

import datetime as dt
import errno
import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.daemon.evidence import ClipInfo, ClipWriter, SealedSegment
from bodycam.drivers.interfaces import StorageUsage, VideoFormat

START = dt.datetime(2026, 11, 22, 10, 15, 0, tzinfo=dt.UTC)
END = START + dt.timedelta(minutes=1)
FIRST_TIMESTAMP_US = 1_000_000_000  # the sim clock's monotonic domain starts at 1000 s
FRAME_US = 33_333


@dataclass(frozen=True)
class Keys:
    """A device signing key and a force key pair, as a test world holds them."""

    device: Ed25519PrivateKey
    force: X25519PrivateKey


def make_keys() -> Keys:
    return Keys(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())


def clip_info(**overrides: object) -> ClipInfo:
    values: dict[str, object] = {
        "device_id": "BODYCAM-TEST-0001",
        "officer_id": "PC-4711",
        "firmware_version": "0.1.0-test",
        "trigger": "button",
        "pre_event_s": 30.0,
        "video": VideoFormat(),
        "clock_set": True,
        "clock_offset_s": 0.125,
    }
    values.update(overrides)
    return ClipInfo(**values)  # type: ignore[arg-type]


def random_chunks(
    rng: random.Random, count: int, *, low: int = 40, high: int = 3000
) -> list[bytes]:
    """Chunks of random bytes, each tagged so that a plaintext leak is easy to grep for."""
    return [
        f"PLAINTEXT-{rng.getrandbits(64):016x}-".encode() + rng.randbytes(rng.randint(low, high))
        for _ in range(count)
    ]


@dataclass
class WrittenClip:
    """A clip written by a test: the writer, and the chunks of every segment in order."""

    writer: ClipWriter
    chunks: list[list[bytes]] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def directory(self) -> Path:
        return self.writer.directory

    @property
    def clip_id(self) -> str:
        return self.writer.clip_id

    @property
    def plaintext(self) -> bytes:
        return b"".join(b"".join(segment) for segment in self.chunks)


def open_clip(
    clips_dir: Path,
    keys: Keys,
    *,
    info: ClipInfo | None = None,
    started: dt.datetime = START,
) -> ClipWriter:
    return ClipWriter.create(
        clips_dir,
        info or clip_info(),
        started_utc=started,
        signing_key=keys.device,
        force_key=keys.force.public_key(),
    )


def write_segment(writer: ClipWriter, chunks: list[bytes], *, start_us: int) -> SealedSegment:
    """Begin, fill and seal one segment with one record per chunk."""
    writer.begin_segment()
    for n, chunk in enumerate(chunks):
        writer.append(chunk, timestamp_us=start_us + n * FRAME_US)
    return writer.seal_segment(
        first_timestamp_us=start_us,
        last_timestamp_us=start_us + (len(chunks) - 1) * FRAME_US,
        frames=len(chunks),
    )


def write_clip(
    clips_dir: Path,
    keys: Keys,
    *,
    segments: int = 3,
    records: int = 5,
    seed: int = 0,
    close: bool = True,
    info: ClipInfo | None = None,
    started: dt.datetime = START,
) -> WrittenClip:
    """Write a clip of ``segments`` sealed segments; close it unless told not to."""
    rng = random.Random(seed)
    clip = WrittenClip(open_clip(clips_dir, keys, info=info, started=started))
    for index in range(segments):
        chunks = random_chunks(rng, records)
        write_segment(clip.writer, chunks, start_us=FIRST_TIMESTAMP_US + index * 10_000_000)
        clip.chunks.append(chunks)
    if close:
        clip.manifest = clip.writer.close(ended_utc=END, reason="button")
    return clip


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime (ns) of every file in a directory."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


class BudgetStorage:
    """A card with ``budget`` bytes left for footage; then it is full, as a real card is."""

    def __init__(self, root: Path, budget: int) -> None:
        self._root = root
        self.budget = budget

    @property
    def root(self) -> Path:
        return self._root

    def usage(self) -> StorageUsage:
        return StorageUsage(total_bytes=1 << 30, free_bytes=max(0, self.budget))

    def check_write(self, nbytes: int) -> None:
        if nbytes > self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= nbytes


# Frames in h264_transport_stream's default stream.
H264_FRAMES = 20


def h264_transport_stream(frames: int = H264_FRAMES) -> bytes:
    """A small real H.264 MPEG-TS, as the camera's muxer writes it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for n in range(frames):
            image = np.full((48, 64, 3), n * 8 % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
