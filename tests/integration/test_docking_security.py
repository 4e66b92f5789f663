"""A rogue dock gets no footage; a tampered clip is refused and stays on the camera."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bodycam.daemon.dock.auth import DockIdentity, create_dock_identity, load_dock_identity
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.daemon.evidence.store import list_clips
from bodycam.dock.agent import DockAgent
from bodycam.drivers.link.endpoint import RemoteError, Requester
from bodycam.drivers.link.messages import ErrorCode, FileKind, ListClips, Read
from bodycam.drivers.serial_link import open_serial
from bodycam.sim.docking import prepare_dock
from tests.integration.conftest import RECORD_TWO_CLIPS, SimRig, flip_a_byte, running_camera


def _rogue_identity(tmp_path: Path) -> DockIdentity:
    """A dock certified by an authority that is not the force's."""
    other = tmp_path / "other-force" / "authority.key"
    generate_device_key(other)
    credentials = tmp_path / "rogue"
    credentials.mkdir()
    create_dock_identity(credentials, "ROGUE-1", other, days=30, now=dt.datetime.now(dt.UTC))
    return load_dock_identity(credentials)


async def test_rogue_dock_receives_no_footage(rig: SimRig, tmp_path: Path) -> None:
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    async with running_camera(rig) as camera:
        await camera.play(RECORD_TWO_CLIPS)
        before = list_clips(rig.config.clips_dir)
        port = (await camera.do({"do": "dock"}))["port"]
        # 1. A dock with a certificate from another authority: refused at AUTH.
        link = open_serial(port)
        try:
            report = await DockAgent(setup.store(), _rogue_identity(tmp_path)).serve(link)
        finally:
            link.close()
        assert not report.authenticated
        assert report.error is not None
        assert "AUTH_FAILED" in report.error
        # 2. A dock that skips authentication and just asks for clips.
        link = open_serial(port)
        try:
            async with Requester(link, retry_s=0.2) as rogue:
                with pytest.raises(RemoteError) as listed:
                    await rogue.call(ListClips(cursor=0, max_entries=64))
                assert listed.value.code == ErrorCode.NOT_AUTHENTICATED
                clip_id = bytes.fromhex(before[0].clip_id)
                with pytest.raises(RemoteError) as read:
                    await rogue.call(
                        Read(clip_id=clip_id, kind=FileKind.SEGMENT, index=0, offset=0, length=4096)
                    )
                assert read.value.code == ErrorCode.NOT_AUTHENTICATED
        finally:
            link.close()
        assert camera.device.dock is not None
        assert camera.device.dock.data_bytes_sent == 0  # not one byte of any file left
        assert [c.clip_id for c in list_clips(rig.config.clips_dir)] == [c.clip_id for c in before]
    assert setup.store().clips() == []


async def test_tampered_clip_is_refused_and_stays_on_the_camera(
    rig: SimRig, tmp_path: Path
) -> None:
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    async with running_camera(rig) as camera:
        await camera.play(RECORD_TWO_CLIPS)
        first, second = list_clips(rig.config.clips_dir)
        flip_a_byte(first.directory / "seg-000001.bcs")  # someone alters footage on the card
        port = (await camera.do({"do": "dock"}))["port"]
        link = open_serial(port)
        try:
            report = await DockAgent(setup.store(), setup.identity()).serve(link)
        finally:
            link.close()
        statuses = {c.clip_id: c.status for c in report.clips}
        assert statuses == {first.clip_id: "rejected", second.clip_id: "committed"}
        rejected = report.rejected[0]
        assert any("seg-000001.bcs" in p for p in rejected.problems), rejected.problems
        left = list_clips(rig.config.clips_dir)
        assert [c.clip_id for c in left] == [first.clip_id]  # kept for investigation
    store = setup.store()
    assert [c.clip_id for c in store.clips()] == [second.clip_id]
    rejected_events = [e for e in store.custody.entries() if e.event == "rejected"]
    assert [e.clip_id for e in rejected_events] == [first.clip_id]
    assert any((setup.store_dir / "quarantine").rglob("seg-000001.bcs"))
