"""What goes into the state machine (events) and what comes out (actions).

Events carry ``t``, device-clock monotonic seconds, so the state machine never reads a
clock. Actions are requests to the daemon, which carries them out in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from bodycam.daemon.config import IndicatorsSection
from bodycam.daemon.indicators import BeepPattern, LedPattern


class State(StrEnum):
    """Where the camera is; only BUFFERING, RECORDING and FINALIZING run the sensor."""

    OFF = "off"
    BUFFERING = "buffering"
    RECORDING = "recording"
    FINALIZING = "finalizing"
    ASLEEP = "asleep"


# Shadows the builtin on purpose: it is the domain's word, and this package never needs
# the builtin warning category.
class Warning(StrEnum):
    """A condition the officer must hear about; each has its own beep pattern."""

    CAMERA_FAULT = "camera_fault"
    WRITE_ERROR = "write_error"
    STORAGE_FULL = "storage_full"
    LOW_BATTERY = "low_battery"
    CLOCK_NOT_SET = "clock_not_set"
    # A part other than the sensor is missing or failing (an LED pin in use, no fuel gauge,
    # no USB gadget): the camera still records, but someone must look at it.
    HARDWARE_FAULT = "hardware_fault"


FailureReason = Literal["storage_full", "camera_fault", "write_error"]

# The sensor runs (and warnings beep) only in these states.
ON_STATES = frozenset({State.BUFFERING, State.RECORDING, State.FINALIZING})

STATE_LED: dict[State, LedPattern] = {
    State.OFF: LedPattern.OFF,
    State.BUFFERING: LedPattern.BUFFERING,
    State.RECORDING: LedPattern.RECORDING,
    # The red light goes out as soon as the stop is decided; sealing is invisible.
    State.FINALIZING: LedPattern.BUFFERING,
    State.ASLEEP: LedPattern.OFF,
}

WARNING_BEEP: dict[Warning, BeepPattern] = {
    Warning.CAMERA_FAULT: BeepPattern.CAMERA_FAULT,
    Warning.WRITE_ERROR: BeepPattern.WRITE_ERROR,
    Warning.STORAGE_FULL: BeepPattern.STORAGE_FULL,
    Warning.LOW_BATTERY: BeepPattern.LOW_BATTERY,
    Warning.CLOCK_NOT_SET: BeepPattern.CLOCK_NOT_SET,
    Warning.HARDWARE_FAULT: BeepPattern.HARDWARE_FAULT,
}

FAILURE_WARNING: dict[FailureReason, Warning] = {
    "storage_full": Warning.STORAGE_FULL,
    "camera_fault": Warning.CAMERA_FAULT,
    "write_error": Warning.WRITE_ERROR,
}


def warning_interval(warning: Warning, cfg: IndicatorsSection) -> float:
    """How often an active warning repeats its beeps while the camera is on."""
    if warning == Warning.LOW_BATTERY:
        return cfg.low_battery_interval_s
    if warning == Warning.CLOCK_NOT_SET:
        return cfg.clock_not_set_interval_s
    # The faults have no keys of their own: they nag as often as a full card.
    return cfg.storage_full_interval_s


# A ClipClosed with this reason reports the first half of a rollover, not the end of a
# recording; the recorder may send it or not, the state machine ignores it.
ROLLOVER_REASON = "rollover"


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerSwitched:
    """The power switch moved (a board without one sends ``on=True`` at start)."""

    t: float
    on: bool


@dataclass(frozen=True, slots=True)
class ButtonChanged:
    """The record button went down or up (already debounced)."""

    t: float
    pressed: bool


@dataclass(frozen=True, slots=True)
class FunctionButtonChanged:
    """The function button (stealth toggle) went down or up."""

    t: float
    pressed: bool


@dataclass(frozen=True, slots=True)
class TriggerChanged:
    """An auto-activation input (holster, vehicle, weapon) changed."""

    t: float
    source: str
    active: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the daemon sends it at ``StateMachine.next_deadline()``."""

    t: float


@dataclass(frozen=True, slots=True)
class BatteryChanged:
    """A new battery reading."""

    t: float
    percent: float
    charging: bool


@dataclass(frozen=True, slots=True)
class StorageChanged:
    """Free space crossed the reserve (``storage.reserve_mb``) one way or the other."""

    t: float
    full: bool


@dataclass(frozen=True, slots=True)
class ClockChanged:
    """The real-time clock became set (dock time sync) or was found unset."""

    t: float
    is_set: bool


@dataclass(frozen=True, slots=True)
class ClipClosed:
    """The recorder sealed the open clip, after CloseClip or on its own."""

    t: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecorderFailed:
    """The recorder hit a fault; an open clip is already being closed (ClipClosed follows)."""

    t: float
    reason: FailureReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CameraRecovered:
    """The sensor delivers frames again after a camera fault."""

    t: float


@dataclass(frozen=True, slots=True)
class DockChanged:
    """The camera was put into or taken out of its dock."""

    t: float
    docked: bool


@dataclass(frozen=True, slots=True)
class HardwareFaultsChanged:
    """Some part is (or no part is any longer) missing or failing; the log names which."""

    t: float
    active: bool


Event = (
    PowerSwitched
    | ButtonChanged
    | FunctionButtonChanged
    | TriggerChanged
    | Tick
    | BatteryChanged
    | StorageChanged
    | ClockChanged
    | ClipClosed
    | RecorderFailed
    | CameraRecovered
    | DockChanged
    | HardwareFaultsChanged
)


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartSensor:
    """Run the camera sensor (pre-event buffering starts)."""


@dataclass(frozen=True, slots=True)
class StopSensor:
    """Stop the camera sensor (the pre-event buffer is dropped)."""


@dataclass(frozen=True, slots=True)
class OpenClip:
    """Start a clip with the buffered frames; ``trigger`` is "button" or "trigger:<source>"."""

    trigger: str
    t: float


@dataclass(frozen=True, slots=True)
class CloseClip:
    """Seal the open clip; the recorder answers with ClipClosed."""

    reason: str


@dataclass(frozen=True, slots=True)
class RolloverClip:
    """Cut to a new clip at the next keyframe without losing a frame (max clip length)."""


@dataclass(frozen=True, slots=True)
class SetLed:
    """Show an LED pattern from now on."""

    pattern: LedPattern


@dataclass(frozen=True, slots=True)
class PlayBeeps:
    """Play one beep pattern (queued after any pattern still playing)."""

    pattern: BeepPattern


@dataclass(frozen=True, slots=True)
class SilenceBeeps:
    """Cut the beeper now and drop queued patterns (entering stealth)."""


@dataclass(frozen=True, slots=True)
class WarningsChanged:
    """The set of active warnings changed (for telemetry and the simulator's view)."""

    warnings: frozenset[Warning]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The state changed; ``reason`` says why, for the log and telemetry."""

    old: State
    new: State
    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth logging that changes nothing (a refused start, stealth not allowed)."""

    text: str


Action = (
    StartSensor
    | StopSensor
    | OpenClip
    | CloseClip
    | RolloverClip
    | SetLed
    | PlayBeeps
    | SilenceBeeps
    | WarningsChanged
    | StateChanged
    | Notice
)
