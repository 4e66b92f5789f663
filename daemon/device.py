"""The camera's brain: one asyncio task group that wires the board to the state machine.

Inputs (buttons, triggers, battery, card, clock) become events; the pure state machine
answers with actions; actions drive the recorder, the sensor and the indicators. Every task
is named, every wait goes through the board clock (so the simulator can run faster than
real time), and shutdown always seals the open clip before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bodycam.daemon import state_machine as sm
from bodycam.daemon.config import Config
from bodycam.daemon.dock.hooks import DeviceDockHooks
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.service import DockService
from bodycam.daemon.dock.session import CameraIdentity, SessionLog
from bodycam.daemon.indicator_player import IndicatorPlayer
from bodycam.daemon.indicators import IndicatorScheduler
from bodycam.daemon.monitors import watch_battery, watch_clock, watch_parts, watch_storage
from bodycam.daemon.notify import SystemdNotifier
from bodycam.daemon.recorder import (
    ClipFinished,
    ClipOpened,
    Notice,
    Recorder,
    RecorderFault,
    RecorderSettings,
    SegmentSealed,
)
from bodycam.daemon.reporting import FaultBook, Reporter, TelemetrySink
from bodycam.daemon.sensor import Sensor
from bodycam.daemon.status import DeviceStatus, StatusWriter
from bodycam.drivers.interfaces import Board

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceKeys:
    signing_key: Any  # Ed25519PrivateKey
    force_key: Any  # X25519PublicKey
    authority: Any = None  # Ed25519PublicKey of the force authority, None if not provisioned


class Device:
    """Runs one camera until ``stop`` is set; then seals everything and returns."""

    def __init__(
        self,
        config: Config,
        board: Board,
        keys: DeviceKeys,
        *,
        firmware_version: str,
        notifier: SystemdNotifier | None = None,
        on_change: Callable[[DeviceStatus], None] | None = None,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        self.config = config
        self.telemetry = telemetry
        self.reporter = Reporter(telemetry)
        self.board = board
        self.clock = board.clock
        self.machine = sm.StateMachine(config)
        self.scheduler = IndicatorScheduler(config.indicators)
        self.player = IndicatorPlayer(
            self.scheduler,
            red=board.red_led,
            green=board.green_led,
            beeper=board.beeper,
            clock=board.clock,
        )
        self.recorder = Recorder(
            RecorderSettings(
                clips_dir=config.clips_dir,
                video=config.video.format(),
                pre_event_s=config.recording.pre_event_s,
                segment_s=config.recording.segment_s,
                writer_queue_s=config.recording.writer_queue_s,
                device_id=config.device.id,
                officer_id=config.device.officer_id,
                firmware_version=firmware_version,
                signing_key=keys.signing_key,
                force_key=keys.force_key,
            ),
            clock=board.clock,
            storage=board.storage,
            on_notice=self._on_notice,
        )
        self.status = DeviceStatus(device_id=config.device.id, firmware=firmware_version)
        self._status_writer = StatusWriter(config.device.runtime_dir / "status.json")
        self._notifier = notifier
        self._on_change = on_change
        self._events: asyncio.Queue[sm.Event] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.sensor = Sensor(board.camera, self.recorder, board.clock, self.post)
        self.faults = FaultBook(list(board.faults))
        self.dock: DockService | None = None
        if board.dock is not None:
            hooks = DeviceDockHooks(
                board,
                self.recorder,
                self.status,
                config.device.state_dir,
                config.clips_dir,
                on_clock_set=self._clock_was_set,
                on_committed=self._clip_offloaded,
            )
            identity = CameraIdentity(
                config.device.id, firmware_version, keys.signing_key, keys.authority
            )
            self.dock = DockService(
                board.dock,
                identity,
                Outbox(config.clips_dir),
                hooks,
                on_session_end=self._dock_session_ended,
                clock_trust=hooks.clock_trust,
            )

    # ----- inputs -------------------------------------------------------------------------

    def post(self, event: sm.Event) -> None:
        """Queue an event from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop already closing
            loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _wire_inputs(self) -> None:
        board, now = self.board, self.clock.monotonic
        board.record_button.set_handler(lambda on: self.post(sm.ButtonChanged(now(), on)))
        if board.function_button is not None:
            board.function_button.set_handler(
                lambda on: self.post(sm.FunctionButtonChanged(now(), on))
            )
        if board.power_switch is not None:
            board.power_switch.set_handler(lambda on: self.post(sm.PowerSwitched(now(), on)))
        for trigger in board.triggers:
            source = trigger.name.removeprefix("trigger:")
            trigger.set_handler(functools.partial(self._trigger_changed, source))
        if board.dock is not None:
            board.dock.set_handler(self._dock_changed)

    def _dock_changed(self, docked: bool) -> None:
        # Any thread: the state machine hears it as an event; the dock service on the loop.
        self.post(sm.DockChanged(self.clock.monotonic(), docked))
        loop = self._loop
        if loop is not None and not loop.is_closed() and self.dock is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dock_service_changed, docked)

    def _dock_service_changed(self, docked: bool) -> None:
        self.status.docked = docked
        self.reporter.event("docked" if docked else "undocked")
        if self.dock is not None:
            self.dock.docked_changed(docked)
            self.status.dock_sessions = self.dock.sessions

    def _dock_session_ended(self, session: SessionLog) -> None:
        self.reporter.event(
            "offload_done",
            dock_id=session.dock_id,
            authenticated=session.authenticated,
            clips=session.clips_deleted,
            bytes=session.data_bytes,
        )

    def _clip_offloaded(self, clip_id: str, dock_id: str) -> None:
        self.reporter.event("clip_offloaded", clip_id=clip_id, dock_id=dock_id)

    def _clock_was_set(self) -> None:
        self._handle(sm.ClockChanged(self.clock.monotonic(), self.clock.is_set()))

    def report_fault(self, part: str, problem: str | None) -> None:
        """A part started (``problem``) or stopped (None) failing; called on the loop thread.

        The officer hears one warning pattern for all of them; the log and the status name
        each part and its config key.
        """
        flipped = self.faults.update(part, problem)
        self.status.hardware_faults = self.faults.messages()
        if flipped:
            self._handle(sm.HardwareFaultsChanged(self.clock.monotonic(), self.faults.active))

    def _trigger_changed(self, source: str, active: bool) -> None:
        self.post(sm.TriggerChanged(self.clock.monotonic(), source, active))

    def _unwire_inputs(self) -> None:
        board = self.board
        for part in (board.record_button, board.function_button, board.power_switch):
            if part is not None:
                part.set_handler(None)
        for trigger in board.triggers:
            trigger.set_handler(None)
        if board.dock is not None:
            board.dock.set_handler(None)

    # ----- the main loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.recorder.start()
        self._wire_inputs()
        power_on = self.board.power_switch.is_active if self.board.power_switch else True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                # Settle the initial state before telling systemd we are ready.
                self._handle(sm.ClockChanged(self.clock.monotonic(), self.clock.is_set()))
                self._handle(sm.PowerSwitched(self.clock.monotonic(), power_on))
                if self.faults.active:
                    self.status.hardware_faults = self.faults.messages()
                    self._handle(sm.HardwareFaultsChanged(self.clock.monotonic(), True))
                if self.board.dock is not None and self.board.dock.docked:
                    self._handle(sm.DockChanged(self.clock.monotonic(), True))
                    self.status.docked = True
                control = tg.create_task(self._control(stop), name="control")
                services = [
                    tg.create_task(self.player.run(), name="indicators"),
                    tg.create_task(watch_battery(self, self.config.battery), name="battery"),
                    tg.create_task(watch_storage(self, self.config.storage), name="storage"),
                    tg.create_task(watch_clock(self), name="clock"),
                    tg.create_task(self._status_loop(), name="status"),
                ]
                if self.board.fault_checks:
                    services.append(tg.create_task(watch_parts(self), name="parts"))
                if self._notifier is not None and self._notifier.watchdog_interval_s:
                    services.append(tg.create_task(self._watchdog(), name="watchdog"))
                if self.dock is not None:
                    services.append(tg.create_task(self.dock.run(), name="dock"))
                if self.telemetry is not None:
                    services.append(tg.create_task(self.telemetry.run(), name="telemetry"))
                for name, factory in self.board.services:
                    services.append(tg.create_task(factory(), name=name))
                if self._notifier is not None:
                    self._notifier.ready(self.machine.state.name)
                await control
                # The sensor task lives in the group too: stop it with the services.
                self.sensor.stop()
                for task in services:
                    task.cancel()
        finally:
            self._unwire_inputs()
            await self._shutdown()

    async def _control(self, stop: asyncio.Event) -> None:
        stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
        try:
            while not stop.is_set():
                event = await self._next_event(stop_wait)
                if event is not None:
                    self._handle(event)
        finally:
            stop_wait.cancel()

    async def _next_event(self, stop_wait: asyncio.Task[bool]) -> sm.Event | None:
        if not self._events.empty():
            return self._events.get_nowait()
        deadline = self.machine.next_deadline()
        now = self.clock.monotonic()
        if deadline is not None and deadline <= now:
            return sm.Tick(now)
        getter = asyncio.create_task(self._events.get(), name="event-wait")
        waits: set[asyncio.Future[Any]] = {getter, stop_wait}
        timer = None
        if deadline is not None:
            timer = asyncio.create_task(self.clock.sleep(deadline - now), name="deadline")
            waits.add(timer)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if stop_wait.done():
            return None
        return sm.Tick(self.clock.monotonic())

    def _handle(self, event: sm.Event) -> None:
        for action in self.machine.handle(event):
            self._apply(action)
        self._refresh_status()

    def _apply(self, action: sm.Action) -> None:
        now = self.clock.monotonic()
        if isinstance(action, sm.SetLed):
            self.scheduler.set_led(now, action.pattern)
            self.player.wake()
        elif isinstance(action, sm.SilenceBeeps):
            self.scheduler.silence(now)
            self.player.wake()
        elif isinstance(action, sm.PlayBeeps):
            self.scheduler.play(now, action.pattern)
            self.player.wake()
        elif isinstance(action, sm.OpenClip):
            self.recorder.open_clip(action.trigger, action.t)
        elif isinstance(action, sm.CloseClip):
            self.recorder.close_clip(action.reason)
        elif isinstance(action, sm.RolloverClip):
            self.recorder.rollover()
        elif isinstance(action, sm.StartSensor):
            assert self._tg is not None
            self.sensor.start(self._tg)
        elif isinstance(action, sm.StopSensor):
            self.sensor.stop()
        elif isinstance(action, sm.StateChanged):
            log.info("state %s -> %s (%s)", action.old.name, action.new.name, action.reason)
            self.reporter.state_changed(action)
            if self.board.power_load is not None:
                self.board.power_load.set_load(str(action.new).lower())
            if self._notifier is not None:
                self._notifier.status(action.new.name)
        elif isinstance(action, sm.WarningsChanged):
            names = ", ".join(sorted(w.name for w in action.warnings)) or "none"
            log.warning("warnings: %s", names) if action.warnings else log.info("warnings cleared")
            self.reporter.event("warnings", warnings=sorted(w.name for w in action.warnings))
        else:
            log.info("%s", action)

    # ----- recorder notices ---------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        now = self.clock.monotonic()
        if isinstance(notice, SegmentSealed):
            self.status.segments_sealed += 1
            self.status.last_segment = notice.segment.name
        elif isinstance(notice, ClipOpened):
            self.status.clip_id = notice.clip_id
            log.info("clip %s opened (%s) in %s", notice.clip_id, notice.trigger, notice.directory)
        elif isinstance(notice, ClipFinished):
            log.info("clip %s closed (%s)", notice.clip_id, notice.reason)
            self.reporter.event("clip_closed", clip_id=notice.clip_id, reason=notice.reason)
            self.status.clips_closed += 1
            if notice.reason != "rollover":
                self.status.clip_id = None
                self.post(sm.ClipClosed(now, notice.reason))
        elif isinstance(notice, RecorderFault):
            self.post(sm.RecorderFailed(now, notice.reason, notice.detail))
        self._refresh_status()

    # ----- status, watchdog, shutdown -----------------------------------------------------

    def _refresh_status(self) -> None:
        s = self.status
        s.state = self.machine.state.name
        s.warnings = sorted(w.name for w in self.machine.warnings)
        s.stealth = self.machine.stealth
        s.recording = self.recorder.recording
        if self.dock is not None:
            s.dock_sessions = self.dock.sessions
        if self._on_change is not None:
            self._on_change(s)
        self.reporter.state(s)

    async def _status_loop(self) -> None:
        while True:
            self._refresh_status()
            await asyncio.to_thread(self._status_writer.write, self.status)
            await self.clock.sleep(1.0)

    async def _watchdog(self) -> None:
        notifier = self._notifier
        assert notifier is not None
        assert notifier.watchdog_interval_s
        interval = notifier.watchdog_interval_s / 2
        while True:
            # Only a live loop with a live writer counts as healthy.
            if self.recorder.writer_alive:
                notifier.watchdog()
            await asyncio.sleep(interval)

    async def _shutdown(self) -> None:
        if self._notifier is not None:
            self._notifier.stopping()
        if self.recorder.recording:
            log.info("stopping: sealing the open clip")
        self.sensor.stop()
        await self.recorder.aclose()
        for part in (self.board.red_led, self.board.green_led, self.board.beeper):
            part.off()
        self.status.state = "STOPPED"
        self.status.recording = False
        await asyncio.to_thread(self._status_writer.write, self.status)
        if self.telemetry is not None:
            # Events from the last seal (clip_closed) are kept for the next start.
            self.telemetry.close()
