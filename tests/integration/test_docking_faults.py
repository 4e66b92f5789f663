"""Docking through a bad cable: cut at random points, flipped bytes, garbage, rogue docks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.agent import DockAgent
from bodycam.sim.docking import prepare_dock
from tests.integration.conftest import (
    RECORD_TWO_CLIPS,
    dock_through_cable,
    make_rig,
    running_camera,
)


@pytest.mark.slow
async def test_cut_twenty_times_then_complete_without_loss_or_duplicate(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    rng = random.Random(20261122)
    async with running_camera(rig, timeout_s=240) as camera:
        await camera.play(RECORD_TWO_CLIPS)
        recorded = {c.clip_id: c for c in list_clips(rig.config.clips_dir)}
        total = sum(c.bytes for c in recorded.values())
        port = (await camera.do({"do": "dock"}))["port"]
        store = setup.store()
        device = rig.config.device.id
        cuts = 0
        sessions = 0
        while True:
            sessions += 1
            assert sessions < 60, "the offload never completed"
            # Anywhere from the handshake to well into a clip; 20 cuts, then a clean docking.
            cut_at = rng.randrange(0, min(total, 80_000)) if cuts < 20 else None
            agent = DockAgent(store, setup.identity(), retry_s=0.2)
            report, stats = await dock_through_cable(port, agent, cut_after=cut_at)
            # No early delete: whatever left the card is verified and committed in the store.
            on_card = {c.clip_id for c in list_clips(rig.config.clips_dir)}
            for clip_id in set(recorded) - on_card:
                assert store.is_committed(device, clip_id), f"{clip_id} deleted before its commit"
            if cut_at is None:
                assert report.error is None, report.error
                break
            # Failed because of the cut, or (a cut after every clip was committed, in STATUS or
            # BYE) a clean end whose lost reply is not a failure.
            assert stats.a_to_b >= cut_at or report.error is None, report.error
            cuts += 1
        assert cuts >= 20
        assert list_clips(rig.config.clips_dir) == []
    stored = store.clips()
    assert sorted(c.clip_id for c in stored) == sorted(recorded)  # no loss, no duplicate
    for clip in stored:
        assert verify_clip(clip.directory).ok
    verified = [e.clip_id for e in store.custody.entries() if e.event == "verified"]
    assert sorted(verified) == sorted(recorded)
    assert store.custody.verify() == []


async def test_flipped_bytes_and_garbage_never_corrupt_a_clip(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    async with running_camera(rig, timeout_s=240) as camera:
        await camera.play(RECORD_TWO_CLIPS)
        recorded = {c.clip_id for c in list_clips(rig.config.clips_dir)}
        port = (await camera.do({"do": "dock"}))["port"]
        agent = DockAgent(setup.store(), setup.identity(), retry_s=0.2)
        report, stats = await dock_through_cable(
            port, agent, flip_rate=1e-5, garbage_rate=0.02, seed=7
        )
        assert report.error is None, report.error
        assert stats.flipped > 0
        assert stats.garbage > 0
        assert list_clips(rig.config.clips_dir) == []
    stored = setup.store().clips()
    assert {c.clip_id for c in stored} == recorded
    for clip in stored:
        assert verify_clip(clip.directory).ok
