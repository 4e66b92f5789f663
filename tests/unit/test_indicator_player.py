"""The indicator player on a real (sped-up) SimClock with recording fake outputs.

The checks are about order and phase: an edge is never applied before its scheduled time, and
the player keeps up with the schedule; the tolerance is generous for loaded CI machines.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bodycam.daemon.config import Config
from bodycam.daemon.indicator_player import IndicatorPlayer
from bodycam.daemon.indicators import (
    BeepPattern,
    Edge,
    IndicatorScheduler,
    LedPattern,
    Output,
    timeline,
)
from bodycam.sim.clock import SimClock

CFG = Config().indicators
SPEED = 10.0
# Lateness allowed, in simulated seconds (30 ms of real time at SPEED).
LATE_S = 0.3

Record = tuple[float, Output, bool]


class FakeOutput:
    """An LED or beeper that logs (device time, output, state) on every call."""

    def __init__(self, name: Output, clock: SimClock, log: list[Record]) -> None:
        self._name: Output = name
        self._clock = clock
        self._log = log
        self._lit = False

    def on(self) -> None:
        self._lit = True
        self._log.append((self._clock.monotonic(), self._name, True))

    def off(self) -> None:
        self._lit = False
        self._log.append((self._clock.monotonic(), self._name, False))

    @property
    def is_lit(self) -> bool:
        return self._lit

    @property
    def is_active(self) -> bool:
        return self._lit


class CountingScheduler(IndicatorScheduler):
    """Counts how often the player looks at the schedule (to catch busy loops)."""

    def __init__(self) -> None:
        super().__init__(CFG)
        self.polls = 0

    def due(self, now: float) -> list[Edge]:
        self.polls += 1
        return super().due(now)


class Rig:
    def __init__(self, scheduler: IndicatorScheduler | None = None) -> None:
        self.clock = SimClock(SPEED)
        self.log: list[Record] = []
        self.red = FakeOutput("red", self.clock, self.log)
        self.green = FakeOutput("green", self.clock, self.log)
        self.beeper = FakeOutput("beeper", self.clock, self.log)
        self.scheduler = scheduler or IndicatorScheduler(CFG)
        self.player = IndicatorPlayer(
            self.scheduler, red=self.red, green=self.green, beeper=self.beeper, clock=self.clock
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.player.run(), name="indicator-player")

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def hops(n: int = 3) -> None:
    """Let the event loop run ``n`` rounds of ready callbacks (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_recorded_timeline_matches_the_scheduler() -> None:
    rig = Rig()
    rig.start()
    await hops()
    t0 = rig.clock.monotonic()
    commands: list[tuple[float, LedPattern | BeepPattern]] = [
        (t0, LedPattern.RECORDING),
        (t0, BeepPattern.START),
        (t0 + 1.1, BeepPattern.LOW_BATTERY),
    ]
    rig.scheduler.set_led(t0, LedPattern.RECORDING)
    rig.scheduler.play(t0, BeepPattern.START)
    rig.player.wake()
    await rig.clock.sleep(1.1)
    rig.scheduler.play(t0 + 1.1, BeepPattern.LOW_BATTERY)
    rig.player.wake()
    await rig.clock.sleep(2.0)
    t_end = rig.clock.monotonic()
    await rig.stop()

    expected = timeline(commands, t_end - LATE_S, CFG)
    assert len(expected) >= 15  # red blinks, 2 start beeps, 4 low-battery beeps
    actual = rig.log[: len(expected)]
    assert [(o, on) for _, o, on in actual] == [(e.output, e.on) for e in expected]
    for (t, _, _), edge in zip(actual, expected, strict=True):
        assert edge.t <= t <= edge.t + LATE_S, (edge, t)


async def test_wake_starts_a_new_pattern_without_waiting_for_the_sleep() -> None:
    rig = Rig()
    rig.start()
    rig.scheduler.set_led(rig.clock.monotonic(), LedPattern.BUFFERING)
    rig.player.wake()
    await rig.clock.sleep(0.5)  # green blinked; the player now sleeps ~2.5 s to the next one
    assert not rig.green.is_lit
    t1 = rig.clock.monotonic()
    rig.scheduler.set_led(t1, LedPattern.RECORDING)
    rig.player.wake()
    await hops()
    assert rig.red.is_lit
    await rig.stop()
    red_on = next(t for t, o, on in rig.log if o == "red" and on)
    assert t1 <= red_on < t1 + LATE_S


async def test_cancel_turns_every_output_off() -> None:
    rig = Rig()
    rig.start()
    now = rig.clock.monotonic()
    rig.scheduler.set_led(now, LedPattern.RECORDING)
    rig.scheduler.play(now, BeepPattern.STOP)
    rig.player.wake()
    await hops()
    assert rig.red.is_lit
    assert rig.beeper.is_active
    await rig.stop()
    assert not rig.red.is_lit
    assert not rig.green.is_lit
    assert not rig.beeper.is_active
    assert rig.task is not None
    assert rig.task.cancelled()


async def test_restarted_player_lights_the_current_pattern_again() -> None:
    rig = Rig()
    rig.start()
    t0 = rig.clock.monotonic()
    rig.scheduler.set_led(t0, LedPattern.RECORDING)
    rig.player.wake()
    await hops()
    await rig.stop()
    assert not rig.red.is_lit
    restarted = len(rig.log)
    rig.start()
    await rig.clock.sleep(1.1)  # inside the next red phase (t0 + 1.0 to t0 + 1.25)
    assert rig.red.is_lit
    first = rig.log[restarted]
    assert first[1:] == ("red", True)
    assert first[0] >= t0 + CFG.recording_led_period_s
    await rig.stop()


async def test_idle_player_waits_for_wake_without_polling() -> None:
    scheduler = CountingScheduler()
    rig = Rig(scheduler)
    rig.start()
    await hops(20)
    assert scheduler.polls == 1
    # Something far in the future: one more look, then a sleep, not a spin.
    scheduler.play(rig.clock.monotonic() + 100.0, BeepPattern.STOP)
    rig.player.wake()
    await hops(20)
    assert scheduler.polls == 2
    assert rig.log == []
    await rig.stop()


@pytest.mark.parametrize("pattern", [LedPattern.BUFFERING, LedPattern.RECORDING])
async def test_led_lights_within_a_loop_hop(pattern: LedPattern) -> None:
    rig = Rig()
    rig.start()
    await hops()
    rig.scheduler.set_led(rig.clock.monotonic(), pattern)
    rig.player.wake()
    await hops(2)
    lit = rig.red if pattern == LedPattern.RECORDING else rig.green
    assert lit.is_lit
    await rig.stop()
