"""Docking acceptance: the same assertions against the simulator or a camera on a bench."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bodycam.daemon.dock.auth import create_dock_identity, load_dock_identity
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.drivers.serial_link import open_serial
from bodycam.sim.dock.agent import DockAgent, DockReport
from bodycam.sim.dock.store import DockStore
from tests.hil.conftest import DockTarget


def _dock(tmp_path: Path, target: DockTarget, authority_key: Path) -> tuple[DockStore, DockAgent]:
    credentials = tmp_path / f"dock-{authority_key.parent.name}"
    credentials.mkdir()
    create_dock_identity(credentials, "DOCK-HIL", authority_key, days=1)
    store = DockStore(tmp_path / f"store-{authority_key.parent.name}")
    store.register_device(target.device_id, target.device_pub)
    return store, DockAgent(store, load_dock_identity(credentials), retry_s=0.3)


async def _serve(agent: DockAgent, port: str) -> DockReport:
    link = open_serial(port)
    try:
        async with asyncio.timeout(120):
            return await agent.serve(link)
    finally:
        link.close()


async def test_dock_offloads_verifies_commits_and_frees_the_camera(
    target: DockTarget, tmp_path: Path
) -> None:
    target.record(2)
    store, agent = _dock(tmp_path, target, target.authority_key)
    report = await _serve(agent, target.port)
    assert report.error is None, report.error
    assert report.authenticated
    assert report.rejected == []
    assert len(report.committed) >= (2 if target.kind == "sim" else 0)
    assert report.camera_status is not None
    assert report.camera_status.clips == 0  # storage freed: every committed clip is gone
    assert report.clock_offset_s is not None
    for clip in store.clips():
        assert clip.committed
        assert verify_clip(clip.directory).ok


async def test_rogue_dock_gets_no_footage(target: DockTarget, tmp_path: Path) -> None:
    target.record(1)
    other = tmp_path / "rogue-force" / "authority.key"
    generate_device_key(other)
    store, agent = _dock(tmp_path, target, other)
    report = await _serve(agent, target.port)
    assert not report.authenticated
    assert report.error is not None
    assert "AUTH_FAILED" in report.error
    assert report.bytes_received == 0
    assert store.clips() == []
    if target.clips_dir is not None:
        assert any(target.clips_dir.iterdir()), "the camera must keep its clips"
    # The camera still serves its own force's dock (after the rate limit's first second).
    await asyncio.sleep(1.2)
    _, good = _dock(tmp_path, target, target.authority_key)
    report = await _serve(good, target.port)
    assert report.error is None, report.error
    assert report.camera_status is not None
    assert report.camera_status.clips == 0
