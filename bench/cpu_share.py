"""Daemon CPU share while recording 720p30 in real time, the simulated encoder excluded.

The sensor is the synthetic camera (frames of 8 Mbit/s sizes at 30 fps, no encoding), so
what is measured is the daemon: routing, muxing, encryption, writes, fsync, indicators,
status. Figure: process CPU seconds per wall second while recording, as a share of one
core; the same-run baseline is the same daemon buffering (sensor on, not recording).
Target: <= 2 % of one core.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from pathlib import Path

from bench.common import bench_config
from bodycam.daemon.app import load_keys, make_device, serve
from bodycam.sim.actions import perform
from bodycam.sim.board import build_sim_board

WINDOW_S = 20.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(tmp: Path) -> tuple[float, float]:
    config = bench_config(
        tmp,
        video={"width": 1280, "height": 720, "fps": 30, "bitrate": 8_000_000},
        sim={"camera": "synthetic", "speed": 1.0},
        recording={"pre_event_s": 30},
    )
    board = build_sim_board(config)
    device = make_device(config, board, load_keys(config))
    stop = asyncio.Event()
    shares: list[float] = []

    async def script() -> None:
        await asyncio.sleep(3.0)  # warm up: imports, first keyframes, ring filling
        for phase in ("buffering", "recording"):
            if phase == "recording":
                await perform(board, {"do": "double_press"})
                await asyncio.sleep(1.0)
            c0, t0 = cpu_seconds(), time.perf_counter()
            await asyncio.sleep(WINDOW_S)
            shares.append((cpu_seconds() - c0) / (time.perf_counter() - t0))
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(device, stop=stop, handle_signals=False))
        tg.create_task(script())
    board.close()
    assert device.status.segments_sealed > 0, "nothing was recorded"
    return shares[0], shares[1]


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        buffering, recording = asyncio.run(measure(Path(tmp)))
    print(f"buffering (baseline): {buffering * 100:.2f} % of one core")
    print(f"recording 720p30 at 8 Mbit/s: {recording * 100:.2f} % of one core (target <= 2 %)")
    print(
        f"cpu_share ratio (recording / buffering): {recording / max(buffering, 1e-9):.2f}; "
        f"recording / target: {recording / 0.02:.2f}"
    )


if __name__ == "__main__":
    main()
