"""Recording path throughput against raw sha256 + write + fsync of the same bytes.

The path: pre-event ring, segmenting at keyframes, MPEG-TS muxing, AES-GCM per frame,
writes, fsync, rename, directory fsync, SHA-256 and chain, journal, signed manifest. The
baseline writes the same encoded bytes in the same 2 s segment files with only sha256,
write and fsync. Target: ratio (baseline time / path time) >= 0.9.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

from bench.common import bench_config, encode_frames, median
from bodycam.daemon.app import firmware_version, load_keys
from bodycam.daemon.recorder import Recorder, RecorderSettings
from bodycam.drivers.interfaces import EncodedFrame, VideoFormat
from bodycam.sim.clock import SimClock

VIDEO = VideoFormat(1280, 720, 30, 8_000_000, 30)
SECONDS = 30
ROUNDS = 3


async def run_path(tmp: Path, frames: list[EncodedFrame]) -> float:
    config = bench_config(tmp, recording={"writer_queue_s": 120, "pre_event_s": 5})
    keys = load_keys(config)
    settings = RecorderSettings(
        clips_dir=config.clips_dir,
        video=VIDEO,
        pre_event_s=5,
        segment_s=2.0,
        writer_queue_s=120,
        device_id="BENCH",
        officer_id="",
        firmware_version=firmware_version(),
        signing_key=keys.signing_key,
        force_key=keys.force_key,
    )
    done = asyncio.Event()
    recorder = Recorder(
        settings,
        clock=SimClock(),
        storage=None,
        on_notice=lambda n: done.set() if type(n).__name__ == "ClipFinished" else None,
    )
    recorder.start()
    start = time.perf_counter()
    pre = int(5 * VIDEO.fps)
    for frame in frames[:pre]:
        recorder.on_frame(frame)
    recorder.open_clip("button", frames[pre].timestamp_us / 1e6)
    for frame in frames[pre:]:
        recorder.on_frame(frame)
    recorder.close_clip("button")
    await done.wait()
    elapsed = time.perf_counter() - start
    await recorder.aclose()
    return elapsed


def run_baseline(tmp: Path, frames: list[EncodedFrame]) -> float:
    directory = tmp / "raw"
    directory.mkdir()
    per_segment = 2 * VIDEO.fps
    start = time.perf_counter()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        for i in range(0, len(frames), per_segment):
            data = b"".join(f.data for f in frames[i : i + per_segment])
            hashlib.sha256(data).hexdigest()
            part = directory / f"seg-{i:06d}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for j in range(i, min(i + per_segment, len(frames))):
                    os.write(fd, frames[j].data)
                os.fsync(fd)
            finally:
                os.close(fd)
            part.rename(part.with_suffix(".seg"))
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return time.perf_counter() - start


def main() -> None:
    frames = encode_frames(VIDEO, SECONDS * VIDEO.fps)
    mbytes = sum(len(f.data) for f in frames) / 1e6
    path_times, base_times = [], []
    for _ in range(ROUNDS):
        with (
            tempfile.TemporaryDirectory(dir=Path.cwd()) as a,
            tempfile.TemporaryDirectory(dir=Path.cwd()) as b,
        ):
            base_times.append(run_baseline(Path(b), frames))
            path_times.append(asyncio.run(run_path(Path(a), frames)))
    path_t, base_t = median(path_times), median(base_times)
    print(
        f"{len(frames)} frames, {mbytes:.1f} MB of 720p H.264 ({mbytes * 8 / SECONDS:.1f} Mbit/s)"
    )
    print(
        f"recording path: {mbytes / path_t:.0f} MB/s ({path_t * 1000:.0f} ms); "
        f"baseline sha256+write+fsync: {mbytes / base_t:.0f} MB/s ({base_t * 1000:.0f} ms)"
    )
    print(
        f"recording_path ratio (baseline time / path time): {base_t / path_t:.2f}  (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
