"""The camera's brain as a pure state machine: events in, actions out.

No I/O, no clock, no asyncio: every event carries its time and timed behaviour (hold to stop,
reminders, clip rollover, warning beeps) is driven by ``next_deadline()`` and ``Tick``. Any
event first fires the deadlines it has passed, so a late Tick cannot reorder behaviour (a
release that arrives after the hold deadline still stops the recording).

Action order within one answer: the LED first (the red light is what the officer and the
public see, so it must not wait for the sensor or the recorder), then the sensor, the clip,
the beeps, and ``StateChanged`` last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from bodycam.daemon.config import Config
from bodycam.daemon.events import (
    FAILURE_WARNING,
    ON_STATES,
    ROLLOVER_REASON,
    STATE_LED,
    WARNING_BEEP,
    Action,
    BatteryChanged,
    ButtonChanged,
    CameraRecovered,
    ClipClosed,
    ClockChanged,
    CloseClip,
    DockChanged,
    Event,
    FailureReason,
    FunctionButtonChanged,
    HardwareFaultsChanged,
    Notice,
    OpenClip,
    PlayBeeps,
    PowerSwitched,
    RecorderFailed,
    RolloverClip,
    SetLed,
    SilenceBeeps,
    StartSensor,
    State,
    StateChanged,
    StopSensor,
    StorageChanged,
    Tick,
    TriggerChanged,
    Warning,
    WarningsChanged,
    warning_interval,
)
from bodycam.daemon.indicators import BeepPattern, LedPattern

# The event and action types are re-exported: the daemon needs only this module.
# fmt: off
__all__ = [
    "ROLLOVER_REASON", "Action", "BatteryChanged", "BeepPattern", "ButtonChanged",
    "CameraRecovered", "ClipClosed", "ClockChanged", "CloseClip", "DockChanged", "Event",
    "FailureReason", "FunctionButtonChanged", "HardwareFaultsChanged", "LedPattern", "Notice",
    "OpenClip", "PlayBeeps",
    "PowerSwitched", "RecorderFailed", "RolloverClip", "SetLed", "SilenceBeeps", "StartSensor",
    "State", "StateChanged", "StateMachine", "StopSensor", "StorageChanged", "Tick",
    "TriggerChanged", "Warning", "WarningsChanged",
]
# fmt: on

# Deadlines due at the same time fire in this order: a stop beats a rollover or a reminder.
_HOLD, _ROLLOVER, _REMINDER, _WARNING = range(4)


class _Periodic:
    """A deadline every ``interval`` seconds after ``anchor`` (first one at anchor+interval)."""

    def __init__(self, anchor: float, interval: float) -> None:
        self._anchor = anchor
        self._interval = interval
        self._count = 1

    @property
    def due(self) -> float:
        # From the anchor, not accumulated: hours of reminders must not drift.
        return self._anchor + self._count * self._interval

    def advance(self, now: float) -> None:
        """Move past ``now``; occurrences missed by a late caller are skipped, not replayed."""
        passed = math.floor((now - self._anchor) / self._interval)
        self._count = max(self._count + 1, passed + 1)
        while self.due <= now:
            self._count += 1


class StateMachine:
    """The recording state machine; see the module docstring and PRODUCT.md."""

    def __init__(self, config: Config) -> None:
        self._cfg = config
        self._state = State.OFF
        self._warnings: set[Warning] = set()
        self._stealth = False
        self._led = LedPattern.OFF  # the last pattern asked for; the LED is dark at boot
        self._power = False
        self._docked = False
        self._battery_percent: float | None = None
        self._charging = False
        self._button_down = False
        self._function_down = False
        self._last_down: float | None = None  # first press of a possible double press
        self._hold_deadline: float | None = None
        self._triggers: dict[str, bool] = {}
        self._reminder: _Periodic | None = None
        self._rollover: _Periodic | None = None
        self._warning_beeps: dict[Warning, _Periodic] = {}
        self._pending_start: str | None = None  # asked for while FINALIZING
        self._clean_close = False  # we asked for the close and no failure came since

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def warnings(self) -> frozenset[Warning]:
        """The active warnings."""
        return frozenset(self._warnings)

    @property
    def stealth(self) -> bool:
        """True while stealth (no LED, no sound) is on."""
        return self._stealth

    # --- time -------------------------------------------------------------------------

    def _deadlines(self) -> list[tuple[float, int, Callable[[float], list[Action]]]]:
        deadlines: list[tuple[float, int, Callable[[float], list[Action]]]] = []
        if self._hold_deadline is not None:
            deadlines.append((self._hold_deadline, _HOLD, self._fire_hold))
        if self._rollover is not None:
            deadlines.append((self._rollover.due, _ROLLOVER, self._fire_rollover))
        if self._reminder is not None:
            deadlines.append((self._reminder.due, _REMINDER, self._fire_reminder))
        for warning, periodic in self._warning_beeps.items():
            deadlines.append((periodic.due, _WARNING, partial(self._fire_warning, warning)))
        return deadlines

    def next_deadline(self) -> float | None:
        """When the daemon must send ``Tick``, or None if nothing is timed."""
        return min((d[0] for d in self._deadlines()), default=None)

    def _advance(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while True:
            deadlines = [d for d in self._deadlines() if d[0] <= now]
            if not deadlines:
                return actions
            _, _, fire = min(deadlines, key=lambda d: (d[0], d[1]))
            actions += fire(now)

    def _fire_hold(self, now: float) -> list[Action]:
        self._hold_deadline = None
        # The hold press must not become the first half of a double press.
        self._last_down = None
        return self._stop_recording(now, "button")

    def _fire_rollover(self, now: float) -> list[Action]:
        assert self._rollover is not None
        self._rollover.advance(now)
        return [RolloverClip()]

    def _fire_reminder(self, now: float) -> list[Action]:
        assert self._reminder is not None
        self._reminder.advance(now)
        return self._beep(BeepPattern.REMINDER)

    def _fire_warning(self, warning: Warning, now: float) -> list[Action]:
        self._warning_beeps[warning].advance(now)
        return self._beep(WARNING_BEEP[warning])

    # --- events -----------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Process one event; returns the actions to carry out, in order."""
        actions = self._advance(event.t)
        match event:
            case Tick():
                pass
            case PowerSwitched(t=t, on=on):
                actions += self._on_power(t, on)
            case ButtonChanged(t=t, pressed=pressed):
                actions += self._on_button(t, pressed)
            case FunctionButtonChanged(pressed=pressed):
                actions += self._on_function_button(pressed)
            case TriggerChanged(t=t, source=source, active=active):
                actions += self._on_trigger(t, source, active)
            case BatteryChanged(t=t, percent=percent, charging=charging):
                actions += self._on_battery(t, percent, charging)
            case StorageChanged(t=t, full=full):
                if full and self._state == State.RECORDING:
                    actions += self._stop_recording(t, "storage_full")
                actions += self._set_warning(t, Warning.STORAGE_FULL, active=full)
            case ClockChanged(t=t, is_set=is_set):
                actions += self._set_warning(t, Warning.CLOCK_NOT_SET, active=not is_set)
            case ClipClosed(t=t, reason=reason):
                actions += self._on_clip_closed(t, reason)
            case RecorderFailed(t=t, reason=reason):
                actions += self._on_recorder_failed(t, reason)
            case CameraRecovered(t=t):
                actions += self._set_warning(t, Warning.CAMERA_FAULT, active=False)
            case DockChanged(t=t, docked=docked):
                actions += self._on_dock(t, docked)
            case HardwareFaultsChanged(t=t, active=active):
                actions += self._set_warning(t, Warning.HARDWARE_FAULT, active=active)
        return actions

    def _on_power(self, t: float, on: bool) -> list[Action]:
        self._power = on
        if on:
            if self._state == State.OFF:
                return self._go(t, self._rest_state(), "power_on")
            return []  # FINALIZING after a quick off/on: ClipClosed decides where to go
        if self._state == State.RECORDING:
            return self._stop_recording(t, "power_off")
        if self._state in (State.BUFFERING, State.ASLEEP):
            return self._go(t, State.OFF, "power_off")
        return []

    def _on_button(self, t: float, pressed: bool) -> list[Action]:
        if pressed == self._button_down:
            return []
        self._button_down = pressed
        if not pressed:
            self._hold_deadline = None
            return []
        if self._state == State.OFF:
            return []
        double = (
            self._last_down is not None and t - self._last_down <= self._cfg.buttons.double_press_s
        )
        # A double press is consumed: a third quick press starts a new pair.
        self._last_down = None if double else t
        match self._state:
            case State.BUFFERING if double:
                return self._start_recording(t, "button", "double_press")
            case State.RECORDING:
                # Only a press that began while recording counts (not the held second press
                # of the double press that started it).
                self._hold_deadline = t + self._cfg.buttons.hold_stop_s
            case State.FINALIZING if double:
                self._pending_start = "button"
                return [Notice("recording requested while finalizing: starts after the close")]
            case State.ASLEEP:
                if self._can_wake():
                    return self._go(t, State.BUFFERING, "button_wake")
                return [Notice("press ignored: asleep (docked or battery critical)")]
        return []

    def _on_function_button(self, pressed: bool) -> list[Action]:
        if pressed == self._function_down:
            return []
        self._function_down = pressed
        if not pressed or self._state == State.OFF:
            return []
        if not self._cfg.policy.stealth_allowed:
            return [Notice("stealth refused: not allowed by policy (policy.stealth_allowed)")]
        self._stealth = not self._stealth
        actions: list[Action] = [SilenceBeeps()] if self._stealth else []
        actions += self._show_led(self._state)
        actions.append(Notice("stealth on" if self._stealth else "stealth off"))
        return actions

    def _on_trigger(self, t: float, source: str, active: bool) -> list[Action]:
        was_active = self._triggers.get(source, False)
        self._triggers[source] = active
        if not active or was_active:
            return []
        name = f"trigger:{source}"
        match self._state:
            case State.BUFFERING:
                return self._start_recording(t, name, name)
            case State.FINALIZING:
                self._pending_start = name
                return [Notice(f"{name} while finalizing: recording starts after the close")]
            case State.ASLEEP if self._can_wake():
                if self._refusal() is None:
                    # Nothing was buffered while asleep: the clip starts now.
                    return self._start_recording(t, name, name)
                # Only a full card can refuse here. Waking sounds its warning (now and at
                # its interval), which is the refusal the officer hears.
                return [
                    *self._go(t, State.BUFFERING, name),
                    Notice(f"{name} refused: storage full"),
                ]
        return []

    def _on_battery(self, t: float, percent: float, charging: bool) -> list[Action]:
        self._battery_percent = percent
        self._charging = charging
        low = self._cfg.battery.low_percent
        low_active = Warning.LOW_BATTERY in self._warnings
        if charging or percent > low + 1:
            low_active = False
        elif percent <= low:
            low_active = True
        actions = self._set_warning(t, Warning.LOW_BATTERY, active=low_active)
        if self._battery_critical():
            if self._state == State.RECORDING:
                actions += self._stop_recording(t, "battery_critical")
            elif self._state == State.BUFFERING:
                actions += self._go(t, State.ASLEEP, "battery_critical")
        return actions

    def _on_clip_closed(self, t: float, reason: str) -> list[Action]:
        if reason == ROLLOVER_REASON:
            # Only the first half of a rollover, even if it lands while we are finalizing.
            return []
        if self._state == State.RECORDING:
            # The recorder ended the clip on its own: tell the officer it stopped.
            self._clean_close = False
            middle = self._beep(BeepPattern.STOP)
            return self._go(t, self._rest_state(), f"clip_closed:{reason}", middle)
        if self._state != State.FINALIZING:
            return []
        actions: list[Action] = []
        if self._clean_close:
            # A clip sealed without a fault since our CloseClip: the card writes again.
            actions += self._set_warning(t, Warning.WRITE_ERROR, active=False)
        pending, self._pending_start = self._pending_start, None
        rest = self._rest_state()
        if rest == State.BUFFERING and pending is not None:
            refusal = self._refusal()
            if refusal is None:
                return actions + self._start_recording(t, pending, f"{pending} (queued)")
            return actions + self._go(t, rest, "clip_closed") + refusal
        return actions + self._go(t, rest, "clip_closed")

    def _on_recorder_failed(self, t: float, reason: FailureReason) -> list[Action]:
        warning = FAILURE_WARNING.get(reason, Warning.WRITE_ERROR)
        if self._state not in (State.RECORDING, State.FINALIZING):
            return self._set_warning(t, warning, active=True)
        self._clean_close = False
        if self._state == State.FINALIZING:
            return self._set_warning(t, warning, active=True)
        # The recorder is already closing the clip: no CloseClip, just wait for ClipClosed.
        already = warning in self._warnings
        actions = self._go(t, State.FINALIZING, f"recorder_failed:{reason}")
        actions += self._set_warning(t, warning, active=True)
        if already:
            # The recording just stopped: sound the warning now even though it was active.
            actions += self._announce(t, warning)
        return actions

    def _on_dock(self, t: float, docked: bool) -> list[Action]:
        self._docked = docked
        if docked:
            if self._state == State.RECORDING:
                return self._stop_recording(t, "docked")
            if self._state == State.BUFFERING:
                return self._go(t, State.ASLEEP, "docked")
            return []
        if self._state == State.ASLEEP and self._can_wake():
            return self._go(t, State.BUFFERING, "undocked")
        return []

    # --- helpers ----------------------------------------------------------------------

    def _battery_critical(self) -> bool:
        percent = self._battery_percent
        return (
            percent is not None
            and not self._charging
            and percent <= self._cfg.battery.critical_percent
        )

    def _can_wake(self) -> bool:
        return self._power and not self._docked and not self._battery_critical()

    def _rest_state(self) -> State:
        """Where the camera belongs when it is not recording."""
        if not self._power:
            return State.OFF
        if self._docked or self._battery_critical():
            return State.ASLEEP
        return State.BUFFERING

    def _refusal(self) -> list[Action] | None:
        """Why a recording cannot start now (as actions), or None if it can."""
        if Warning.STORAGE_FULL in self._warnings:
            return [
                Notice("recording refused: storage full"),
                *self._beep(BeepPattern.STORAGE_FULL),
            ]
        if self._battery_critical():
            return [Notice("recording refused: battery critical")]
        return None

    def _beep(self, pattern: BeepPattern) -> list[Action]:
        return [] if self._stealth else [PlayBeeps(pattern)]

    def _show_led(self, state: State) -> list[Action]:
        wanted = LedPattern.OFF if self._stealth else STATE_LED[state]
        if wanted == self._led:
            return []
        self._led = wanted
        return [SetLed(wanted)]

    def _announce(self, t: float, warning: Warning) -> list[Action]:
        """Beep a warning now and schedule its repeats."""
        interval = warning_interval(warning, self._cfg.indicators)
        self._warning_beeps[warning] = _Periodic(t, interval)
        return self._beep(WARNING_BEEP[warning])

    def _set_warning(self, t: float, warning: Warning, *, active: bool) -> list[Action]:
        if (warning in self._warnings) == active:
            return []
        actions: list[Action] = []
        if active:
            self._warnings.add(warning)
            actions.append(WarningsChanged(self.warnings))
            if self._state in ON_STATES:
                actions += self._announce(t, warning)
        else:
            self._warnings.discard(warning)
            self._warning_beeps.pop(warning, None)
            actions.append(WarningsChanged(self.warnings))
        return actions

    def _go(
        self, t: float, new: State, reason: str, middle: list[Action] | None = None
    ) -> list[Action]:
        """Enter ``new``: LED, sensor, ``middle`` (clip and beeps), warnings, StateChanged."""
        old = self._state
        actions = self._show_led(new)
        if (old in ON_STATES) != (new in ON_STATES):
            actions.append(StartSensor() if new in ON_STATES else StopSensor())
        actions += middle or []
        self._state = new
        if new != State.RECORDING:
            self._hold_deadline = None
            self._reminder = None
            self._rollover = None
        if new in ON_STATES and old not in ON_STATES:
            # Warnings that began while off are heard as soon as the camera is on.
            for warning in Warning:
                if warning in self._warnings:
                    actions += self._announce(t, warning)
        elif new not in ON_STATES:
            self._warning_beeps.clear()
            self._pending_start = None
        if new == State.OFF:
            # Indication is back at the next power-on; stealth is chosen anew each time.
            self._stealth = False
        actions.append(StateChanged(old, new, reason))
        return actions

    def _start_recording(self, t: float, trigger: str, reason: str) -> list[Action]:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        self._last_down = None
        ind, rec = self._cfg.indicators, self._cfg.recording
        self._reminder = _Periodic(t, ind.reminder_interval_s)
        self._rollover = _Periodic(t, rec.max_clip_s)
        self._hold_deadline = None
        middle: list[Action] = [OpenClip(trigger, t), *self._beep(BeepPattern.START)]
        return self._go(t, State.RECORDING, reason, middle)

    def _stop_recording(self, t: float, reason: str) -> list[Action]:
        self._clean_close = True
        middle: list[Action] = [CloseClip(reason), *self._beep(BeepPattern.STOP)]
        return self._go(t, State.FINALIZING, reason, middle)
