"""A light camera for fleets: the daemon's state machine, with no video and no disk.

Thousands of these run in one process, so a camera is a plain object that the fleet's one
scheduler wakes when something is due (``FleetCamera.wake``); it never sleeps on its own.
It runs the very ``StateMachine`` the daemon runs and reports through the same telemetry
calls (``set_state`` with the daemon's ``DeviceStatus`` fields, and the daemon's events), so
a dashboard cannot tell it from a real camera. What it leaves out is the expensive part:
clip bytes are counted from the configured bitrate instead of encoded and written (22,000
cameras cannot encode video on two cores), battery and card are small models (``model``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from bodycam.daemon import state_machine as sm
from bodycam.daemon.config import Config
from bodycam.daemon.status import DeviceStatus
from bodycam.sim.fleet.model import Battery, Card
from bodycam.sim.fleet.shift import ShiftPlan

# The dock's clock sync and authentication before the first clip moves (fleet seconds).
_DOCK_SESSION_S = 5.0
# Sealing a clip after CloseClip: the last segment, the manifest and its signature.
_SEAL_S = 1.5
# Time since the last clock sync when the fleet powers on: the cameras spent the night docked
# without a session (their dock synced them when they came back yesterday evening).
_OVERNIGHT_S = 14 * 3600.0
_DOCK_ID = "FLEET-DOCK"


class Reporter(Protocol):
    """Where a camera reports (``bodycam.daemon.telemetry.publisher.Telemetry``)."""

    def set_state(self, state: Mapping[str, Any]) -> None: ...

    def event(
        self, kind: str, data: dict[str, Any] | None = None, *, critical: bool = True
    ) -> None: ...


class FleetCamera:
    """One simulated camera driven by its shift plan; see the module docstring."""

    def __init__(
        self,
        plan: ShiftPlan,
        config: Config,
        reporter: Reporter,
        *,
        monitor_s: float,
        offload_bytes_per_s: float,
    ) -> None:
        self.plan = plan
        self.reporter = reporter
        self.machine = sm.StateMachine(config)
        self.status = DeviceStatus(device_id=plan.device_id, firmware=plan.firmware)
        self.battery = Battery(plan.battery_percent, hours=config.sim.battery_hours)
        self.card = Card(
            int(config.sim.storage_quota_mb * 2**20),
            reserve=int(config.storage.reserve_mb * 2**20),
            bytes_per_s=config.video.bitrate / 8,
            segment_s=config.recording.segment_s,
        )
        self.recordings_started = 0
        self._steps: Iterator[sm.Event] = plan.steps(config)
        self._next_step: sm.Event | None = next(self._steps, None)
        self._monitor_s = monitor_s
        self._monitor_at: float | None = 0.0
        self._offload_rate = offload_bytes_per_s
        self._offload: deque[tuple[str, int]] = deque()
        self._offload_at: float | None = None
        self._session_ready = 0.0  # when the dock session may move clips
        self._offloaded_in_session = 0
        self._seal_at: float | None = None
        self._seal_reason = ""
        self._pre_event_s = config.recording.pre_event_s
        self._sensor_since: float | None = None
        self._clips = 0
        self._last_sync = -_OVERNIGHT_S
        self._storage_full = False
        self._dirty = True

    # --- the scheduler's side ------------------------------------------------------------

    def boot(self, t: float) -> float | None:
        """Power on in the dock at fleet start (the clock set by the dock, if it could)."""
        self._charging(t, charging=True)
        self.status.docked = True
        self._handle(sm.DockChanged(t, docked=True))
        self._handle(sm.PowerSwitched(t, on=True))
        if self.plan.clock_set:
            self._sync_clock(t)
        else:
            self.status.clock_set = False
            self._handle(sm.ClockChanged(t, is_set=False))
        return self.wake(t)

    def wake(self, t: float) -> float | None:
        """Carry out everything due at or before ``t`` in time order; when to wake next.

        None once the shift is over (scripted steps done, clips sealed and offloaded): the
        camera then rests, and its telemetry keeps republishing the last state.
        """
        while True:
            due, what = self._next_due()
            if due is None or due > t or self.done:
                if self._dirty:
                    self._dirty = False
                    # The daemon sends asdict(status); the fields are flat, so a shallow copy
                    # is the same mapping at a tenth of the cost.
                    self.reporter.set_state(dict(vars(self.status)))
                return None if self.done else due
            what(due)

    @property
    def done(self) -> bool:
        """The shift is over and nothing is left to seal or offload."""
        return self._monitor_at is None

    @property
    def clips(self) -> int:
        """Clips this camera has closed so far."""
        return self._clips

    # --- what is due -----------------------------------------------------------------------

    def _next_due(self) -> tuple[float | None, Callable[[float], None]]:
        best: float | None = None
        what: Callable[[float], None] = self._tick
        candidates: tuple[tuple[float | None, Callable[[float], None]], ...] = (
            (self._next_step.t if self._next_step is not None else None, self._step),
            (self.machine.next_deadline(), self._tick),
            (self._seal_at, self._seal),
            (self._offload_at, self._offload_one),
            (self._monitor_at, self._monitor),
            (self.card.full_at(self._storage_full), self._monitor),
        )
        for due, fn in candidates:
            if due is not None and (best is None or due < best):
                best, what = due, fn
        return best, what

    def _step(self, t: float) -> None:
        event = self._next_step
        assert event is not None
        self._next_step = next(self._steps, None)
        if isinstance(event, sm.DockChanged):
            self._dock(t, docked=event.docked)
        else:
            self._handle(event)

    def _tick(self, t: float) -> None:
        self._handle(sm.Tick(t))

    def _monitor(self, t: float) -> None:
        # The daemon's battery and storage watchers, at the fleet's sparser interval.
        self.card.advance(t)
        self.status.battery_percent = round(self.battery.percent(t), 2)
        self.status.charging = self.battery.charging
        self._handle(sm.BatteryChanged(t, self.status.battery_percent, self.battery.charging))
        full = self.card.full
        if full != self._storage_full:
            self._storage_full = full
            self._handle(sm.StorageChanged(t, full=full))
        self._card_status()
        over = (
            self._next_step is None
            and self._seal_at is None
            and self._offload_at is None
            and (self.status.docked or t >= self.plan.shift_end)
        )
        self._monitor_at = None if over else t + self._monitor_s

    def _seal(self, t: float) -> None:
        self._seal_at = None
        self._close_clip(t, self._seal_reason)
        self.status.clip_id = None
        self._handle(sm.ClipClosed(t, self._seal_reason))

    # --- docking -------------------------------------------------------------------------

    def _dock(self, t: float, *, docked: bool) -> None:
        self._charging(t, charging=docked)
        self.status.docked = docked
        self.reporter.event("docked" if docked else "undocked", {})
        self._handle(sm.DockChanged(t, docked=docked))
        if docked:
            self.status.dock_sessions += 1
            self._sync_clock(t)
            self._offloaded_in_session = 0
            self._session_ready = t + _DOCK_SESSION_S
            self._queue_offload(t)
            if self._offload_at is None and self._seal_at is None:
                self.reporter.event("offload_done", {"clips": 0})
        else:
            self._offload_at = None  # what is left stays on the card for the next docking
        self._monitor_at = t

    def _sync_clock(self, t: float) -> None:
        offset = self.plan.drift_ppm * 1e-6 * (t - self._last_sync)
        self._last_sync = t
        self.status.clock_offset_s = round(-offset, 3)
        if not self.status.clock_set:
            self.status.clock_set = True
            self._handle(sm.ClockChanged(t, is_set=True))
        self._dirty = True

    def _queue_offload(self, t: float) -> None:
        if self._offload_at is None and self._offload and self.status.docked:
            start = max(t, self._session_ready)
            self._offload_at = start + self._offload[0][1] / self._offload_rate

    def _offload_one(self, t: float) -> None:
        clip_id, size = self._offload.popleft()
        self.card.free(size)
        self.status.clips_offloaded += 1
        self._offloaded_in_session += 1
        self.reporter.event("clip_offloaded", {"clip_id": clip_id, "dock_id": _DOCK_ID})
        self._offload_at = None
        self._queue_offload(t)
        if self._offload_at is None and self._seal_at is None:
            self.reporter.event("offload_done", {"clips": self._offloaded_in_session})
        self._card_status()

    def _charging(self, t: float, *, charging: bool) -> None:
        self.battery.set_charging(t, charging)
        self.status.charging = charging

    def _card_status(self) -> None:
        self.status.storage_free_bytes = self.card.free_bytes
        self.status.storage_total_bytes = self.card.total
        self._dirty = True

    # --- the state machine ---------------------------------------------------------------

    def _handle(self, event: sm.Event) -> None:
        t = event.t
        for action in self.machine.handle(event):
            match action:
                case sm.StartSensor():
                    self._sensor_since = t
                case sm.StopSensor():
                    self._sensor_since = None
                case sm.OpenClip():
                    self._open_clip(t)
                case sm.CloseClip(reason=reason):
                    self._seal_at, self._seal_reason = t + _SEAL_S, reason
                case sm.RolloverClip():
                    self._close_clip(t, sm.ROLLOVER_REASON)
                    self._open_clip(t, pre_event=False)
                case sm.WarningsChanged(warnings=warnings):
                    names = sorted(w.name for w in warnings)
                    self.status.warnings = names
                    self.reporter.event("warnings", {"warnings": names})
                case sm.StateChanged():
                    self._state_changed(t, action)
                case _:
                    pass  # LED, beeps and notices: nobody sees or hears them in a fleet
        self._dirty = True

    def _state_changed(self, t: float, change: sm.StateChanged) -> None:
        old, new = change.old, change.new
        self.battery.set_load(t, str(new))
        self.status.state = new.name
        self.reporter.event(
            "state", {"old": old.name, "new": new.name, "reason": change.reason}, critical=False
        )
        if new == sm.State.RECORDING:
            self.recordings_started += 1
            self.reporter.event("recording_started", {"reason": change.reason})
        elif old == sm.State.RECORDING:
            self.reporter.event("recording_stopped", {"reason": change.reason})

    def _open_clip(self, t: float, *, pre_event: bool = True) -> None:
        buffered = 0.0
        if pre_event and self._sensor_since is not None:
            buffered = min(self._pre_event_s, t - self._sensor_since)
        self._clips += 1
        self.status.clip_id = f"{self.plan.device_id}-{self._clips:05d}"
        self.status.recording = True
        self.card.open_clip(t, buffered)

    def _close_clip(self, t: float, reason: str) -> None:
        size, segments = self.card.close_clip(t)
        clip_id = self.status.clip_id or f"{self.plan.device_id}-{self._clips:05d}"
        self.status.recording = reason == sm.ROLLOVER_REASON
        self.status.clips_closed += 1
        self.status.segments_sealed += segments
        self.reporter.event("clip_closed", {"clip_id": clip_id, "reason": reason})
        self._offload.append((clip_id, size))
        self._queue_offload(t)
        self._card_status()
