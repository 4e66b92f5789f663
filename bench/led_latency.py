"""Trigger to red-LED-on latency on the simulated board, p50 and p99.

The trigger is driven from another thread, as gpiozero calls back from its own thread,
while the simulated sensor encodes 720p30 in the background. Latency is measured in the
board clock at real-time speed (so it is wall time). The same-run baseline is the floor
of the path: a thread handing a callback to the event loop, under the same load.
Target: p99 <= 10 ms.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bench.common import bench_config, percentile
from bodycam.daemon.app import load_keys, make_device, serve
from bodycam.sim.board import build_sim_board

SAMPLES = 100


async def poll_until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 (polling a pin from outside, as a probe would)
            await asyncio.sleep(0.002)


def in_thread(action: Callable[[], None]) -> None:
    thread = threading.Thread(target=action)
    thread.start()
    thread.join()


async def measure(tmp: Path) -> tuple[list[float], list[float]]:
    config = bench_config(
        tmp,
        video={"width": 1280, "height": 720, "fps": 30},
        recording={"pre_event_s": 0},
        buttons={"hold_stop_s": 0.5},
    )
    board = build_sim_board(config)
    device = make_device(config, board, load_keys(config))
    clock, world = board.sim_clock, board.world
    red = world.pin("red_led")
    stop = asyncio.Event()
    latencies: list[float] = []
    floors: list[float] = []

    def first_red_on_after(t0: float) -> float | None:
        times = [t for t, on in red.timeline if on and t >= t0]
        return min(times) if times else None

    async def one_trigger() -> None:
        t0 = clock.monotonic()
        in_thread(lambda: world.set_input("trigger:holster", True))
        await poll_until(lambda: first_red_on_after(t0) is not None)
        lit = first_red_on_after(t0)
        assert lit is not None
        latencies.append(lit - t0)
        world.set_input("trigger:holster", False)
        world.set_input("record_button", True)
        await clock.sleep(0.6)
        world.set_input("record_button", False)
        await poll_until(
            lambda: device.status.state == "BUFFERING" and not device.recorder.recording
        )

    async def one_hop(loop: asyncio.AbstractEventLoop) -> None:
        arrived = asyncio.Event()
        t1 = clock.monotonic()

        def land() -> None:
            floors.append(clock.monotonic() - t1)
            arrived.set()

        def hand_over() -> None:
            loop.call_soon_threadsafe(land)

        in_thread(hand_over)
        await arrived.wait()

    async def script() -> None:
        await poll_until(lambda: device.status.state == "BUFFERING")
        await asyncio.sleep(1.0)
        loop = asyncio.get_running_loop()
        for _ in range(SAMPLES):
            await one_trigger()
            await one_hop(loop)
            await asyncio.sleep(0.1)
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(device, stop=stop, handle_signals=False))
        tg.create_task(script())
    board.close()
    return latencies, floors


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        latencies, floors = asyncio.run(measure(Path(tmp)))
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    f50, f99 = percentile(floors, 50) * 1000, percentile(floors, 99) * 1000
    print(f"{len(latencies)} triggers while encoding 720p30")
    print(f"trigger -> red LED on: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 <= 10 ms)")
    print(f"baseline thread -> loop hop: p50 {f50:.2f} ms, p99 {f99:.2f} ms")
    print(
        f"led_latency ratio p99 / target: {p99 / 10:.2f}; "
        f"p99 / baseline p99: {p99 / max(f99, 1e-6):.1f}"
    )


if __name__ == "__main__":
    main()
