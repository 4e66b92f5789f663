"""A fleet (or one shard of it): its cameras, their connections, one scheduler, the totals.

Every camera has its own ``Telemetry`` (its own MQTT connection, client id = device id) as a
real camera would. Connections open in waves (``connect_rate`` per second) so a broker is
not hit by 22,000 CONNECTs at once; the shift starts at once regardless, and what a camera
reports before it is connected waits in its telemetry queue, as it would on a real camera
out of network reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bodycam.daemon.telemetry import CameraTopics, Telemetry, TelemetrySettings
from bodycam.daemon.telemetry.broker import BrokerAddress
from bodycam.sim.fleet.camera import FleetCamera
from bodycam.sim.fleet.scenario import FleetScenario
from bodycam.sim.fleet.scheduler import FleetClock, Scheduler
from bodycam.sim.fleet.shift import Shard, plan_shift

log = logging.getLogger(__name__)

# Descriptors beyond one per connection: the loop, the executor's threads, stdio, logs.
_FD_SPARE = 256
# After the last state change, a publisher sends it within its coalescing second.
_SETTLE_S = 2.0


def firmware_version() -> str:
    """This build's version, which the fleet's cameras report unless the scenario mixes."""
    try:
        return importlib.metadata.version("bodycam")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def raise_fd_limit(connections: int, hint: str = "split the fleet with --shard I/N") -> int:
    """Lift RLIMIT_NOFILE for ``connections`` sockets; the soft limit now in force.

    The soft limit goes up to the hard one; beyond it only where the process may (root
    with CAP_SYS_RESOURCE). Raises OSError naming the numbers (and ``hint``) when the
    limit stays too low.
    """
    want = connections + _FD_SPARE
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != unlimited and want > hard:
        # Only a privileged process may raise the hard limit; others keep it.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft, hard = want, want
    if soft != unlimited and (hard == unlimited or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != unlimited and soft < want:
        raise OSError(
            f"{connections} connections need about {want} open files but the limit is "
            f"{soft} (ulimit -Hn): {hint}"
        )
    return soft


@dataclass(frozen=True)
class FleetOptions:
    """What to run: ``cameras`` is the whole fleet's size; ``shard`` picks this part."""

    cameras: int
    broker: BrokerAddress
    scenario: FleetScenario
    shard: Shard = field(default_factory=Shard)
    speed: float | None = None  # None: the scenario's
    duration_s: float | None = None  # real seconds; None: until every shift is over
    seed: int = 0
    connect_rate: float = 500.0  # new connections per second
    drain_s: float = 30.0  # at the end, how long queued telemetry may take to go out
    username: str | None = None
    password: str | None = None


@dataclass
class FleetTotals:
    """What the fleet did, summed over its cameras' telemetry and shifts."""

    cameras: int = 0
    connected: int = 0
    published: int = 0
    delivered_events: int = 0
    queued: int = 0
    dropped: int = 0
    reconnects: int = 0
    scheduled_recordings: int = 0
    recordings_started: int = 0
    clips: int = 0
    events: int = 0
    wakes: int = 0
    max_lag_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The end-of-run report."""
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return [
            f"cameras {self.cameras} (connected at the end: {self.connected})",
            f"recordings: {self.recordings_started} started of {self.scheduled_recordings} "
            f"scheduled, {self.clips} clips",
            f"published {self.published}, delivered events {self.delivered_events} of "
            f"{self.events}, still queued {self.queued}, dropped {self.dropped}, "
            f"reconnects {self.reconnects}",
            f"scheduler: {self.wakes} wakes, worst lag {self.max_lag_s:.2f} s; "
            f"connection failures: {errors}",
        ]


class _Counting:
    """Passes a camera's reports to its telemetry and counts the events (for the totals)."""

    __slots__ = ("events", "last_state_at", "telemetry")

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.events = 0
        self.last_state_at = 0.0

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.last_state_at = time.monotonic()
        self.telemetry.set_state(state)

    def event(
        self, kind: str, data: dict[str, Any] | None = None, *, critical: bool = True
    ) -> None:
        self.events += 1
        self.telemetry.event(kind, data, critical=critical)


async def _wait(stop: asyncio.Event | None) -> None:
    if stop is not None:
        await stop.wait()
    else:
        await asyncio.Future()  # forever: only the shift's end or the duration stops it


class Fleet:
    """The cameras of one shard and their telemetry; ``run`` plays the shift."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        scenario = options.scenario
        config = scenario.device_config()
        firmware = firmware_version()
        self.speed = options.speed if options.speed is not None else scenario.speed
        self.plans = [
            plan_shift(scenario, config, options.seed, i, firmware=firmware)
            for i in options.shard.indices(options.cameras)
        ]
        self.reporters: list[_Counting] = []
        self.cameras: list[FleetCamera] = []
        for plan in self.plans:
            settings = TelemetrySettings(
                broker=options.broker,
                client_id=plan.device_id,
                username=options.username,
                password=options.password,
                keepalive_s=config.telemetry.keepalive_s,
                state_interval_s=config.telemetry.state_interval_s,
                queue_max=config.telemetry.queue_max,
            )
            reporter = _Counting(Telemetry(settings, CameraTopics(plan.device_id)))
            self.reporters.append(reporter)
            self.cameras.append(
                FleetCamera(
                    plan,
                    config,
                    reporter,
                    monitor_s=scenario.monitor_s,
                    offload_bytes_per_s=scenario.offload_mb_per_s * 1e6,
                )
            )
        self.scheduler: Scheduler | None = None

    @property
    def device_ids(self) -> list[str]:
        """The ids of this shard's cameras."""
        return [plan.device_id for plan in self.plans]

    @property
    def scheduled_recordings(self) -> int:
        """Recordings the shift plans start (every incident starts one)."""
        return sum(len(plan.incidents) for plan in self.plans)

    def connected(self) -> int:
        """Cameras connected to the broker right now."""
        return sum(r.telemetry.stats.connected for r in self.reporters)

    async def run(self, *, stop: asyncio.Event | None = None) -> FleetTotals:
        """Play the shift until every camera is done, ``duration_s`` passed, or ``stop``."""
        clock = FleetClock(self.speed)
        scheduler = self.scheduler = Scheduler(clock, self.cameras)
        for slot, camera in enumerate(self.cameras):
            scheduler.schedule(slot, camera.boot(0.0))
        tasks: list[asyncio.Task[None]] = []
        waves = asyncio.create_task(self._connect_in_waves(tasks), name="fleet connect")
        played = asyncio.create_task(scheduler.run(), name="fleet scheduler")
        stopped = asyncio.create_task(_wait(stop), name="fleet stop")
        try:
            await asyncio.wait(
                {played, stopped},
                timeout=self.options.duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            played.cancel()
            stopped.cancel()
            if played.done() and not played.cancelled():
                played.result()  # a failure in the scheduler (a bug) surfaces here
            await waves
            # Interrupted: leave soon; otherwise let the last reports reach the broker.
            await self._drain(5.0 if stop is not None and stop.is_set() else self.options.drain_s)
            return self.totals()
        finally:
            for task in (waves, played, stopped, *tasks):
                task.cancel()
            await asyncio.gather(waves, played, stopped, *tasks, return_exceptions=True)
            for reporter in self.reporters:
                reporter.telemetry.close()

    async def _connect_in_waves(self, tasks: list[asyncio.Task[None]]) -> None:
        step_s = 0.05
        per_step = max(1, round(self.options.connect_rate * step_s))
        for first in range(0, len(self.reporters), per_step):
            for reporter in self.reporters[first : first + per_step]:
                name = f"telemetry:{reporter.telemetry.settings.client_id}"
                tasks.append(asyncio.create_task(reporter.telemetry.run(), name=name))
            await asyncio.sleep(step_s)

    async def _drain(self, limit_s: float) -> None:
        """Give queued events and the last states up to ``limit_s`` to reach the broker."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            settled = time.monotonic() - max(r.last_state_at for r in self.reporters) >= _SETTLE_S
            if settled and all(r.telemetry.stats.queued == 0 for r in self.reporters):
                return
            await asyncio.sleep(0.2)

    def totals(self) -> FleetTotals:
        """The totals so far."""
        totals = FleetTotals(cameras=len(self.cameras))
        totals.scheduled_recordings = self.scheduled_recordings
        for reporter, camera in zip(self.reporters, self.cameras, strict=True):
            stats = reporter.telemetry.stats
            totals.connected += stats.connected
            totals.published += stats.published
            totals.delivered_events += stats.delivered_events
            totals.queued += stats.queued
            totals.dropped += sum(stats.dropped.values())
            totals.reconnects += stats.reconnects
            for kind, count in stats.failures.items():
                totals.errors[kind] = totals.errors.get(kind, 0) + count
            totals.recordings_started += camera.recordings_started
            totals.clips += camera.clips
            totals.events += reporter.events
        if self.scheduler is not None:
            totals.wakes = self.scheduler.wakes
            totals.max_lag_s = self.scheduler.max_lag_s
        return totals
