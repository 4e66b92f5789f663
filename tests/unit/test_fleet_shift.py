"""Fleet shifts, shards, the fleet scheduler and the light camera, without a broker."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from bodycam.daemon.config import Config, ConfigError
from bodycam.daemon.status import DeviceStatus
from bodycam.sim.fleet.camera import FleetCamera
from bodycam.sim.fleet.scenario import FleetScenario, load_fleet_scenario, parse_fleet_scenario
from bodycam.sim.fleet.scheduler import FleetClock, Scheduler
from bodycam.sim.fleet.shift import (
    MIN_GAP_S,
    Shard,
    ShiftPlan,
    camera_id,
    parse_shard,
    plan_shift,
)
from bodycam.sim.fleet.view import FleetSummary


def _scenario(**values: Any) -> FleetScenario:
    return parse_fleet_scenario({"name": "unit", **values}, source="unit")


def _plans(scenario: FleetScenario, seed: int, indices: range) -> list[ShiftPlan]:
    config = scenario.device_config()
    return [plan_shift(scenario, config, seed, i, firmware="1.0") for i in indices]


class Recorder:
    """A telemetry stand-in that keeps what a camera reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.state: dict[str, Any] = {}

    def set_state(self, state: Any) -> None:
        self.state = dict(state)

    def event(
        self, kind: str, data: dict[str, Any] | None = None, *, critical: bool = True
    ) -> None:
        self.events.append((kind, data or {}))


# --- shifts ---------------------------------------------------------------------------


def test_a_camera_gets_the_same_shift_for_the_same_seed() -> None:
    scenario = load_fleet_scenario(None)
    first = _plans(scenario, 42, range(50))
    assert first == _plans(scenario, 42, range(50))
    # Alone or among others, camera 17's shift is its own.
    assert _plans(scenario, 42, range(17, 18)) == [first[17]]
    assert first != _plans(scenario, 43, range(50))
    assert len({plan.incidents for plan in first}) == 50


def test_shards_partition_the_fleet_exactly() -> None:
    for count in (1, 2, 3, 7, 64):
        seen: list[int] = []
        for index in range(count):
            seen += Shard(index, count).indices(1000)
        assert sorted(seen) == list(range(1000))  # every camera once, none twice
    assert list(parse_shard("1/4").indices(10)) == [1, 5, 9]
    assert camera_id(123) == "FLEET-000123"


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "1/0", ""])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_incidents_come_at_the_configured_rate() -> None:
    scenario = _scenario(
        shift_hours=10, incidents_per_hour=1.5, incident={"median_minutes": 5, "max_minutes": 20}
    )
    config = scenario.device_config()
    plans = _plans(scenario, 1, range(3000))
    hold = config.buttons.hold_stop_s + 0.5
    incidents, free_s = 0, 0.0
    for plan in plans:
        busy = sum(
            (i.stop if i.stop is not None else plan.shift_end) - i.start + hold + MIN_GAP_S
            for i in plan.incidents
        )
        free_s += plan.shift_end - plan.shift_start - busy
        incidents += len(plan.incidents)
    rate = incidents / (free_s / 3600)
    assert rate == pytest.approx(1.5, rel=0.06)


def test_a_shift_is_a_time_ordered_script_inside_the_shift() -> None:
    scenario = _scenario(incidents_per_hour=4, start_window_minutes=30)
    config = scenario.device_config()
    for plan in _plans(scenario, 3, range(200)):
        assert 0 <= plan.shift_start <= 30 * 60
        times = [event.t for event in plan.steps(config)]
        assert times == sorted(times)
        assert times[0] == plan.shift_start
        assert times[-1] == plan.shift_end
        assert all(i.stop is None or i.stop > i.start for i in plan.incidents)


def test_a_bad_scenario_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unit: incidents_per_hour: .*greater than or equal"):
        _scenario(incidents_per_hour=-1)
    with pytest.raises(ConfigError, match="unit: shift_hour: unknown key"):
        _scenario(shift_hour=8)
    with pytest.raises(ConfigError, match=r"\[config\].*recording.pre_event_s"):
        _scenario(config={"recording": {"pre_event_s": -5}})


# --- the scheduler --------------------------------------------------------------------


class _Timer:
    def __init__(self, name: str, times: list[float], log: list[tuple[float, str]]) -> None:
        self.name, self.times, self.log = name, times, log

    def wake(self, t: float) -> float | None:
        self.log.append((t, self.name))
        self.times.pop(0)
        return self.times[0] if self.times else None


def test_the_scheduler_wakes_cameras_in_time_order_at_their_times() -> None:
    real = [100.0]
    clock = FleetClock(10.0, real=lambda: real[0])
    log: list[tuple[float, str]] = []
    timers = [_Timer("a", [5.0, 30.0, 31.0], log), _Timer("b", [1.0, 30.0], log)]
    scheduler = Scheduler(clock, timers)
    for slot, timer in enumerate(timers):
        scheduler.schedule(slot, timer.times[0])
    real[0] += 2.0  # twenty fleet seconds later: late for some, not yet for others
    assert clock.now() == pytest.approx(20.0)
    assert scheduler.run_due(clock.now()) == 2
    assert log == [(1.0, "b"), (5.0, "a")]  # handled at their own times, not at 20
    assert scheduler.next_due() == 30.0
    real[0] += 2.0
    scheduler.run_due(clock.now())
    assert log[2:] == [(30.0, "a"), (30.0, "b"), (31.0, "a")]
    assert scheduler.pending == 0


# --- the light camera -----------------------------------------------------------------


def _play(camera: FleetCamera) -> None:
    t: float | None = camera.boot(0.0)
    while t is not None:
        t = camera.wake(t)


def test_a_fleet_camera_reports_its_shift_as_the_daemon_would() -> None:
    scenario = _scenario(incidents_per_hour=2, battery_start_percent=[95, 100])
    config = scenario.device_config()
    plan = next(p for p in _plans(scenario, 5, range(50)) if len(p.incidents) >= 3)
    reporter = Recorder()
    camera = FleetCamera(plan, config, reporter, monitor_s=60, offload_bytes_per_s=20e6)
    _play(camera)
    kinds = [kind for kind, _ in reporter.events]
    assert kinds.count("recording_started") == len(plan.incidents) == camera.recordings_started
    assert kinds.count("clip_offloaded") == camera.clips == kinds.count("clip_closed")
    assert kinds[-1] == "offload_done"
    assert reporter.events[-1][1] == {"clips": camera.clips}
    # The state mapping is the daemon's DeviceStatus, field for field.
    assert set(reporter.state) == {f.name for f in dataclasses.fields(DeviceStatus)}
    assert reporter.state["state"] == "ASLEEP"
    assert reporter.state["docked"] is True
    assert reporter.state["storage_free_bytes"] == reporter.state["storage_total_bytes"]
    json.dumps(reporter.state)


def test_a_full_card_stops_the_recording() -> None:
    scenario = _scenario(
        incidents_per_hour=6,
        incident={"median_minutes": 30, "sigma": 0},
        config={"sim": {"storage_quota_mb": 600}, "storage": {"reserve_mb": 64}},
    )
    config = scenario.device_config()
    assert isinstance(config, Config)
    plan = _plans(scenario, 2, range(1))[0]
    reporter = Recorder()
    camera = FleetCamera(plan, config, reporter, monitor_s=60, offload_bytes_per_s=20e6)
    _play(camera)
    stops = [data["reason"] for kind, data in reporter.events if kind == "recording_stopped"]
    assert "storage_full" in stops
    assert {"warnings": ["STORAGE_FULL"]} in [data for kind, data in reporter.events]


# --- the dashboard's view -------------------------------------------------------------


def _state(seq: int, **state: Any) -> bytes:
    body = {"v": 1, "seq": seq, "t": "2025-01-01T08:00:00.000Z", "state": state}
    return json.dumps(body).encode()


def test_the_summary_counts_cameras_and_survives_garbage() -> None:
    summary = FleetSummary()
    root = "bodycam/v1/camera"
    summary.feed(f"{root}/A/state", _state(1, state="RECORDING", recording=True, warnings=[]))
    summary.feed(f"{root}/B/state", _state(1, state="BUFFERING", warnings=["LOW_BATTERY"]))
    summary.feed(
        f"{root}/C/state", _state(1, state="ASLEEP", docked=True, warnings=["CAMERA_FAULT"])
    )
    summary.feed(f"{root}/A/online", b"1")
    for topic, payload in [
        (f"{root}/D/state", b"not json"),
        (f"{root}/D/state", _state(1, state=3)),
        (f"{root}/D/state", b'{"v": 2}'),
        (f"{root}/D+/state", _state(1, state="OFF")),
        (f"{root}/E/online", b"yes"),
        ("elsewhere/x", b""),
    ]:
        summary.feed(topic, payload)
    snap = summary.snapshot()
    assert (snap.cameras, snap.online, snap.recording, snap.buffering) == (3, 1, 1, 1)
    assert (snap.docked, snap.low_battery, snap.failing, snap.malformed) == (1, 1, 1, 6)
    assert "malformed 6" in snap.line()
