"""The indicator player: applies the scheduler's edges to the LED and beeper drivers.

All timing lives in :class:`~bodycam.daemon.indicators.IndicatorScheduler`; the player only
sleeps until the next edge (in device-clock time, so a simulated clock's speed is honoured)
and switches outputs. ``wake()`` cuts a sleep short when a new pattern is set, so the red LED
lights within one event-loop hop of the decision to record.
"""

from __future__ import annotations

import asyncio
import logging

from bodycam.daemon.indicators import Edge, IndicatorScheduler
from bodycam.drivers.interfaces import Beeper, Clock, Led

log = logging.getLogger(__name__)


class IndicatorPlayer:
    """Plays an :class:`IndicatorScheduler` on real (or simulated) outputs.

    Must be used from one event loop: ``wake()`` is not thread-safe.
    """

    def __init__(
        self,
        scheduler: IndicatorScheduler,
        *,
        red: Led,
        green: Led,
        beeper: Beeper,
        clock: Clock,
    ) -> None:
        self._scheduler = scheduler
        self._outputs: dict[str, Led | Beeper] = {"red": red, "green": green, "beeper": beeper}
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Re-read the schedule now (call after ``set_led`` or ``play``)."""
        self._wake.set()

    def _apply(self, edge: Edge) -> None:
        output = self._outputs[edge.output]
        if edge.on:
            output.on()
        else:
            output.off()

    async def run(self) -> None:
        """Play edges until cancelled; every output is switched off on the way out."""
        try:
            while True:
                # Cleared before reading the schedule: a wake() from here on is not lost.
                self._wake.clear()
                for edge in self._scheduler.due(self._clock.monotonic()):
                    self._apply(edge)
                next_time = self._scheduler.next_time()
                if next_time is None:
                    await self._wake.wait()
                else:
                    await self._sleep_until(next_time)
        finally:
            self._all_off()

    async def _sleep_until(self, when: float) -> None:
        """Sleep on the device clock until ``when`` or until ``wake()``, whichever first."""
        delay = when - self._clock.monotonic()
        if delay <= 0:
            return
        sleeper = asyncio.create_task(self._clock.sleep(delay), name="indicator-sleep")
        # The wake event doubles as the sleeper's "done" signal: one wait covers both.
        sleeper.add_done_callback(self._on_slept)
        try:
            await self._wake.wait()
        finally:
            sleeper.cancel()

    def _on_slept(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self._wake.set()

    def _all_off(self) -> None:
        for name, output in self._outputs.items():
            try:
                output.off()
            except Exception:
                # One broken output must not keep the others lit.
                log.exception("cannot switch off the %s indicator", name)
        self._scheduler.assume_all_off()
