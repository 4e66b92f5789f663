"""GPIO parts from ``[pins]``, their faults, the hardware-fault warning, and the Pi clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import gpiozero
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from bodycam.daemon import state_machine as sm
from bodycam.daemon.config import Config, ConfigError
from bodycam.daemon.indicator_player import IndicatorPlayer
from bodycam.daemon.indicators import (
    BeepPattern,
    IndicatorScheduler,
    LedPattern,
    beep_steps,
    timeline,
)
from bodycam.drivers.gpio_parts import MissingInput, MissingOutput, build_gpio_parts, pin_map
from bodycam.drivers.interfaces import HardwareError
from bodycam.drivers.system_clock import SystemClock
from bodycam.sim.clock import SimClock
from bodycam.sim.gpio import make_factory

SPEED = 10.0
LATE_S = 0.3  # simulated seconds: 30 ms of real time


def _config(**pins: Any) -> Config:
    return Config().with_overrides(pins=pins)


def test_two_parts_on_one_pin_is_a_config_error_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"pins: .*beeper and red_led both use GPIO 17"):
        _config(beeper=17)
    with pytest.raises(ConfigError, match=r"triggers\.holster and record_button"):
        _config(triggers={"holster": 5})
    with pytest.raises(ConfigError, match=r"pins\.red_led"):
        _config(red_led=40)


def test_pin_map_names_parts_as_the_simulator_does() -> None:
    pins = _config(power_switch=None, triggers={"weapon": 20}).pins
    mapping = pin_map(pins)
    assert mapping["trigger:weapon"] == 20
    assert "power_switch" not in mapping
    assert mapping["red_led"] == 17


def test_a_pin_in_use_becomes_a_fault_naming_the_key() -> None:
    factory = MockFactory()
    squatter = gpiozero.LED(17, pin_factory=factory)  # another program holds the red LED pin
    parts = build_gpio_parts(Config().pins, debounce_s=0.02, pin_factory=factory)
    try:
        assert isinstance(parts.red_led, MissingOutput)
        assert len(parts.faults) == 1
        assert "red LED" in parts.faults[0]
        assert "pins.red_led" in parts.faults[0]
        # Everything else still works.
        parts.green_led.on()
        assert factory.pin(27).state
    finally:
        for close in parts.closers:
            close()
        squatter.close()


def test_an_unreadable_power_switch_counts_as_on() -> None:
    factory = MockFactory()
    squatter = gpiozero.Button(26, pin_factory=factory)
    parts = build_gpio_parts(Config().pins, debounce_s=0.02, pin_factory=factory)
    try:
        assert isinstance(parts.power_switch, MissingInput)
        assert parts.power_switch.is_active  # a camera must not be unable to record
        assert any("pins.power_switch" in f for f in parts.faults)
    finally:
        for close in parts.closers:
            close()
        squatter.close()


@pytest.mark.parametrize("beeper_kind", ["buzzer", "tone"])
async def test_config_pins_drive_the_scheduled_timeline(beeper_kind: str) -> None:
    # Other pins than the defaults, and both kinds of beeper: the pins go through the very
    # edges the scheduler plans, as on the simulated board.
    config = _config(red_led=23, green_led=24, beeper=25, beeper_kind=beeper_kind)
    clock = SimClock(SPEED)
    factory = make_factory(clock)
    parts = build_gpio_parts(config.pins, debounce_s=0.02, pin_factory=factory)
    assert parts.faults == []
    cfg = config.indicators
    scheduler = IndicatorScheduler(cfg)
    player = IndicatorPlayer(
        scheduler, red=parts.red_led, green=parts.green_led, beeper=parts.beeper, clock=clock
    )
    task = asyncio.create_task(player.run())
    try:
        t0 = clock.monotonic()
        scheduler.set_led(t0, LedPattern.RECORDING)
        scheduler.play(t0, BeepPattern.START)
        player.wake()
        await clock.sleep(3.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    expected = timeline([(t0, LedPattern.RECORDING), (t0, BeepPattern.START)], t0 + 2.5, cfg)
    for output, pin in (("red", 23), ("beeper", 25)):
        want = [(e.t, e.on) for e in expected if e.output == output]
        got = [(t, on) for t, on in factory.pin(pin).timeline if t <= t0 + 2.5 + LATE_S]
        assert [on for _, on in got[: len(want)]] == [on for _, on in want], output
        for (t_got, _), (t_want, _) in zip(got, want, strict=False):
            assert t_want - 1e-6 <= t_got <= t_want + LATE_S, (output, t_got, t_want)
    if beeper_kind == "tone":
        assert isinstance(factory.pin(25), MockPWMPin)
        assert factory.pin(25).frequency == config.pins.beeper_tone_hz
    for close in parts.closers:
        close()


def test_hardware_fault_warning_beeps_two_long_beeps() -> None:
    machine = sm.StateMachine(Config())
    machine.handle(sm.PowerSwitched(0.0, True))
    actions = machine.handle(sm.HardwareFaultsChanged(1.0, True))
    warnings = [a for a in actions if isinstance(a, sm.WarningsChanged)]
    assert warnings
    assert sm.Warning.HARDWARE_FAULT in warnings[-1].warnings
    assert sm.PlayBeeps(BeepPattern.HARDWARE_FAULT) in actions
    cfg = Config().indicators
    assert [d for _, d in beep_steps(BeepPattern.HARDWARE_FAULT, cfg)] == [
        cfg.long_beep_s,
        cfg.long_beep_s,
    ]
    cleared = machine.handle(sm.HardwareFaultsChanged(2.0, False))
    last = [a for a in cleared if isinstance(a, sm.WarningsChanged)][-1]
    assert sm.Warning.HARDWARE_FAULT not in last.warnings


def _boot(tmp_path: Path, boot_id: str) -> Path:
    path = tmp_path / f"boot_id-{boot_id}"
    path.write_text(boot_id + "\n")
    return path


def test_system_clock_keeps_the_docks_time_for_this_boot(tmp_path: Path) -> None:
    offset_file = tmp_path / "state/clock.json"
    flag = tmp_path / "synchronized"
    clock = SystemClock(offset_file, boot_id_path=_boot(tmp_path, "a"), synchronized_flag=flag)
    assert not clock.is_set()
    dock_time = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
    correction = clock.set_utc(dock_time)
    assert correction == pytest.approx(5 * 3600, abs=1.0)
    assert clock.is_set()
    assert abs((clock.utc_now() - dock_time).total_seconds()) < 1.0
    # A daemon restart in the same boot keeps it.
    again = SystemClock(offset_file, boot_id_path=_boot(tmp_path, "a"), synchronized_flag=flag)
    assert again.is_set()
    assert abs((again.utc_now() - dock_time).total_seconds()) < 1.0
    # After a reboot the system clock may have jumped: not set until the next dock ...
    rebooted = SystemClock(offset_file, boot_id_path=_boot(tmp_path, "b"), synchronized_flag=flag)
    assert not rebooted.is_set()
    assert abs((rebooted.utc_now() - dt.datetime.now(dt.UTC)).total_seconds()) < 1.0
    # ... unless the system clock is synchronised by itself.
    flag.write_text("")
    assert rebooted.is_set()


def test_system_clock_that_cannot_store_the_offset_does_not_apply_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    clock = SystemClock(
        blocker / "clock.json",
        boot_id_path=_boot(tmp_path, "a"),
        synchronized_flag=tmp_path / "none",
    )
    with pytest.raises(HardwareError, match="cannot store the dock's time"):
        clock.set_utc(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert not clock.is_set()
    assert abs((clock.utc_now() - dt.datetime.now(dt.UTC)).total_seconds()) < 1.0


def test_system_clock_ignores_a_damaged_offset_file(tmp_path: Path) -> None:
    offset_file = tmp_path / "clock.json"
    offset_file.write_text("{not json")
    clock = SystemClock(
        offset_file, boot_id_path=_boot(tmp_path, "a"), synchronized_flag=tmp_path / "none"
    )
    assert not clock.is_set()
