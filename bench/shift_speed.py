"""Simulated shift speed at 720p30: simulated seconds of video per wall second.

The whole daemon on the simulated board records 720p30 with the clock set far faster than
the encoder can follow, so the sensor runs flat out; the figure is the video time produced
per wall second. The same-run baseline is the bare sensor (scene + libx264, no daemon).
Target: >= 4x real time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

from bench.common import bench_config
from bodycam.daemon.app import load_keys, make_device, serve
from bodycam.sim.actions import perform
from bodycam.sim.board import build_sim_board
from bodycam.sim.camera import SimCamera
from bodycam.sim.scene import SceneRenderer

WALL_S = 15.0


def bare_encoder_speed(seconds: float) -> float:
    renderer = SceneRenderer(1280, 720)
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 1280, 720, "yuv420p"
    codec.framerate, codec.time_base = Fraction(30), Fraction(1, 30)
    codec.bit_rate, codec.gop_size = 8_000_000, 30
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "threads": "2"}
    start = time.perf_counter()
    n = 0
    when = dt.datetime.now(dt.UTC)
    while time.perf_counter() - start < seconds:
        frame = av.VideoFrame.from_numpy_buffer(renderer.render(n, when), format="yuv420p")
        frame.pts = n
        codec.encode(frame)
        n += 1
    return n / 30 / (time.perf_counter() - start)


async def daemon_speed(tmp: Path) -> tuple[float, int]:
    config = bench_config(
        tmp,
        video={"width": 1280, "height": 720, "fps": 30},
        sim={"speed": 50.0},
        recording={"pre_event_s": 0, "writer_queue_s": 120},
    )
    board = build_sim_board(config)
    device = make_device(config, board, load_keys(config))
    stop = asyncio.Event()
    result: list[float] = []

    async def script() -> None:
        await asyncio.sleep(1.0)
        await perform(board, {"do": "double_press"})
        f0, t0 = device.recorder.frames_written, time.perf_counter()
        await asyncio.sleep(WALL_S)
        result.append((device.recorder.frames_written - f0) / 30 / (time.perf_counter() - t0))
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(device, stop=stop, handle_signals=False))
        tg.create_task(script())
    board.close()
    camera = board.sim_camera
    dropped = camera.stats.frames_dropped if isinstance(camera, SimCamera) else 0
    return result[0], dropped


def main() -> None:
    bare = bare_encoder_speed(WALL_S / 2)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        speed, dropped = asyncio.run(daemon_speed(Path(tmp)))
    print(f"bare sensor (scene + libx264 720p30): {bare:.1f}x real time")
    print(
        f"whole daemon recording 720p30: {speed:.1f}x real time, "
        f"{dropped} frames dropped (target >= 4x)"
    )
    print(
        f"shift_speed ratio (daemon / bare sensor): {speed / bare:.2f}; "
        f"daemon / target: {speed / 4:.2f}"
    )


if __name__ == "__main__":
    main()
