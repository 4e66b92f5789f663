"""Shared set-up for the benchmarks: a camera config in a temporary directory, frames."""

from __future__ import annotations

import datetime as dt
import os
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from bodycam.daemon.config import Config, load_config
from bodycam.drivers.interfaces import EncodedFrame, VideoFormat
from bodycam.sim.run import prepare_keys
from bodycam.sim.scene import SceneRenderer


def bench_config(tmp: Path, **sections: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "device": {"state_dir": str(tmp / "camera"), "runtime_dir": str(tmp / "run")},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    config = load_config(None).with_overrides(**overrides)
    prepare_keys(tmp, config)
    return config


def encode_frames(video: VideoFormat, count: int) -> list[EncodedFrame]:
    """Real H.264 of the simulated scene, encoded once up front."""
    renderer = SceneRenderer(video.width, video.height)
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = video.width, video.height, "yuv420p"
    codec.framerate = Fraction(video.fps)
    codec.time_base = Fraction(1, video.fps)
    codec.bit_rate = video.bitrate
    codec.gop_size = video.gop
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "scenecut=0"}
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    frames: list[EncodedFrame] = []
    interval = video.frame_interval_us
    for n in range(count):
        image = renderer.render(n, start + dt.timedelta(microseconds=n * interval))
        frame = av.VideoFrame.from_numpy_buffer(image, format="yuv420p")
        frame.pts = n
        packets = list(codec.encode(frame))
        if n == count - 1:
            packets += codec.encode(None)
        for packet in packets:
            timestamp = 10**9 + len(frames) * interval
            frames.append(EncodedFrame(bytes(packet), packet.is_keyframe, timestamp))
    return frames


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_int(name: str, default: int) -> int:
    """A positive whole number from the environment (a quick check shrinks a benchmark).

    Raises:
        SystemExit: The value is not a positive whole number (one line naming it).
    """
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{name}={text!r}: not a whole number") from None
    if value < 1:
        raise SystemExit(f"{name}={text!r}: must be at least 1")
    return value


def load_average() -> float:
    """The 1-minute load average (what else the shared machine was doing)."""
    return os.getloadavg()[0]


def spread(values: list[float]) -> str:
    """``min-max`` of a benchmark's per-run figures, for beside its median."""
    return f"{min(values):.2f}-{max(values):.2f}"
