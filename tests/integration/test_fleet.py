"""A few hundred fleet cameras against a real mosquitto: every message accounted for."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from bodycam.daemon.telemetry import parse_broker_url, topics
from bodycam.daemon.telemetry.payloads import decode_event, decode_state
from bodycam.sim.broker import LocalMosquitto
from bodycam.sim.fleet.runner import Fleet, FleetOptions, FleetTotals
from bodycam.sim.fleet.scenario import FleetScenario, parse_fleet_scenario
from bodycam.sim.fleet.shift import Shard, camera_id
from tests.mqtt_fixtures import eventually, subscribed

CAMERAS = 300
# mosquitto keeps at most 1000 QoS 1 messages queued for a subscriber by default and drops
# the rest; the test's subscriber shares its process with 300 publishing cameras and falls
# behind in bursts, so the test's broker queues more (a dashboard would be sized so too).
ROOMY = "max_queued_messages 1000000"

# One hour of shift at 600x (six seconds), three incidents an hour, batteries that last:
# every scheduled recording must start.
SCENARIO = {
    "name": "test shift",
    "speed": 600,
    "shift_hours": 1,
    "start_window_minutes": 2,
    "incidents_per_hour": 3,
    "monitor_s": 300,
    "battery_start_percent": [90, 100],
    "incident": {"median_minutes": 3, "sigma": 0.5, "max_minutes": 10},
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A local mosquitto like ``tests.mqtt_fixtures.broker``, with a deep subscriber queue."""
    with LocalMosquitto(tmp_path / "mosquitto", config_extra=ROOMY) as running:
        yield running


def _scenario() -> FleetScenario:
    return parse_fleet_scenario(SCENARIO, source="test")


def _fleet(url: str, shard: Shard | None = None) -> Fleet:
    options = FleetOptions(
        cameras=CAMERAS,
        broker=parse_broker_url(url),
        scenario=_scenario(),
        shard=shard or Shard(),
        seed=7,
        connect_rate=1000,
    )
    return Fleet(options)


@dataclass
class Received:
    """Events by device, in arrival order: (seq, kind, data)."""

    events: defaultdict[str, list[tuple[int, str, dict[str, object]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.events.values())


@contextlib.asynccontextmanager
async def events_of_all_cameras(url: str) -> AsyncIterator[Received]:
    """Subscribe (QoS 1) to every camera's events and collect them until the block ends."""
    received = Received()

    async def pump(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            device = topics.parse_topic(message.topic.value).id
            assert isinstance(message.payload, bytes)
            event = decode_event(message.payload)
            received.events[device].append((event.seq, event.kind, event.data))

    async with subscribed(url, topics.CAMERA_EVENTS, qos=1) as sub:
        task = asyncio.create_task(pump(sub.client), name="collect events")
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained_states(url: str, expected: int) -> dict[str, dict[str, object]]:
    """Every camera's retained state, by device id (waits for ``expected`` of them)."""
    states: dict[str, dict[str, object]] = {}
    async with subscribed(url, topics.CAMERA_STATES, qos=1) as sub:
        for message in await sub.take(expected, timeout=10):
            assert message.retain
            assert isinstance(message.payload, bytes)
            states[topics.parse_topic(message.topic.value).id] = decode_state(message.payload).state
    return states


def _nothing_lost(totals: FleetTotals) -> None:
    assert totals.dropped == 0
    assert totals.queued == 0
    assert totals.delivered_events == totals.events
    assert totals.errors == {}


async def test_a_fleet_shift_arrives_complete_and_in_order(broker: LocalMosquitto) -> None:
    fleet = _fleet(broker.url)
    async with events_of_all_cameras(broker.url) as received:
        totals = await fleet.run()
        assert await eventually(lambda: received.total >= totals.delivered_events, timeout=10)

    _nothing_lost(totals)
    assert totals.cameras == CAMERAS
    assert totals.connected == CAMERAS
    assert totals.scheduled_recordings > CAMERAS  # about three each: the test means something
    assert received.total == totals.events

    started = Counter[str]()
    for camera, reporter in zip(fleet.cameras, fleet.reporters, strict=True):
        got = received.events[camera.plan.device_id]
        assert len(got) == reporter.events
        seqs = [seq for seq, _, _ in got]
        assert seqs == sorted(set(seqs)), f"{camera.plan.device_id}: events out of order"
        kinds = [kind for _, kind, _ in got]
        started[camera.plan.device_id] = kinds.count("recording_started")
        assert kinds.count("recording_started") == len(camera.plan.incidents)
        assert kinds.count("recording_stopped") == kinds.count("recording_started")
        assert kinds[-1] == "offload_done"
    assert sum(started.values()) == fleet.scheduled_recordings == totals.recordings_started

    states = await retained_states(broker.url, CAMERAS)
    assert set(states) == set(fleet.device_ids)
    for camera in fleet.cameras:
        state = states[camera.plan.device_id]
        # The last state the camera had, not an earlier one: docked, every clip offloaded.
        assert state["docked"] is True
        assert state["state"] == "ASLEEP"
        assert state["clips_offloaded"] == state["clips_closed"] == camera.clips


async def test_two_shards_cover_the_fleet_exactly_once(broker: LocalMosquitto) -> None:
    whole = _fleet(broker.url)
    halves = [_fleet(broker.url, Shard(0, 2)), _fleet(broker.url, Shard(1, 2))]
    first, second = (set(half.device_ids) for half in halves)
    assert not first & second
    assert first | second == set(whole.device_ids) == {camera_id(i) for i in range(CAMERAS)}
    # Sharding changes who runs a camera, never its shift.
    by_id = {plan.device_id: plan for plan in whole.plans}
    assert all(plan == by_id[plan.device_id] for half in halves for plan in half.plans)

    results = await asyncio.gather(*(half.run() for half in halves))
    for totals in results:
        _nothing_lost(totals)
    assert sum(t.recordings_started for t in results) == whole.scheduled_recordings
    states = await retained_states(broker.url, CAMERAS)
    assert set(states) == set(whole.device_ids)
