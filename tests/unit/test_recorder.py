"""The recorder: segments cut only at keyframes, rollover without a lost frame, faults."""

from __future__ import annotations

import asyncio
import errno
import io
import os
from pathlib import Path

import av
import pytest

from bodycam.daemon.evidence.export import decrypt_segment
from bodycam.daemon.evidence.store import read_manifest
from bodycam.daemon.evidence.verify import verify_path
from bodycam.daemon.recorder import (
    ClipFinished,
    Notice,
    Recorder,
    RecorderFault,
    RecorderSettings,
    SegmentSealed,
)
from bodycam.drivers.interfaces import EncodedFrame, StorageUsage, VideoFormat
from bodycam.sim.clock import SimClock
from tests.unit.evidence_helpers import Keys

FPS = 30
T0_US = 1_000_000_000


def stream(count: int, *, gop: int, start: int = 0) -> list[EncodedFrame]:
    """Frames with their index in the payload, a keyframe every ``gop`` frames."""
    interval = 1_000_000 // FPS
    return [
        EncodedFrame(
            (b"\x00\x00\x00\x01\x65" if i % gop == 0 else b"\x00\x00\x00\x01\x41")
            + f"frame-{i:08d}".encode()
            + os.urandom(200),
            i % gop == 0,
            T0_US + i * interval,
        )
        for i in range(start, start + count)
    ]


class FullCard:
    """A card that takes ``room`` bytes and then fails as a full one does."""

    def __init__(self, root: Path, room: int) -> None:
        self._root, self._room = root, room

    @property
    def root(self) -> Path:
        return self._root

    def usage(self) -> StorageUsage:
        return StorageUsage(10**9, max(0, self._room))

    def check_write(self, nbytes: int) -> None:
        if nbytes > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= nbytes


class Harness:
    def __init__(
        self,
        tmp: Path,
        keys: Keys,
        *,
        gop: int,
        segment_s: float = 2.0,
        room: int | None = None,
        clock: SimClock | None = None,
    ) -> None:
        self.clips = tmp / "clips"
        self.keys = keys
        self.notices: list[Notice] = []
        self.closed = asyncio.Event()
        settings = RecorderSettings(
            clips_dir=self.clips,
            video=VideoFormat(320, 240, FPS, 500_000, gop),
            pre_event_s=2.0,
            segment_s=segment_s,
            writer_queue_s=60,
            device_id="TEST",
            officer_id="",
            firmware_version="test",
            signing_key=keys.device,
            force_key=keys.force.public_key(),
        )
        storage = FullCard(self.clips, room) if room is not None else None
        self.clock = clock or SimClock()
        self.recorder = Recorder(settings, clock=self.clock, storage=storage, on_notice=self.note)

    def note(self, notice: Notice) -> None:
        self.notices.append(notice)
        if isinstance(notice, ClipFinished) and notice.reason != "rollover":
            self.closed.set()

    def segments(self) -> list[SegmentSealed]:
        return [n for n in self.notices if isinstance(n, SegmentSealed)]

    def frame_labels(self, clip: Path) -> list[tuple[str, bool]]:
        """(payload label, keyframe flag) of every frame, read back through decryption."""
        labels: list[tuple[str, bool]] = []
        for seg in sorted(clip.glob("seg-*.bcs")):
            data = decrypt_segment(clip, seg.name, self.keys.force)
            with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
                for packet in container.demux(video=0):
                    if packet.size:
                        payload = bytes(packet)
                        at = payload.index(b"frame-")
                        labels.append((payload[at : at + 14].decode(), packet.is_keyframe))
        return labels


async def record(
    h: Harness, frames: list[EncodedFrame], *, pre: int, rollover_at: int = -1
) -> None:
    h.recorder.start()
    for frame in frames[:pre]:
        h.recorder.on_frame(frame)
    h.recorder.open_clip("button", frames[pre].timestamp_us / 1e6)
    for i, frame in enumerate(frames[pre:], start=pre):
        if i == rollover_at:
            h.recorder.rollover()
        h.recorder.on_frame(frame)
    h.recorder.close_clip("button")
    async with asyncio.timeout(30):
        await h.closed.wait()
    await h.recorder.aclose()


@pytest.mark.parametrize(("gop", "segment_s"), [(30, 2.0), (45, 2.0), (15, 1.0)])
async def test_segments_are_cut_only_at_keyframes(
    tmp_path: Path, keys: Keys, gop: int, segment_s: float
) -> None:
    h = Harness(tmp_path, keys, gop=gop, segment_s=segment_s)
    frames = stream(FPS * 12, gop=gop)
    await record(h, frames, pre=FPS * 3)
    segments = h.segments()
    assert len(segments) >= 3
    for sealed in segments[:-1]:
        duration = (sealed.segment.last_timestamp_us - sealed.segment.first_timestamp_us) / 1e6
        # At least the target length, never more than one GOP beyond it.
        assert segment_s - 0.05 <= duration + 1 / FPS <= segment_s + gop / FPS + 0.05
    clip = next(p for p in h.clips.iterdir() if p.is_dir())
    labels = h.frame_labels(clip)
    starts = [0]
    for sealed in segments[:-1]:
        starts.append(starts[-1] + sealed.segment.frames)
    for index in starts:
        assert labels[index][1], f"segment starting at frame {index} does not start at a keyframe"


async def test_pre_event_frames_start_the_clip_at_a_keyframe(tmp_path: Path, keys: Keys) -> None:
    h = Harness(tmp_path, keys, gop=30)
    frames = stream(FPS * 10, gop=30, start=7)  # the sensor starts mid-GOP
    await record(h, frames, pre=FPS * 6)
    clip = next(p for p in h.clips.iterdir() if p.is_dir())
    labels = h.frame_labels(clip)
    first = int(labels[0][0].removeprefix("frame-"))
    trigger = 7 + FPS * 6
    assert labels[0][1]
    assert trigger - 2 * FPS - 30 <= first <= trigger - 2 * FPS  # 2 s, to one GOP
    numbers = [int(label.removeprefix("frame-")) for label, _ in labels]
    assert numbers == list(range(first, first + len(numbers)))
    assert read_manifest(clip)["pre_event_actual_s"] >= 2.0 - 1e-6


async def test_rollover_cuts_at_a_keyframe_and_loses_no_frame(tmp_path: Path, keys: Keys) -> None:
    h = Harness(tmp_path, keys, gop=30)
    frames = stream(FPS * 12, gop=30)
    await record(h, frames, pre=FPS * 3, rollover_at=FPS * 6 + 10)
    clips = sorted(p for p in h.clips.iterdir() if p.is_dir())
    assert len(clips) == 2
    first, second = (h.frame_labels(c) for c in clips)
    assert second[0][1], "the new clip must start at a keyframe"
    numbers = [int(label.removeprefix("frame-")) for label, _ in first + second]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert read_manifest(clips[1])["continues"] == read_manifest(clips[0])["clip_id"]
    assert all(v.ok for v in verify_path(h.clips))


async def test_full_card_reports_and_seals_what_was_written(tmp_path: Path, keys: Keys) -> None:
    h = Harness(tmp_path, keys, gop=30, room=40_000)
    await record(h, stream(FPS * 10, gop=30), pre=FPS * 2)
    faults = [n for n in h.notices if isinstance(n, RecorderFault)]
    assert [f.reason for f in faults] == ["storage_full"]
    finished = [n for n in h.notices if isinstance(n, ClipFinished)]
    assert finished[0].reason == "storage_full"
    assert all(v.ok for v in verify_path(h.clips))
    assert not h.recorder.recording
