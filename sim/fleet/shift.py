"""Each camera's shift, drawn from the fleet scenario: reproducible per (seed, camera).

Camera ``i`` draws from its own generator seeded with ``(seed, i)``, never from a shared
stream, so a shard (``--shard I/N``) produces exactly the shifts the same cameras get in an
unsharded run, whatever else runs beside them.

A plan is small (a few numbers and the incidents); ``ShiftPlan.steps`` expands it lazily into
the world's inputs, as ``bodycam.daemon.events`` events, in time order: the buttons and
triggers the officer works and the dock the camera leaves and returns to.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from bodycam.daemon.config import Config
from bodycam.daemon.events import ButtonChanged, DockChanged, Event, TriggerChanged
from bodycam.sim.fleet.scenario import FleetScenario

Trigger = Literal["double_press", "holster"]

# A double press: down, up, down, up; the second press lands well inside double_press_s.
_PRESS_S = 0.1
_DOUBLE_GAP_S = 0.2
_HOLSTER_S = 1.0
# Kept between the end of one incident and the next: the stop (hold, release, seal) must be
# over before the next start, or the start would land while finalizing.
MIN_GAP_S = 30.0
_SHORTEST_INCIDENT_S = 10.0


def camera_id(index: int) -> str:
    """The fleet camera's device id: ``FLEET-000123``."""
    return f"FLEET-{index:06d}"


@dataclass(frozen=True, slots=True)
class Shard:
    """Which cameras this process runs: those whose index ``i`` has ``i % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    def indices(self, cameras: int) -> range:
        """The camera indices of this shard in a fleet of ``cameras``."""
        return range(self.index, cameras, self.count)


def parse_shard(text: str) -> Shard:
    """Parse ``I/N`` (ValueError with a readable message when it is not one)."""
    left, sep, right = text.partition("/")
    if not sep or not left.strip().isdigit() or not right.strip().isdigit():
        raise ValueError(f"shard {text!r}: expected I/N, e.g. 0/4")
    return Shard(int(left), int(right))


@dataclass(frozen=True, slots=True)
class Incident:
    """One recording: started at ``start``; stopped by a hold at ``stop`` (None: by docking)."""

    start: float
    stop: float | None
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class ShiftPlan:
    """One camera's shift, in fleet seconds (0 is when the fleet powers on)."""

    index: int
    device_id: str
    shift_start: float  # taken out of the dock
    shift_end: float  # back in the dock (if the scenario docks)
    incidents: tuple[Incident, ...]
    battery_percent: float
    drift_ppm: float
    clock_set: bool
    firmware: str
    dock_at_end: bool

    def steps(self, config: Config) -> Iterator[Event]:
        """The world's inputs to this camera, in time order (power-on and boot excluded)."""
        yield DockChanged(self.shift_start, docked=False)
        hold = config.buttons.hold_stop_s
        for incident in self.incidents:
            t = incident.start
            if incident.trigger == "double_press":
                yield ButtonChanged(t, pressed=True)
                yield ButtonChanged(t + _PRESS_S, pressed=False)
                yield ButtonChanged(t + _DOUBLE_GAP_S, pressed=True)
                yield ButtonChanged(t + _DOUBLE_GAP_S + _PRESS_S, pressed=False)
            else:
                yield TriggerChanged(t, "holster", active=True)
                yield TriggerChanged(t + _HOLSTER_S, "holster", active=False)
            if incident.stop is not None:
                # Held a little past hold_stop_s, as an officer does.
                yield ButtonChanged(incident.stop, pressed=True)
                yield ButtonChanged(incident.stop + hold + 0.5, pressed=False)
        if self.dock_at_end:
            yield DockChanged(self.shift_end, docked=True)


def _pick_firmware(rng: random.Random, mix: dict[str, float], default: str) -> str:
    if not mix:
        return default
    names = sorted(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


def plan_shift(
    scenario: FleetScenario, config: Config, seed: int, index: int, *, firmware: str
) -> ShiftPlan:
    """Draw camera ``index``'s shift; the same (scenario, seed, index) gives the same plan."""
    # A string seed is hashed with SHA-512 by random: stable across runs and platforms.
    rng = random.Random(f"bodycam-fleet:{seed}:{index}")  # noqa: S311 (a simulation)
    start = rng.uniform(0.0, scenario.start_window_minutes * 60)
    end = start + scenario.shift_hours * 3600
    hold_done = config.buttons.hold_stop_s + 0.5
    rate = scenario.incidents_per_hour / 3600.0
    length = scenario.incident
    incidents: list[Incident] = []
    t = start
    while rate > 0:
        # Poisson arrivals over the officer's time off camera.
        t += rng.expovariate(rate)
        if t >= end - MIN_GAP_S:
            break
        seconds = rng.lognormvariate(math.log(length.median_minutes * 60), length.sigma)
        seconds = min(max(seconds, _SHORTEST_INCIDENT_S), length.max_minutes * 60)
        trigger: Trigger = "holster" if rng.random() < scenario.holster_share else "double_press"
        stop = t + seconds
        if stop + hold_done + MIN_GAP_S > end:
            # Still recording when the shift ends: the dock stops it (or it runs on).
            incidents.append(Incident(t, None, trigger))
            break
        incidents.append(Incident(t, stop, trigger))
        t = stop + hold_done + MIN_GAP_S
    low, high = scenario.battery_start_percent
    return ShiftPlan(
        index=index,
        device_id=camera_id(index),
        shift_start=start,
        shift_end=end,
        incidents=tuple(incidents),
        battery_percent=rng.uniform(low, high),
        drift_ppm=rng.gauss(0.0, scenario.clock_drift_ppm),
        clock_set=rng.random() >= scenario.clock_unset_share,
        firmware=_pick_firmware(rng, scenario.firmware, firmware),
        dock_at_end=scenario.dock_at_end,
    )
