"""Dock offload over a pseudo-terminal pair, against the raw throughput of such a pair.

Figures (issue: docking):
* goodput ratio: clip bytes per second of the transfer phase, divided by what os.write/os.read
  of 64 KiB chunks move through a fresh pty pair in the same run (target >= 0.95, must
  be >= 0.8). The camera side runs in its own process, as the raw writer does.
* the same over the whole session (handshake, verification, commits included);
* CPU seconds per GB on each side;
* bytes resent after the link is cut in the middle of a clip (should be <= one window).

Each of ``RUNS`` runs pairs one raw pty measurement with one offload, so drift in the load
of a shared machine hits both alike; the ratio is taken per run, then its median and spread
(min-max) are printed with the load average. A run counts only when every clip was
committed and the camera's card is empty; a run that went wrong is named with its reason
and no ratio is printed at all (a figure from the runs that happened to work would flatter).

Run: ``./dev bench dock_offload`` (``BODYCAM_BENCH_DOCK_MB`` and ``BODYCAM_BENCH_RUNS``
shrink it for a quick check; the figures are for the defaults).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import env_int, load_average, spread
from bodycam.daemon.dock.auth import create_dock_identity, load_dock_identity
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.policy import SignedPolicy
from bodycam.daemon.dock.session import AuthLimiter, CameraIdentity, CameraSession, TimeChange
from bodycam.daemon.evidence.keys import (
    generate_device_key,
    generate_force_keypair,
    load_device_key,
    load_force_public_key,
)
from bodycam.daemon.evidence.writer import ClipInfo, ClipWriter
from bodycam.dock.agent import DockAgent, DockReport, Progress
from bodycam.dock.store import DockStore
from bodycam.drivers.interfaces import ByteLink, LinkClosedError, VideoFormat
from bodycam.drivers.link.endpoint import DEFAULT_WINDOW, Responder
from bodycam.drivers.link.frame import CHUNK_SIZE
from bodycam.drivers.link.messages import Status
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial
from bodycam.sim.faulty_cable import FaultyCable

DEVICE_ID = "BENCH-CAM-01"
TOTAL_MB = env_int("BODYCAM_BENCH_DOCK_MB", 64)
RUNS = env_int("BODYCAM_BENCH_RUNS", 5)


@dataclass(frozen=True)
class World:
    root: Path
    template: Path  # clips as the camera holds them, copied fresh for every run
    device_key: Path
    authority_pub: Path
    credentials: Path
    clip_bytes: int


def make_world(root: Path, total_mb: int) -> World:
    keys = root / "keys"
    generate_force_keypair(keys / "force.key", keys / "force.pub")
    generate_device_key(keys / "device.key")
    authority = keys / "authority.key"
    generate_device_key(authority)
    credentials = root / "dock"
    credentials.mkdir()
    create_dock_identity(credentials, "DOCK-BENCH", authority, days=1)
    template = root / "template"
    info = ClipInfo(
        device_id=DEVICE_ID,
        officer_id="PC-1",
        firmware_version="bench",
        trigger="button",
        pre_event_s=30.0,
        video=VideoFormat(),
        clock_set=True,
        clock_offset_s=None,
    )
    rng = random.Random(1)
    signing = load_device_key(keys / "device.key")
    force = load_force_public_key(keys / "force.pub")
    start = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)
    remaining = total_mb * 1024 * 1024
    clip_no = 0
    while remaining > 0:
        writer = ClipWriter.create(
            template,
            info,
            started_utc=start + dt.timedelta(minutes=clip_no),
            signing_key=signing,
            force_key=force,
        )
        for segment in range(4):  # 4 segments of about 2 MiB: 8 Mbit/s for 2 s each
            writer.begin_segment()
            for n in range(64):
                writer.append(rng.randbytes(32 * 1024), timestamp_us=10**9 + n * 33_333)
            writer.seal_segment(
                first_timestamp_us=10**9 + segment,
                last_timestamp_us=10**9 + segment + 1,
                frames=64,
            )
            remaining -= 64 * 32 * 1024
        writer.close(ended_utc=start + dt.timedelta(minutes=clip_no, seconds=8), reason="button")
        clip_no += 1
    clip_bytes = sum(p.stat().st_size for p in template.rglob("seg-*.bcs"))
    return World(
        root, template, keys / "device.key", keys / "authority.pub", credentials, clip_bytes
    )


class _Hooks:
    """A docked camera with nothing else going on."""

    def utc_now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def clock_is_set(self) -> bool:
        return True

    def set_time(self, utc: dt.datetime) -> TimeChange:
        return TimeChange(self.utc_now(), 0.0, True)

    def apply_policy(self, signed: SignedPolicy) -> bool:
        return False

    def status(self) -> Status:
        return Status(
            state="ASLEEP",
            battery_percent=90,
            charging=True,
            storage_total=1 << 34,
            storage_free=1 << 33,
            clips=0,
            clock_set=True,
            firmware="bench",
        )

    def committed(self, clip_id: str, dock_id: str) -> None:
        pass

    async def wait_sealed(self) -> None:
        pass


def _camera_responder(link: ByteLink, world: World, clips: Path) -> Responder:
    from bodycam.daemon.dock.auth import load_authority_public_key

    identity = CameraIdentity(
        DEVICE_ID,
        "bench",
        load_device_key(world.device_key),
        load_authority_public_key(world.authority_pub),
    )
    session = CameraSession(identity, Outbox(clips), _Hooks(), AuthLimiter())
    return Responder(link, session.handle, on_new_peer=session.new_peer)


def _camera_main(master_fd: int, world: World, clips: Path, conn: Connection) -> None:
    async def serve() -> int:
        link = FdLink(master_fd, "camera")
        responder = _camera_responder(link, world, clips)
        try:
            await responder.run()
        except LinkClosedError:
            pass
        finally:
            link.close()
        return responder.stats.data_bytes_sent

    before = resource.getrusage(resource.RUSAGE_SELF)
    sent = asyncio.run(serve())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    conn.send((cpu, sent))


def _store(world: World, run: str) -> DockStore:
    store = DockStore(world.root / f"store-{run}")
    store.register_device(DEVICE_ID, world.device_key.with_suffix(".pub"))
    return store


@dataclass
class OffloadRun:
    transfer_s: float
    session_s: float
    dock_cpu_s: float
    camera_cpu_s: float
    report: DockReport
    problem: str | None  # why this run does not count; None when every clip was committed


def offload_once(world: World, run: str) -> OffloadRun:
    clips = world.root / f"camera-{run}"
    shutil.copytree(world.template, clips)
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    pty = open_pty_pair()
    child = ctx.Process(target=_camera_main, args=(pty.master_fd, world, clips, child_conn))
    child.start()
    os.close(pty.master_fd)
    marks: list[float] = []

    def on_progress(_: Progress) -> None:
        marks.append(time.perf_counter())

    async def dock() -> DockReport:
        agent = DockAgent(_store(world, run), load_dock_identity(world.credentials))
        agent.on_progress = on_progress
        link = open_serial(pty.slave_path)
        os.close(pty.slave_fd)
        try:
            return await agent.serve(link)
        finally:
            link.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = asyncio.run(dock())
    session_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    camera_cpu, _ = parent_conn.recv()
    child.join()
    clips_total = sum(1 for p in world.template.iterdir() if p.is_dir())
    left = sum(1 for p in clips.iterdir() if p.is_dir() and not p.name.startswith("."))
    problem = None
    if len(report.committed) != clips_total or left:
        problem = (
            f"{len(report.committed)} of {clips_total} clips committed, {left} left on the "
            f"camera: {report.error or 'no error reported'}"
        )
    elif report.error:
        # Every clip is safe at the dock: a clean end, whatever the last reply did.
        print(f"  (run {run}: all committed; the dock also reported: {report.error})")
    transfer_s = marks[-1] - marks[0] if len(marks) > 1 else session_s
    dock_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.rmtree(clips, ignore_errors=True)
    return OffloadRun(transfer_s, session_s, dock_cpu, camera_cpu, report, problem)


def _raw_writer(master_fd: int, nbytes: int, done: Any) -> None:
    chunk = memoryview(os.urandom(CHUNK_SIZE))
    sent = 0
    while sent < nbytes:  # exactly nbytes: the reader stops there
        sent += os.write(master_fd, chunk[: min(CHUNK_SIZE, nbytes - sent)])
    done.wait()  # a pty slave reads EIO once its master closes, even with bytes queued
    os.close(master_fd)


def raw_once(nbytes: int) -> float:
    """Seconds to move ``nbytes`` through a fresh pty pair, writer in another process."""
    pty = open_pty_pair()
    os.set_blocking(pty.master_fd, True)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    child = ctx.Process(target=_raw_writer, args=(pty.master_fd, nbytes, done))
    started = time.perf_counter()
    child.start()
    os.close(pty.master_fd)
    received = 0
    while received < nbytes:
        received += len(os.read(pty.slave_fd, CHUNK_SIZE))
    elapsed = time.perf_counter() - started
    done.set()
    child.join()
    os.close(pty.slave_fd)
    return elapsed


async def _resent_after_cut(world: World) -> tuple[int, int]:
    """Cut the link half-way through, dock again: (DATA bytes sent, file bytes on the card)."""
    clips = world.root / "camera-cut"
    shutil.copytree(world.template, clips)
    file_bytes = sum(p.stat().st_size for p in clips.rglob("*") if p.is_file())
    store = _store(world, "cut")
    identity = load_dock_identity(world.credentials)
    camera_pty = open_pty_pair()
    camera_link = FdLink(camera_pty.master_fd, "camera")
    responder = _camera_responder(camera_link, world, clips)
    serving = asyncio.create_task(responder.run())
    sent = 0
    for cut in (world.clip_bytes // 2, None):
        dock_pty = open_pty_pair()
        cable = FaultyCable(open_serial(camera_pty.slave_path), FdLink(dock_pty.master_fd, "b"))
        if cut is not None:
            cable.cut_after(cut, "a->b")
        forwarding = asyncio.create_task(cable.run())
        link = open_serial(dock_pty.slave_path)
        os.close(dock_pty.slave_fd)
        try:
            await DockAgent(store, identity).serve(link)
        finally:
            link.close()
            cable.cut()
            await asyncio.gather(forwarding, return_exceptions=True)
    sent = responder.stats.data_bytes_sent
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    camera_link.close()
    os.close(camera_pty.slave_fd)
    return sent, file_bytes


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-dock-") as tmp:
        world = make_world(Path(tmp), TOTAL_MB)
        raw: list[float] = []
        runs: list[OffloadRun] = []
        load_before = load_average()
        for n in range(RUNS):  # interleaved, so drift in machine load hits both alike
            raw.append(raw_once(world.clip_bytes))
            runs.append(offload_once(world, str(n)))
        load_after = load_average()
        clips = sum(1 for p in world.template.iterdir() if p.is_dir())
        print(f"clips: {world.clip_bytes / 1e6:.1f} MB in {clips} clips; {RUNS} runs")
        print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
        bad = [(n, r.problem) for n, r in enumerate(runs) if r.problem is not None]
        for n, problem in bad:
            print(f"run {n} went wrong: {problem}")
        if bad:
            print(f"no ratio: {len(bad)} of {RUNS} runs went wrong (every run must commit all)")
            return 1
        goodput = [raw_s / r.transfer_s for raw_s, r in zip(raw, runs, strict=True)]
        whole = [raw_s / r.session_s for raw_s, r in zip(raw, runs, strict=True)]
        raw_s = statistics.median(raw)
        transfer_s = statistics.median(r.transfer_s for r in runs)
        gb = world.clip_bytes / 1e9
        print(f"raw pty (baseline): {world.clip_bytes / raw_s / 1e6:.1f} MB/s (median)")
        print(f"offload transfer phase: {world.clip_bytes / transfer_s / 1e6:.1f} MB/s (median)")
        print(
            f"goodput ratio (transfer / raw, per run): median {statistics.median(goodput):.2f}, "
            f"spread {spread(goodput)}  (target >= 0.95)"
        )
        print(
            "whole-session ratio (incl. handshake, verify, commit): "
            f"median {statistics.median(whole):.2f}, spread {spread(whole)}"
        )
        dock_cpu = statistics.median(r.dock_cpu_s for r in runs) / gb
        camera_cpu = statistics.median(r.camera_cpu_s for r in runs) / gb
        print(f"CPU per GB: camera {camera_cpu:.1f} s, dock {dock_cpu:.1f} s (incl. verify)")
        sent, file_bytes = asyncio.run(_resent_after_cut(world))
        window = DEFAULT_WINDOW * CHUNK_SIZE
        resent = sent - file_bytes
        print(
            f"resent after a cut: {resent} bytes = {resent / window:.2f} windows "
            f"(window {window} bytes; target <= 1)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
