"""Dock memory under a camera that answers LIST with more pages for ever.

``bodycam dock`` runs in its own process (one bay, not ``--once``: a dock host keeps
running). An enrolled camera from the rogue-camera kit (tests/rogue_camera.py) authenticates
for real and then answers every LIST with a full page of made-up clips and one more page to
come. The figure is the dock's peak RSS (the kernel's VmHWM) 10 s and 60 s after the first
LIST, and their ratio: a flat line is <= 1.1 (issue 12: it was 70 MB -> 222 MB in 60 s).
The same-run baseline is the peak of an honest docking by the same dock build on the same
store just before.

Each of ``RUNS`` runs is reported; a run in which the dock process ended early or never
asked for a LIST went wrong: it is named with its reason and no ratio is printed.

Run: ``./dev bench dock_memory`` (``BODYCAM_BENCH_MEMORY_S`` shortens the 60 s and
``BODYCAM_BENCH_RUNS`` the runs, for a quick check only).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import env_int, load_average, spread
from bodycam.dock.store import DockStore
from bodycam.drivers.link.messages import ListClips
from tests.rogue_camera import (
    DockProcess,
    Force,
    ScriptedCamera,
    bay,
    dock_args,
    endless_list,
    make_force,
    signal_on,
)

RUNS = env_int("BODYCAM_BENCH_RUNS", 5)
LATE_S = env_int("BODYCAM_BENCH_MEMORY_S", 60)
EARLY_S = min(10.0, LATE_S / 2)
TARGET = 1.1
MB = 1e6


@dataclass
class MemoryRun:
    baseline: int  # peak RSS of an honest docking, bytes
    early: int  # VmHWM EARLY_S after the first LIST
    late: int  # VmHWM LATE_S after the first LIST
    pages_early: int  # LIST requests the camera had answered by then
    pages_late: int
    problem: str | None = None


def _peak(process: DockProcess) -> int | None:
    try:
        return process.status_bytes("VmHWM")
    except (OSError, LookupError):
        return None  # gone (a zombie has no memory figures)


async def _honest_baseline(force: Force, credentials: Path, store: Path, n: int) -> int | None:
    unit = force.camera(f"BENCH-HONEST-{n}", clips=2, records=40, seed=n)
    DockStore(store).register_device(unit.device_id, unit.public_key_path)
    async with bay(ScriptedCamera(unit), "honest") as port:
        run = await DockProcess(dock_args([port], store, credentials), store.parent / "logs").wait()
    ok = run.crashed() is None and run.returncode == 0 and not unit.card()
    return run.peak_rss if ok else None


async def one_run(force: Force, credentials: Path, n: int) -> MemoryRun:
    store = force.root.parent / f"store-{n}"
    baseline = await _honest_baseline(force, credentials, store, n)
    run = MemoryRun(baseline or 0, 0, 0, 0, 0)
    if baseline is None:
        run.problem = "the honest baseline docking did not commit every clip"
        return run
    unit = force.camera(f"BENCH-ENDLESS-{n}", clips=1, records=10, seed=100 + n)
    DockStore(store).register_device(unit.device_id, unit.public_key_path)
    listed = asyncio.Event()
    camera = ScriptedCamera(unit, overrides=[signal_on(ListClips, listed), endless_list()])
    async with bay(camera, "endless") as port:
        process = DockProcess(
            dock_args([port], store, credentials, once=False), store.parent / "logs"
        )
        try:
            try:
                async with asyncio.timeout(60):
                    await listed.wait()
            except TimeoutError:
                run.problem = "the dock never asked for a LIST"
                return run
            await asyncio.sleep(EARLY_S)
            early = _peak(process)
            run.pages_early = camera.requests.count("ListClips")
            await asyncio.sleep(LATE_S - EARLY_S)
            late = _peak(process)
            run.pages_late = camera.requests.count("ListClips")
        finally:
            process.kill()
            ended = await process.wait()
    if early is None or late is None:
        run.problem = f"the dock process ended early (exit {ended.returncode})"
        return run
    run.early, run.late = early, late
    return run


async def measure(root: Path) -> list[MemoryRun]:
    force = make_force(root / "force")
    credentials = force.dock("dock")
    return [await one_run(force, credentials, n) for n in range(RUNS)]


def main() -> int:
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-dock-memory-") as tmp:
        runs = asyncio.run(measure(Path(tmp)))
    load_after = load_average()
    print(f"{RUNS} runs; peak RSS {EARLY_S:g} s and {LATE_S} s after the first LIST")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    for n, run in enumerate(runs):
        if run.problem is not None:
            print(f"run {n} went wrong: {run.problem}")
            continue
        print(
            f"run {n}: honest docking {run.baseline / MB:.1f} MB; endless LIST "
            f"{run.early / MB:.1f} MB at {EARLY_S:g} s ({run.pages_early} pages), "
            f"{run.late / MB:.1f} MB at {LATE_S} s ({run.pages_late} pages)"
        )
    bad = [run for run in runs if run.problem is not None]
    if bad:
        print(f"no ratio: {len(bad)} of {RUNS} runs went wrong")
        return 1
    flat = [run.late / run.early for run in runs]
    over = [run.late / run.baseline for run in runs]
    print(
        f"dock_memory ratio (peak at {LATE_S} s / peak at {EARLY_S:g} s): median "
        f"{statistics.median(flat):.2f}, spread {spread(flat)}  (target <= {TARGET})"
    )
    print(
        f"peak at {LATE_S} s / honest docking peak: median {statistics.median(over):.2f}, "
        f"spread {spread(over)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
