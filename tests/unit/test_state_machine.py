"""The recording state machine: events in, actions out, time as plain numbers."""

from __future__ import annotations

from typing import Any

import pytest

from bodycam.daemon.config import Config
from bodycam.daemon.indicators import BeepPattern, LedPattern
from bodycam.daemon.state_machine import (
    Action,
    BatteryChanged,
    ButtonChanged,
    CameraRecovered,
    ClipClosed,
    ClockChanged,
    CloseClip,
    DockChanged,
    FunctionButtonChanged,
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
    StateMachine,
    StopSensor,
    StorageChanged,
    Tick,
    TriggerChanged,
    Warning,
    WarningsChanged,
)


def machine(**overrides: dict[str, Any]) -> StateMachine:
    return StateMachine(Config().with_overrides(**overrides) if overrides else Config())


def powered(t: float = 0.0, **overrides: dict[str, Any]) -> StateMachine:
    sm = machine(**overrides)
    sm.handle(PowerSwitched(t, on=True))
    return sm


def press(sm: StateMachine, t: float, hold: float = 0.1) -> list[Action]:
    """A press and its release; returns the actions of both edges."""
    return sm.handle(ButtonChanged(t, pressed=True)) + sm.handle(ButtonChanged(t + hold, False))


def double_press(sm: StateMachine, t: float) -> list[Action]:
    return press(sm, t) + press(sm, t + 0.3)


def state(sm: StateMachine) -> State:
    """The state, read through a call so that mypy does not narrow it across events."""
    return sm.state


def recording(t: float = 10.0, **overrides: dict[str, Any]) -> StateMachine:
    """A powered camera that started recording (by a holster trigger) at ``t``."""
    sm = powered(0.0, **overrides)
    sm.handle(TriggerChanged(t, "holster", active=True))
    assert state(sm) == State.RECORDING
    return sm


def run_until(sm: StateMachine, until: float) -> list[tuple[float, Action]]:
    """Tick at every deadline up to ``until``, as the daemon would."""
    timed: list[tuple[float, Action]] = []
    while (deadline := sm.next_deadline()) is not None and deadline <= until:
        timed += [(deadline, action) for action in sm.handle(Tick(deadline))]
    return timed


def beeps(actions: list[Action]) -> list[BeepPattern]:
    return [a.pattern for a in actions if isinstance(a, PlayBeeps)]


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


# --- power and start ------------------------------------------------------------------


def test_power_on_starts_buffering() -> None:
    sm = machine()
    assert state(sm) == State.OFF
    assert sm.next_deadline() is None
    actions = sm.handle(PowerSwitched(1.0, on=True))
    assert actions == [
        SetLed(LedPattern.BUFFERING),
        StartSensor(),
        StateChanged(State.OFF, State.BUFFERING, "power_on"),
    ]


def test_off_ignores_presses_and_triggers() -> None:
    sm = machine()
    assert double_press(sm, 1.0) == []
    assert sm.handle(TriggerChanged(2.0, "holster", active=True)) == []
    assert state(sm) == State.OFF


def test_double_press_starts_recording_led_first() -> None:
    sm = powered()
    assert press(sm, 10.0) == []
    actions = sm.handle(ButtonChanged(10.5, pressed=True))
    assert actions == [
        SetLed(LedPattern.RECORDING),
        OpenClip("button", 10.5),
        PlayBeeps(BeepPattern.START),
        StateChanged(State.BUFFERING, State.RECORDING, "double_press"),
    ]


def test_slow_double_press_does_not_start() -> None:
    sm = powered()
    assert press(sm, 10.0) + press(sm, 10.8) == []
    assert state(sm) == State.BUFFERING
    # The late press opens a new window: a quick third press completes a pair.
    assert OpenClip("button", 11.2) in press(sm, 11.2)


def test_double_press_window_from_config() -> None:
    sm = powered(buttons={"double_press_s": 1.5})
    press(sm, 10.0)
    assert OpenClip("button", 11.2) in press(sm, 11.2)


@pytest.mark.parametrize("source", ["holster", "vehicle", "weapon"])
def test_trigger_starts_with_its_name(source: str) -> None:
    sm = powered()
    actions = sm.handle(TriggerChanged(5.0, source, active=True))
    assert actions[:3] == [
        SetLed(LedPattern.RECORDING),
        OpenClip(f"trigger:{source}", 5.0),
        PlayBeeps(BeepPattern.START),
    ]
    assert state(sm) == State.RECORDING


def test_triggers_and_double_presses_while_recording_do_nothing() -> None:
    sm = recording(10.0)
    assert sm.handle(TriggerChanged(11.0, "weapon", active=True)) == []
    assert double_press(sm, 12.0) == []
    assert state(sm) == State.RECORDING


def test_trigger_needs_a_fresh_active_edge() -> None:
    sm = recording(10.0)  # holster active from 10.0
    sm.handle(ButtonChanged(20.0, pressed=True))
    run_until(sm, 23.0)
    sm.handle(ButtonChanged(23.5, pressed=False))
    sm.handle(ClipClosed(24.0, "button"))
    assert state(sm) == State.BUFFERING
    assert sm.handle(TriggerChanged(25.0, "holster", active=True)) == []  # still active
    sm.handle(TriggerChanged(26.0, "holster", active=False))
    assert OpenClip("trigger:holster", 27.0) in sm.handle(TriggerChanged(27.0, "holster", True))


# --- stop -----------------------------------------------------------------------------


def test_hold_stops_at_press_plus_hold_time_not_on_release() -> None:
    sm = recording(10.0)
    assert sm.handle(ButtonChanged(20.0, pressed=True)) == []
    assert sm.next_deadline() == 23.0
    assert sm.handle(Tick(22.999)) == []
    actions = sm.handle(Tick(23.0))
    assert actions == [
        SetLed(LedPattern.BUFFERING),
        CloseClip("button"),
        PlayBeeps(BeepPattern.STOP),
        StateChanged(State.RECORDING, State.FINALIZING, "button"),
    ]
    assert sm.handle(ButtonChanged(25.0, pressed=False)) == []
    assert state(sm) == State.FINALIZING


def test_hold_time_from_config() -> None:
    sm = recording(10.0, buttons={"hold_stop_s": 5.0})
    sm.handle(ButtonChanged(20.0, pressed=True))
    assert sm.next_deadline() == 25.0


def test_release_after_the_deadline_stops_even_without_a_tick() -> None:
    sm = recording(10.0)
    sm.handle(ButtonChanged(20.0, pressed=True))
    assert CloseClip("button") in sm.handle(ButtonChanged(23.4, pressed=False))


def test_stop_due_with_a_reminder_wins() -> None:
    sm = recording(10.0)
    sm.handle(ButtonChanged(127.0, pressed=True))
    actions = sm.handle(Tick(130.0))
    assert beeps(actions) == [BeepPattern.STOP]  # no reminder for a recording that ended
    assert state(sm) == State.FINALIZING


def test_short_press_does_not_stop() -> None:
    sm = recording(10.0)
    assert press(sm, 20.0, hold=2.9) == []
    assert sm.next_deadline() == 130.0  # the reminder, no stop pending
    assert run_until(sm, 30.0) == []
    assert state(sm) == State.RECORDING


def test_held_second_press_of_the_start_does_not_stop() -> None:
    sm = powered()
    press(sm, 10.0)
    sm.handle(ButtonChanged(10.4, pressed=True))  # starts recording, still held
    assert state(sm) == State.RECORDING
    assert sm.next_deadline() == pytest.approx(130.4)
    assert sm.handle(Tick(13.4)) == []
    assert sm.handle(ButtonChanged(20.0, pressed=False)) == []
    assert state(sm) == State.RECORDING
    # A new press made while recording does stop.
    sm.handle(ButtonChanged(30.0, pressed=True))
    assert CloseClip("button") in sm.handle(Tick(33.0))


def test_finalizing_returns_to_buffering_on_clip_closed() -> None:
    sm = recording(10.0)
    sm.handle(ButtonChanged(20.0, pressed=True))
    sm.handle(Tick(23.0))
    actions = sm.handle(ClipClosed(23.5, "button"))
    # The LED already shows buffering and the sensor keeps running.
    assert actions == [StateChanged(State.FINALIZING, State.BUFFERING, "clip_closed")]
    assert sm.next_deadline() is None


def test_double_press_while_finalizing_starts_after_clip_closed() -> None:
    sm = recording(10.0)
    sm.handle(ButtonChanged(20.0, pressed=True))
    sm.handle(Tick(23.0))
    sm.handle(ButtonChanged(23.2, pressed=False))
    actions = double_press(sm, 23.4)
    assert OpenClip not in kinds(actions)
    assert state(sm) == State.FINALIZING
    actions = sm.handle(ClipClosed(24.0, "button"))
    assert actions[:3] == [
        SetLed(LedPattern.RECORDING),
        OpenClip("button", 24.0),
        PlayBeeps(BeepPattern.START),
    ]
    assert StartSensor not in kinds(actions)
    assert state(sm) == State.RECORDING


def test_hold_press_is_not_half_of_a_double_press() -> None:
    # A long double-press window and a short hold: the hold press must not pair with the
    # next press into a queued restart.
    sm = recording(10.0, buttons={"double_press_s": 3.0, "hold_stop_s": 0.5})
    sm.handle(ButtonChanged(20.0, pressed=True))
    sm.handle(Tick(20.5))
    sm.handle(ButtonChanged(20.6, pressed=False))
    press(sm, 21.0)
    assert OpenClip not in kinds(sm.handle(ClipClosed(22.0, "button")))
    assert state(sm) == State.BUFFERING


def test_clip_closed_for_a_rollover_does_not_end_the_recording() -> None:
    sm = recording(10.0)
    assert sm.handle(ClipClosed(50.0, "rollover")) == []
    assert state(sm) == State.RECORDING
    # Nor does it end the finalizing of a stop requested just after a rollover.
    sm.handle(PowerSwitched(60.0, on=False))
    assert sm.handle(ClipClosed(60.1, "rollover")) == []
    assert state(sm) == State.FINALIZING


def test_trigger_while_finalizing_starts_after_clip_closed() -> None:
    sm = recording(10.0)
    sm.handle(ButtonChanged(20.0, pressed=True))
    sm.handle(Tick(23.0))
    assert kinds(sm.handle(TriggerChanged(23.2, "weapon", active=True))) == [Notice]
    assert OpenClip("trigger:weapon", 23.5) in sm.handle(ClipClosed(23.5, "button"))


def test_recorder_closing_on_its_own_ends_the_recording_audibly() -> None:
    sm = recording(10.0)
    actions = sm.handle(ClipClosed(50.0, "max_size"))
    assert beeps(actions) == [BeepPattern.STOP]
    assert state(sm) == State.BUFFERING


# --- timed behaviour while recording --------------------------------------------------


def test_reminders_every_interval() -> None:
    sm = recording(10.0)
    timed = run_until(sm, 500.0)
    assert timed == [(t, PlayBeeps(BeepPattern.REMINDER)) for t in (130.0, 250.0, 370.0, 490.0)]


def test_rollover_repeats_and_reminders_keep_their_schedule() -> None:
    sm = recording(10.0, recording={"max_clip_s": 100.0})
    timed = run_until(sm, 320.0)
    assert [(t, a) for t, a in timed if isinstance(a, RolloverClip)] == [
        (110.0, RolloverClip()),
        (210.0, RolloverClip()),
        (310.0, RolloverClip()),
    ]
    assert [t for t, a in timed if isinstance(a, PlayBeeps)] == [130.0, 250.0]
    assert state(sm) == State.RECORDING


def test_default_rollover_after_four_hours() -> None:
    sm = recording(10.0)
    timed = run_until(sm, 10.0 + 4 * 3600)
    assert [t for t, a in timed if isinstance(a, RolloverClip)] == [10.0 + 4 * 3600]


def test_late_tick_fires_once_and_keeps_the_grid() -> None:
    sm = recording(10.0)
    assert sm.handle(Tick(1000.0)) == [PlayBeeps(BeepPattern.REMINDER)]
    assert sm.next_deadline() == 1090.0  # 10 + 9 * 120


# --- power, battery, dock -------------------------------------------------------------


def test_power_off_while_recording_closes_then_off() -> None:
    sm = recording(10.0)
    actions = sm.handle(PowerSwitched(20.0, on=False))
    assert CloseClip("power_off") in actions
    assert state(sm) == State.FINALIZING
    actions = sm.handle(ClipClosed(21.0, "power_off"))
    assert actions == [
        SetLed(LedPattern.OFF),
        StopSensor(),
        StateChanged(State.FINALIZING, State.OFF, "clip_closed"),
    ]
    assert sm.next_deadline() is None


def test_power_off_while_buffering() -> None:
    sm = powered()
    assert sm.handle(PowerSwitched(5.0, on=False)) == [
        SetLed(LedPattern.OFF),
        StopSensor(),
        StateChanged(State.BUFFERING, State.OFF, "power_off"),
    ]


def test_queued_start_is_dropped_after_power_off() -> None:
    sm = recording(10.0)
    sm.handle(PowerSwitched(20.0, on=False))
    double_press(sm, 20.2)
    sm.handle(ClipClosed(21.0, "power_off"))
    assert state(sm) == State.OFF


def test_critical_battery_while_recording_seals_then_sleeps() -> None:
    sm = recording(10.0)
    actions = sm.handle(BatteryChanged(20.0, percent=5.0, charging=False))
    assert CloseClip("battery_critical") in actions
    assert state(sm) == State.FINALIZING
    actions = sm.handle(ClipClosed(21.0, "battery_critical"))
    assert StopSensor() in actions
    assert state(sm) == State.ASLEEP


def test_critical_battery_while_buffering_sleeps_at_once() -> None:
    sm = powered()
    actions = sm.handle(BatteryChanged(20.0, percent=4.0, charging=False))
    assert StopSensor() in actions
    assert actions[-1] == StateChanged(State.BUFFERING, State.ASLEEP, "battery_critical")
    # Asleep: no warning beeps and no way to record while the battery is critical.
    assert sm.next_deadline() is None
    assert sm.handle(TriggerChanged(30.0, "holster", active=True)) == []
    assert state(sm) == State.ASLEEP
    assert kinds(press(sm, 31.0)) == [Notice]


def test_critical_level_while_charging_keeps_buffering() -> None:
    sm = powered()
    sm.handle(BatteryChanged(20.0, percent=3.0, charging=True))
    assert state(sm) == State.BUFFERING


def test_asleep_wakes_on_press_once_battery_is_ok() -> None:
    sm = powered()
    sm.handle(BatteryChanged(20.0, percent=4.0, charging=False))
    sm.handle(BatteryChanged(30.0, percent=4.0, charging=True))
    assert state(sm) == State.ASLEEP  # no wake by itself
    actions = press(sm, 31.0)
    assert actions == [
        SetLed(LedPattern.BUFFERING),
        StartSensor(),
        StateChanged(State.ASLEEP, State.BUFFERING, "button_wake"),
    ]


def test_double_press_from_sleep_wakes_and_records() -> None:
    sm = powered()
    sm.handle(BatteryChanged(7.0, percent=4.0, charging=False))
    sm.handle(BatteryChanged(8.0, percent=4.0, charging=True))
    assert state(sm) == State.ASLEEP
    actions = double_press(sm, 10.0)
    assert StartSensor() in actions
    assert OpenClip("button", 10.3) in actions
    assert state(sm) == State.RECORDING


def test_trigger_from_sleep_with_full_storage_wakes_to_refuse() -> None:
    sm = powered()
    sm.handle(StorageChanged(1.0, full=True))
    sm.handle(BatteryChanged(2.0, percent=4.0, charging=False))
    sm.handle(BatteryChanged(3.0, percent=4.0, charging=True))
    actions = sm.handle(TriggerChanged(4.0, "holster", active=True))
    assert OpenClip not in kinds(actions)
    assert beeps(actions) == [BeepPattern.STORAGE_FULL]  # once, not twice
    assert state(sm) == State.BUFFERING
    assert sm.next_deadline() == 4.0 + Config().indicators.storage_full_interval_s


def test_trigger_wakes_and_records_at_once() -> None:
    sm = powered()
    sm.handle(BatteryChanged(20.0, percent=4.0, charging=False))
    sm.handle(BatteryChanged(30.0, percent=4.0, charging=True))
    actions = sm.handle(TriggerChanged(40.0, "vehicle", active=True))
    assert actions == [
        SetLed(LedPattern.RECORDING),
        StartSensor(),
        OpenClip("trigger:vehicle", 40.0),
        PlayBeeps(BeepPattern.START),
        StateChanged(State.ASLEEP, State.RECORDING, "trigger:vehicle"),
    ]


def test_docking_while_recording_seals_then_sleeps_and_undocking_wakes() -> None:
    sm = recording(10.0)
    assert CloseClip("docked") in sm.handle(DockChanged(20.0, docked=True))
    actions = sm.handle(ClipClosed(21.0, "docked"))
    assert StopSensor() in actions
    assert state(sm) == State.ASLEEP
    # Docked: no buffering, no recording.
    assert kinds(press(sm, 22.0)) == [Notice]
    assert sm.handle(TriggerChanged(23.0, "weapon", active=True)) == []
    actions = sm.handle(DockChanged(30.0, docked=False))
    assert StartSensor() in actions
    assert actions[-1] == StateChanged(State.ASLEEP, State.BUFFERING, "undocked")


def test_docking_while_buffering_and_power_on_in_the_dock() -> None:
    sm = powered()
    actions = sm.handle(DockChanged(5.0, docked=True))
    assert StopSensor() in actions
    assert state(sm) == State.ASLEEP
    sm = machine()
    sm.handle(DockChanged(1.0, docked=True))
    actions = sm.handle(PowerSwitched(2.0, on=True))
    assert actions == [StateChanged(State.OFF, State.ASLEEP, "power_on")]


def test_undocking_with_power_off_stays_off() -> None:
    sm = machine()
    sm.handle(DockChanged(1.0, docked=True))
    assert sm.handle(DockChanged(2.0, docked=False)) == []
    assert state(sm) == State.OFF


# --- storage and recorder failures ----------------------------------------------------


def test_storage_full_refuses_to_start() -> None:
    sm = powered()
    actions = sm.handle(StorageChanged(5.0, full=True))
    assert actions == [
        WarningsChanged(frozenset({Warning.STORAGE_FULL})),
        PlayBeeps(BeepPattern.STORAGE_FULL),
    ]
    actions = double_press(sm, 10.0)
    assert OpenClip not in kinds(actions)
    assert beeps(actions) == [BeepPattern.STORAGE_FULL]
    assert not any(
        isinstance(a, OpenClip) for a in sm.handle(TriggerChanged(11.0, "holster", True))
    )
    assert state(sm) == State.BUFFERING
    sm.handle(StorageChanged(20.0, full=False))
    assert sm.warnings == frozenset()
    assert OpenClip("button", 30.3) in double_press(sm, 30.0)


def test_triple_press_is_one_double_press() -> None:
    sm = powered()
    sm.handle(StorageChanged(5.0, full=True))
    actions = press(sm, 10.0) + press(sm, 10.3) + press(sm, 10.6)
    assert beeps(actions) == [BeepPattern.STORAGE_FULL]  # one refusal, not two


def test_storage_full_while_recording_seals_the_clip() -> None:
    sm = recording(10.0)
    actions = sm.handle(StorageChanged(20.0, full=True))
    assert CloseClip("storage_full") in actions
    assert Warning.STORAGE_FULL in sm.warnings
    assert state(sm) == State.FINALIZING


def test_camera_fault_while_recording() -> None:
    sm = recording(10.0)
    actions = sm.handle(RecorderFailed(20.0, "camera_fault", "no frames for 2 s"))
    assert CloseClip not in kinds(actions)  # the recorder is already closing
    assert WarningsChanged(frozenset({Warning.CAMERA_FAULT})) in actions
    assert beeps(actions) == [BeepPattern.CAMERA_FAULT]
    assert state(sm) == State.FINALIZING
    sm.handle(ClipClosed(21.0, "camera_fault"))
    assert state(sm) == State.BUFFERING
    assert sm.handle(CameraRecovered(25.0)) == [WarningsChanged(frozenset())]


def test_camera_fault_while_buffering_stays_buffering() -> None:
    sm = powered()
    actions = sm.handle(RecorderFailed(20.0, "camera_fault"))
    assert beeps(actions) == [BeepPattern.CAMERA_FAULT]
    assert state(sm) == State.BUFFERING
    assert sm.next_deadline() == 20.0 + Config().indicators.storage_full_interval_s


def test_storage_full_failure_blocks_the_next_start() -> None:
    sm = recording(10.0)
    sm.handle(RecorderFailed(20.0, "storage_full", "ENOSPC"))
    sm.handle(ClipClosed(20.5, "storage_full"))
    assert state(sm) == State.BUFFERING
    assert OpenClip not in kinds(double_press(sm, 30.0))


def test_write_error_clears_after_a_clean_recording() -> None:
    sm = recording(10.0)
    sm.handle(RecorderFailed(20.0, "write_error", "EIO"))
    sm.handle(ClipClosed(20.5, "write_error"))
    assert sm.warnings == {Warning.WRITE_ERROR}
    sm.handle(TriggerChanged(30.0, "vehicle", active=True))
    sm.handle(ButtonChanged(40.0, pressed=True))
    sm.handle(Tick(43.0))
    assert sm.warnings == {Warning.WRITE_ERROR}  # not until the clip is sealed
    assert WarningsChanged(frozenset()) in sm.handle(ClipClosed(44.0, "button"))


def test_repeated_fault_while_recording_still_sounds() -> None:
    sm = powered()
    sm.handle(RecorderFailed(5.0, "camera_fault"))
    sm.handle(TriggerChanged(10.0, "holster", active=True))
    actions = sm.handle(RecorderFailed(11.0, "camera_fault"))
    assert beeps(actions) == [BeepPattern.CAMERA_FAULT]
    assert state(sm) == State.FINALIZING


# --- warnings -------------------------------------------------------------------------


def test_low_battery_hysteresis() -> None:
    sm = powered()
    steps = [
        (16.0, False, False),
        (15.0, False, True),
        (15.9, False, True),
        (16.0, False, True),  # within low + 1: still low
        (16.1, False, False),
        (15.5, False, False),  # rising and falling inside the band changes nothing
        (15.0, False, True),
        (15.0, True, False),  # charging clears it
    ]
    for i, (percent, charging, low) in enumerate(steps):
        sm.handle(BatteryChanged(float(i), percent, charging))
        assert (Warning.LOW_BATTERY in sm.warnings) is low, (percent, charging)


def test_low_battery_beeps_every_interval_only_while_on() -> None:
    sm = powered()
    actions = sm.handle(BatteryChanged(100.0, percent=14.0, charging=False))
    assert actions == [
        WarningsChanged(frozenset({Warning.LOW_BATTERY})),
        PlayBeeps(BeepPattern.LOW_BATTERY),
    ]
    assert run_until(sm, 145.0) == [
        (120.0, PlayBeeps(BeepPattern.LOW_BATTERY)),
        (140.0, PlayBeeps(BeepPattern.LOW_BATTERY)),
    ]
    sm.handle(PowerSwitched(150.0, on=False))
    assert sm.next_deadline() is None
    actions = sm.handle(PowerSwitched(200.0, on=True))
    assert beeps(actions) == [BeepPattern.LOW_BATTERY]  # heard again as soon as it is on
    assert sm.next_deadline() == 220.0


def test_warnings_while_off_change_the_set_but_stay_silent() -> None:
    sm = machine()
    actions = sm.handle(ClockChanged(1.0, is_set=False))
    assert actions == [WarningsChanged(frozenset({Warning.CLOCK_NOT_SET}))]
    assert sm.next_deadline() is None


def test_clock_not_set_beeps_and_clears() -> None:
    sm = powered()
    assert beeps(sm.handle(ClockChanged(10.0, is_set=False))) == [BeepPattern.CLOCK_NOT_SET]
    assert run_until(sm, 50.0) == [
        (30.0, PlayBeeps(BeepPattern.CLOCK_NOT_SET)),
        (50.0, PlayBeeps(BeepPattern.CLOCK_NOT_SET)),
    ]
    assert sm.handle(ClockChanged(55.0, is_set=True)) == [WarningsChanged(frozenset())]
    assert sm.next_deadline() is None


def test_warnings_keep_beeping_while_recording_beside_reminders() -> None:
    sm = recording(10.0)
    sm.handle(ClockChanged(100.0, is_set=False))
    patterns = [a.pattern for _, a in run_until(sm, 140.0) if isinstance(a, PlayBeeps)]
    assert patterns == [
        BeepPattern.CLOCK_NOT_SET,  # 120
        BeepPattern.REMINDER,  # 130
        BeepPattern.CLOCK_NOT_SET,  # 140
    ]


def test_no_warning_beeps_while_asleep() -> None:
    sm = powered()
    sm.handle(DockChanged(5.0, docked=True))
    assert sm.handle(ClockChanged(6.0, is_set=False)) == [
        WarningsChanged(frozenset({Warning.CLOCK_NOT_SET}))
    ]
    assert sm.next_deadline() is None


# --- stealth --------------------------------------------------------------------------


def test_stealth_when_allowed_darkens_and_silences() -> None:
    sm = recording(10.0, policy={"stealth_allowed": True})
    actions = sm.handle(FunctionButtonChanged(20.0, pressed=True))
    assert actions[:2] == [SilenceBeeps(), SetLed(LedPattern.OFF)]
    assert sm.stealth
    sm.handle(FunctionButtonChanged(20.1, pressed=False))
    sm.handle(ClockChanged(21.0, is_set=False))
    timed = run_until(sm, 300.0)
    assert not any(isinstance(a, PlayBeeps) for _, a in timed)
    sm.handle(ButtonChanged(300.0, pressed=True))
    actions = sm.handle(Tick(303.0))
    assert CloseClip("button") in actions
    assert kinds(actions) == [CloseClip, StateChanged]  # no LED, no stop tone
    actions = sm.handle(ClipClosed(304.0, "button"))
    assert not any(isinstance(a, SetLed) for a in actions)
    # Leaving stealth restores the current state's LED.
    actions = sm.handle(FunctionButtonChanged(310.0, pressed=True))
    assert actions[0] == SetLed(LedPattern.BUFFERING)
    assert not sm.stealth


def test_stealth_start_records_without_led_or_beeps() -> None:
    sm = powered(policy={"stealth_allowed": True})
    sm.handle(FunctionButtonChanged(1.0, pressed=True))
    actions = sm.handle(TriggerChanged(5.0, "weapon", active=True))
    assert kinds(actions) == [OpenClip, StateChanged]
    assert sm.handle(FunctionButtonChanged(6.0, pressed=False)) == []
    assert sm.handle(FunctionButtonChanged(7.0, pressed=True))[0] == SetLed(LedPattern.RECORDING)


def test_stealth_not_allowed_changes_nothing() -> None:
    sm = recording(10.0)
    actions = sm.handle(FunctionButtonChanged(20.0, pressed=True))
    assert kinds(actions) == [Notice]
    assert not sm.stealth
    assert run_until(sm, 130.0) == [(130.0, PlayBeeps(BeepPattern.REMINDER))]


def test_power_cycle_ends_stealth() -> None:
    sm = powered(policy={"stealth_allowed": True})
    sm.handle(FunctionButtonChanged(1.0, pressed=True))
    sm.handle(PowerSwitched(2.0, on=False))
    assert not sm.stealth
    assert sm.handle(PowerSwitched(3.0, on=True))[0] == SetLed(LedPattern.BUFFERING)
