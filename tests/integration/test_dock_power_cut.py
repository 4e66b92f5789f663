"""A power cut and a full disk while the dock is receiving leave a store that works (issue 12).

``bodycam dock`` runs in its own process. It is SIGKILLed once bytes of a transfer are on
its disk (or its file system fills up under it); afterwards ``bodycam store list`` shows
the interrupted transfer, ``prune`` or the next docking cleans it, and the next docking
commits everything. Throughout, the camera keeps every clip the dock did not commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.store import DockStore
from bodycam.dock.store_config import StoreConfig
from bodycam.drivers.link.messages import Read
from tests.rogue_camera import (
    DockProcess,
    DockRun,
    Force,
    ScriptedCamera,
    Unit,
    bay,
    custody_entries,
    dock_args,
    guard_commits,
    make_force,
    never_answer,
    on_request,
    stored_copy,
)

# Its own processes and real time: in the slow half of the suite (./dev test runs it second).
pytestmark = pytest.mark.slow

DEVICE = "BODYCAM-CUT-01"


@dataclass
class Dock:
    """A dock's credentials and store, one camera enrolled, and where its output goes."""

    force: Force
    credentials: Path
    store: Path
    camera: Unit
    logs: Path


def make_dock(tmp: Path, store: Path, *, clips: int = 2, records: int = 200) -> Dock:
    force = make_force(tmp / "force")
    camera = force.camera(DEVICE, clips=clips, records=records, seed=7)
    DockStore(store).register_device(DEVICE, camera.public_key_path)
    return Dock(force, force.dock("dock"), store, camera, tmp / "logs")


def incoming_bytes(store: Path) -> int:
    incoming = store / "incoming"
    if not incoming.is_dir():
        return 0
    return sum(p.stat().st_size for p in incoming.rglob("*") if p.is_file())


def store_command(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bodycam.daemon.cli", "store", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def assert_ended_cleanly(run: DockRun) -> None:
    crash = run.crashed()
    assert crash is None, f"dock: {crash}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"


def assert_nothing_lost(dock: Dock, before: set[str]) -> None:
    """Every clip is on the camera's card, or stored, verified and committed at the dock."""
    on_card = set(dock.camera.card())
    committed = {
        str(e.get("clip_id"))
        for e in custody_entries(dock.store)
        if e.get("event") == "committed" and e.get("device_id") == DEVICE
    }
    for clip_id in before - on_card:
        assert clip_id in committed, f"{clip_id} left the camera uncommitted"
        stored = stored_copy(dock.store, DEVICE, clip_id)
        assert stored is not None
        assert verify_clip(stored, device_key=dock.camera.public_key).ok


async def kill_while_receiving(dock: Dock) -> None:
    """Start a docking and SIGKILL the dock once bytes of a transfer are on its disk."""
    # The camera answers a few READs and then nothing: the dock is mid-transfer (waiting
    # for the next chunk) when it is killed, however slow the machine is.
    camera = ScriptedCamera(dock.camera, overrides=[never_answer(Read, after=6)])
    async with bay(camera, "camera") as port:
        process = DockProcess(dock_args([port], dock.store, dock.credentials), dock.logs)
        async with asyncio.timeout(60):
            # Another process's writes: nothing to wait on but the disk itself.
            while incoming_bytes(dock.store) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        process.kill()
        run = await process.wait()
    assert run.returncode == -9 or run.crashed() is None  # killed, or ended on its own


async def dock_again(dock: Dock) -> DockRun:
    """A docking with the camera behaving, every COMMIT checked against the store first."""
    violations: list[str] = []
    camera = ScriptedCamera(
        dock.camera, overrides=[guard_commits(dock.store, dock.camera, violations)]
    )
    async with bay(camera, "camera") as port:
        run = await DockProcess(dock_args([port], dock.store, dock.credentials), dock.logs).wait()
    assert violations == []
    return run


async def test_a_power_cut_while_receiving_then_a_docking_that_commits_everything(
    tmp_path: Path,
) -> None:
    dock = make_dock(tmp_path, tmp_path / "store")
    before = set(dock.camera.card())
    await kill_while_receiving(dock)
    assert set(dock.camera.card()) == before  # nothing was committed
    listed = store_command(dock.store, "list")
    assert listed.returncode == 0, listed.stderr
    assert "incoming" in listed.stdout.lower(), listed.stdout  # the interrupted transfer shows

    run = await dock_again(dock)
    assert_ended_cleanly(run)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert dock.camera.card() == {}
    assert_nothing_lost(dock, before)
    assert incoming_bytes(dock.store) == 0  # the resumed transfer became the stored clip
    listed = store_command(dock.store, "list")
    assert listed.returncode == 0, listed.stderr
    assert "incoming" not in listed.stdout.lower(), listed.stdout


async def test_prune_cleans_a_stale_interrupted_transfer(tmp_path: Path) -> None:
    dock = make_dock(tmp_path, tmp_path / "store")
    before = set(dock.camera.card())
    await kill_while_receiving(dock)
    assert incoming_bytes(dock.store) > 0
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    pruned = store_command(dock.store, "prune", "--now", later)
    assert pruned.returncode == 0, pruned.stderr
    assert incoming_bytes(dock.store) == 0, pruned.stdout
    assert set(dock.camera.card()) == before
    run = await dock_again(dock)
    assert_ended_cleanly(run)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert dock.camera.card() == {}
    assert_nothing_lost(dock, before)


# ----- a full disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mountpoint`` in a user+mount namespace; yields its path.

    The namespace is held by a ``sleep`` process; every other process (the dock, the store
    command, this test) reaches the file system through ``/proc/<pid>/root``.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    mountpoint.mkdir(parents=True)
    script = 'mount -t tmpfs -o size="$2" tmpfs "$1" && echo ready && exec sleep 600'
    namespace = [unshare, "--user", "--map-root-user", "--mount"]
    holder = subprocess.Popen(
        [*namespace, "sh", "-c", script, "sh", str(mountpoint), size],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            _, why = holder.communicate(timeout=30)
            pytest.skip(f"no user namespace for a small file system: {why.strip()}")
        yield Path(f"/proc/{holder.pid}/root{mountpoint}")
    finally:
        holder.kill()
        holder.communicate(timeout=30)  # reaps it and closes both pipes


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until its file system is full; returns the file."""
    filler = directory / "filler"
    block = bytes(64 * 1024)
    with filler.open("wb") as out:
        while True:
            try:
                out.write(block)
                out.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


async def test_a_full_disk_while_receiving_then_a_docking_once_space_is_freed(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs", "6m") as fs:
        store = fs / "store"
        # Keep almost nothing in reserve: the disk must really fill while bytes arrive.
        DockStore.init(store, StoreConfig(min_free_mib=0.01))
        dock = make_dock(tmp_path, store)
        before = set(dock.camera.card())
        fillers: list[Path] = []
        camera = ScriptedCamera(
            dock.camera, overrides=[on_request(Read, 5, lambda: fillers.append(fill(fs)))]
        )
        async with bay(camera, "camera") as port:
            run = await DockProcess(dock_args([port], store, dock.credentials), dock.logs).wait()
        assert fillers, "the dock never got as far as receiving"
        assert_ended_cleanly(run)
        assert_nothing_lost(dock, before)
        listed = store_command(store, "list")
        assert listed.returncode == 0, listed.stderr

        fillers[0].unlink()  # the operator frees space
        run = await dock_again(dock)
        assert_ended_cleanly(run)
        assert run.returncode == 0, run.stdout + run.stderr[-4000:]
        assert dock.camera.card() == {}
        assert_nothing_lost(dock, before)
        assert incoming_bytes(store) == 0
        assert os.statvfs(fs).f_bavail > 0
