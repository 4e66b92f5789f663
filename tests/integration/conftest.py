"""Fixtures for running the whole daemon on the simulated board."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from bodycam.daemon.app import load_keys, make_device, recover, serve
from bodycam.daemon.config import Config, load_config
from bodycam.daemon.device import Device
from bodycam.daemon.evidence.export import export_clip
from bodycam.daemon.evidence.keys import load_force_private_key
from bodycam.dock.agent import DockAgent, DockReport
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial
from bodycam.sim.actions import perform
from bodycam.sim.board import SimBoard, build_sim_board
from bodycam.sim.faulty_cable import CableStats, FaultyCable
from bodycam.sim.run import prepare_keys
from bodycam.sim.scene import read_frame_counter


@dataclass
class SimRig:
    """A camera on the simulated board, its keys, and the world around it."""

    config: Config
    out: Path
    force_dir: Path

    @property
    def device_pub(self) -> Path:
        return self.config.key_path(self.config.keys.device_key).with_suffix(".pub")

    def clip_dirs(self) -> list[Path]:
        return sorted(p for p in self.config.clips_dir.iterdir() if p.is_dir())

    def export(self, clip: Path) -> Path:
        out = self.out / "exported" / f"{clip.name}.ts"
        out.parent.mkdir(exist_ok=True)
        export_clip(clip, load_force_private_key(self.force_dir / "force.key"), out)
        return out


def make_rig(tmp_path: Path, **sections: dict[str, Any]) -> SimRig:
    overrides: dict[str, dict[str, Any]] = {
        "device": {"state_dir": str(tmp_path / "camera"), "runtime_dir": str(tmp_path / "run")},
        "video": {"width": 320, "height": 240, "fps": 30, "bitrate": 600_000, "gop": 30},
        "recording": {"pre_event_s": 3.0, "segment_s": 2.0},
        "sim": {"speed": 4.0},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    config = load_config(None).with_overrides(**overrides)
    force_dir = prepare_keys(tmp_path, config)
    return SimRig(config, tmp_path, force_dir)


async def run_scenario(
    rig: SimRig, steps: list[tuple[float, dict[str, Any]]], *, end: float
) -> tuple[Device, SimBoard]:
    """Run the daemon in-process, play ``steps`` at simulated times, stop at ``end``."""
    keys = load_keys(rig.config)
    recover(rig.config, keys)
    board = build_sim_board(rig.config)
    device = make_device(rig.config, board, keys)
    stop = asyncio.Event()

    async def script() -> None:
        clock = board.sim_clock
        t0 = clock.monotonic()
        for at, action in steps:
            await clock.sleep(t0 + at - clock.monotonic())
            await perform(board, action)
        await clock.sleep(t0 + end - clock.monotonic())
        stop.set()

    try:
        async with asyncio.timeout(120):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(serve(device, stop=stop, handle_signals=False))
                tg.create_task(script())
    finally:
        board.close()
    return device, board


def decoded_counters(path: Path) -> list[int | None]:
    """Decode a .ts with PyAV and read the burned-in frame counter of every frame."""
    counters: list[int | None] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            counters.append(read_frame_counter(frame.to_ndarray(format="gray")))
    return counters


def flip_a_byte(path: Path) -> None:
    """Alter one byte in the middle of ``path``, as someone tampering with the card would."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x55]))


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's own reading of a file: stream facts and any error it reports."""
    exe = shutil.which("ffprobe")
    assert exe is not None, "ffprobe is installed by ./dev test (apt package ffmpeg)"
    proc = subprocess.run(
        [
            exe,
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames:format=format_name,duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    facts: dict[str, Any] = json.loads(proc.stdout)
    facts["errors"] = proc.stderr.strip()
    return facts


@pytest.fixture
def rig(tmp_path: Path) -> SimRig:
    return make_rig(tmp_path)


class RunningCamera:
    """The daemon running in-process on the simulated board, for tests that act on it."""

    def __init__(self, device: Device, board: SimBoard) -> None:
        self.device = device
        self.board = board

    async def play(self, steps: list[tuple[float, dict[str, Any]]]) -> None:
        """Play ``steps`` at simulated times counted from now."""
        clock = self.board.sim_clock
        t0 = clock.monotonic()
        for at, action in steps:
            await clock.sleep(t0 + at - clock.monotonic())
            await perform(self.board, action)

    async def do(self, action: dict[str, Any]) -> dict[str, Any]:
        return await perform(self.board, action)


@contextlib.asynccontextmanager
async def running_camera(rig: SimRig, *, timeout_s: float = 120) -> AsyncIterator[RunningCamera]:
    """Start the daemon; on exit stop it (every clip sealed) and release the board."""
    keys = load_keys(rig.config)
    recover(rig.config, keys)
    board = build_sim_board(rig.config)
    device = make_device(rig.config, board, keys)
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(timeout_s):
            task = asyncio.create_task(serve(device, stop=stop, handle_signals=False))
            try:
                yield RunningCamera(device, board)
            finally:
                stop.set()
                await task
    finally:
        board.close()


RECORD_TWO_CLIPS: list[tuple[float, dict[str, Any]]] = [
    (1.0, {"do": "double_press"}),
    (5.0, {"do": "hold", "seconds": 3.5}),
    (10.0, {"do": "double_press"}),
    (14.0, {"do": "hold", "seconds": 3.5}),
    (19.0, {"do": "wait", "seconds": 0.5}),
]


async def dock_through_cable(
    camera_port: str,
    agent: DockAgent,
    *,
    flip_rate: float = 0.0,
    garbage_rate: float = 0.0,
    cut_after: int | None = None,
    seed: int | None = None,
) -> tuple[DockReport, CableStats]:
    """One dock session with a faulty cable between camera and dock: two ptys and a proxy."""
    camera_side = open_serial(camera_port)
    pty = open_pty_pair()
    dock_side = FdLink(pty.master_fd, "cable")
    dock_link = open_serial(pty.slave_path)
    os.close(pty.slave_fd)  # the dock's own descriptor holds the slave open now
    cable = FaultyCable(
        camera_side, dock_side, flip_rate=flip_rate, garbage_rate=garbage_rate, seed=seed
    )
    if cut_after is not None:
        cable.cut_after(cut_after, "a->b")
    forwarding = asyncio.create_task(cable.run(), name="cable")
    try:
        report = await agent.serve(dock_link)
    finally:
        dock_link.close()
        cable.cut()
        with contextlib.suppress(Exception):
            await forwarding
    return report, cable.stats
