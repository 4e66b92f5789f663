"""The camera daemon's telemetry against a real mosquitto: what a force's dashboard sees.

The camera is the whole daemon on the simulated board (real H.264, real evidence files);
the broker is mosquitto started by the test. Recording must never wait for telemetry: with
the broker down the clip is recorded and verifies, and the events arrive, in order, once
the broker is back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bodycam.daemon.evidence.verify import verify_path
from bodycam.daemon.telemetry import CameraTopics, Telemetry
from bodycam.sim.broker import LocalMosquitto
from tests.integration.conftest import make_rig, run_scenario
from tests.mqtt_fixtures import broker, retained, subscribed

__all__ = ["broker"]  # the fixture, imported for pytest

ONE_CLIP: list[tuple[float, dict[str, Any]]] = [
    (1.0, {"do": "double_press"}),
    (5.0, {"do": "hold", "seconds": 3.5}),
]


def _events(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(bytes(m.payload)) for m in messages]


async def test_state_and_events_reach_the_broker(tmp_path: Path, broker: LocalMosquitto) -> None:
    rig = make_rig(tmp_path, telemetry={"broker": broker.url})
    topics = CameraTopics(rig.config.device.id)
    async with subscribed(broker.url, topics.event) as events:
        device, _board = await run_scenario(rig, ONE_CLIP, end=11.0)
        got = _events(await events.take_until(lambda m: b"clip_closed" in m.payload, 10))
    kinds = [e["kind"] for e in got]
    assert kinds.index("recording_started") < kinds.index("recording_stopped")
    assert kinds.index("recording_stopped") < kinds.index("clip_closed")
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    # The retained state is there for a dashboard that connects later; the clean stop
    # marked the camera offline.
    state = await retained(broker.url, topics.state)
    assert state is not None
    body = json.loads(state)
    assert body["v"] == 1
    assert body["state"]["device_id"] == rig.config.device.id
    assert await retained(broker.url, topics.online) == b"0"
    assert isinstance(device.telemetry, Telemetry)
    assert device.telemetry.stats.dropped == {}


async def test_recording_is_unaffected_while_the_broker_is_down(tmp_path: Path) -> None:
    # Nothing listens on the broker's port while the camera records.
    down = LocalMosquitto(tmp_path / "mosquitto")
    down.start()
    url = down.url
    down.stop()
    rig = make_rig(tmp_path, telemetry={"broker": url})
    device, _board = await run_scenario(rig, ONE_CLIP, end=11.0)
    verdicts = verify_path(rig.config.clips_dir)
    assert len(verdicts) == 1
    assert verdicts[0].ok
    assert isinstance(device.telemetry, Telemetry)
    stats = device.telemetry.stats
    assert not stats.connected
    assert stats.queued >= 3  # recording_started, recording_stopped, clip_closed at least
    assert stats.last_error
    # The queue is on disk: the next start delivers the backlog, in order, once the broker
    # is back.
    down.restart()
    try:
        topics = CameraTopics(rig.config.device.id)
        async with subscribed(url, topics.event) as events:
            second, _ = await run_scenario(rig, [], end=2.0)
            got = _events(await events.take_until(lambda m: b"clip_closed" in m.payload, 10))
        kinds = [e["kind"] for e in got]
        assert "recording_started" in kinds
        assert kinds.index("recording_started") < kinds.index("clip_closed")
        assert isinstance(second.telemetry, Telemetry)
        assert second.telemetry.stats.delivered_events >= len(got)
    finally:
        down.stop()
