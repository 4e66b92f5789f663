"""The dock's telemetry against a real mosquitto: bays, offloads and refused evidence."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.telemetry import DockTopics, Telemetry
from bodycam.dock.agent import DockAgent
from bodycam.dock.cli import run_bay
from bodycam.dock.telemetry import DockTelemetry, bay_name
from bodycam.sim.broker import LocalMosquitto
from bodycam.sim.docking import DOCK_ID, prepare_dock
from tests.integration.conftest import RECORD_TWO_CLIPS, SimRig, flip_a_byte, running_camera
from tests.mqtt_fixtures import broker, fast_settings, retained, subscribed

__all__ = ["broker"]  # the fixture, imported for pytest


async def _retained_state(url: str, topic: str, key: str, value: object) -> dict[str, Any]:
    """The retained state on ``topic`` once its ``key`` reads ``value`` (within 5 s)."""
    state: dict[str, Any] = {}
    for _ in range(50):
        payload = await retained(url, topic)
        state = json.loads(payload)["state"] if payload is not None else {}
        if state.get(key) == value:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic}: {key} never became {value!r}: {state}")


async def test_dock_reports_bays_offloads_and_refused_clips(
    rig: SimRig, tmp_path: Path, broker: LocalMosquitto
) -> None:
    setup = prepare_dock(tmp_path, rig.config, rig.force_dir / "authority.key")
    topics = DockTopics(DOCK_ID)
    telemetry = Telemetry(fast_settings(broker.url, DOCK_ID), topics)
    dock = DockTelemetry(telemetry, topics)
    publisher = asyncio.create_task(telemetry.run())
    try:
        async with subscribed(broker.url, topics.event) as events:
            async with running_camera(rig) as camera:
                await camera.play(RECORD_TWO_CLIPS)
                first, _second = list_clips(rig.config.clips_dir)
                flip_a_byte(first.directory / "seg-000001.bcs")
                port = str((await camera.do({"do": "dock"}))["port"])
                agent = DockAgent(setup.store(), setup.identity())
                (report,) = await run_bay(port, agent, once=True, telemetry=dock)
            got = await events.take_until(lambda m: b"offload_done" in m.payload, 10)
        bodies: list[dict[str, Any]] = [json.loads(bytes(m.payload)) for m in got]
        assert [b["kind"] for b in bodies] == [
            "camera_seated",
            "verification_failed",
            "offload_done",
        ]
        failed = bodies[1]["data"]
        assert failed["clip_id"] == first.clip_id
        assert failed["device_id"] == rig.config.device.id
        assert any("seg-000001.bcs" in p for p in failed["problems"])
        done = bodies[2]["data"]
        assert (done["committed"], done["rejected"]) == (1, 1)
        assert len(report.committed) == 1
        # Retained: what a dashboard connecting now sees of this bay and this dock (state is
        # published at most once a second, so the last change may take that long).
        bay_state = await _retained_state(broker.url, topics.bay(bay_name(port)), "phase", "done")
        assert bay_state["device_id"] == rig.config.device.id
        totals = await _retained_state(broker.url, topics.state, "offloads", 1)
        assert (totals["clips_committed"], totals["clips_rejected"]) == (1, 1)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        telemetry.close()
    assert await retained(broker.url, topics.online) == b"0"
