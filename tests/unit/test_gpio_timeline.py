"""The indicator timeline on gpiozero's own mock pins, checked with its own assertion.

The simulated board records in simulated time; this test runs at real-time speed so that
gpiozero's ``assert_states_and_times`` (real seconds between changes, tens of ms of
tolerance, as its own test suite uses) checks what the LED and beeper pins went through.
"""

from __future__ import annotations

import asyncio

from gpiozero.pins.mock import MockFactory

from bodycam.daemon.config import IndicatorsSection
from bodycam.daemon.indicator_player import IndicatorPlayer
from bodycam.daemon.indicators import BeepPattern, IndicatorScheduler, LedPattern
from bodycam.drivers.gpio import GpioBeeper, GpioLed
from bodycam.sim.clock import SimClock


async def test_recording_start_on_gpiozero_pins() -> None:
    factory = MockFactory()
    red = GpioLed("red LED", 17, pin_factory=factory)
    green = GpioLed("green LED", 27, pin_factory=factory)
    beeper = GpioBeeper("beeper", 22, pin_factory=factory)
    clock = SimClock(1.0)
    cfg = IndicatorsSection()
    scheduler = IndicatorScheduler(cfg)
    player = IndicatorPlayer(scheduler, red=red, green=green, beeper=beeper, clock=clock)
    red_pin, beeper_pin = factory.pin(17), factory.pin(22)
    task = asyncio.create_task(player.run())
    await asyncio.sleep(0.05)
    red_pin.clear_states()
    beeper_pin.clear_states()
    now = clock.monotonic()
    scheduler.set_led(now, LedPattern.RECORDING)
    scheduler.play(now, BeepPattern.START)
    player.wake()
    await asyncio.sleep(1.4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Red: on at once for 0.25 s, off until the next 1 s period.
    red_pin.assert_states_and_times([(0.0, False), (0.0, True), (0.25, False), (0.75, True)])
    # Two short beeps: 0.1 s on, 0.15 s gap, 0.1 s on.
    beeper_pin.assert_states_and_times(
        [(0.0, False), (0.0, True), (0.1, False), (0.15, True), (0.1, False)]
    )
    # assert_states_and_times zips: also make sure every expected change happened.
    assert len(red_pin.states) >= 4
    assert len(beeper_pin.states) >= 5
    for part in (red, green, beeper):
        part.close()
