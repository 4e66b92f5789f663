"""Docking the whole daemon to the reference dock over a real pseudo-terminal pair."""

from __future__ import annotations

from pathlib import Path

from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.agent import DockAgent
from bodycam.drivers.serial_link import open_serial
from bodycam.sim.docking import prepare_dock
from tests.integration.conftest import RECORD_TWO_CLIPS, SimRig, running_camera


async def test_offload_verifies_commits_and_frees_the_card(rig: SimRig, tmp_path: Path) -> None:
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    async with running_camera(rig) as camera:
        await camera.play(RECORD_TWO_CLIPS)
        on_card = list_clips(rig.config.clips_dir)
        assert len(on_card) == 2
        port = (await camera.do({"do": "dock"}))["port"]
        link = open_serial(port)
        try:
            report = await DockAgent(setup.store(), setup.identity()).serve(link)
        finally:
            link.close()
        assert report.error is None, report.error
        assert report.authenticated
        assert [c.status for c in report.clips] == ["committed", "committed"]
        assert list_clips(rig.config.clips_dir) == []
        assert camera.device.status.clips_offloaded == 2
    store = setup.store()
    stored = store.clips()
    assert {c.clip_id for c in stored} == {c.clip_id for c in on_card}
    for clip in stored:
        assert clip.committed
        assert verify_clip(clip.directory).ok
    events = [e.event for e in store.custody.entries()]
    assert events.count("verified") == 2
    assert events.count("committed") == 2
