"""A device clock that can run faster than real time.

Simulated time is real time multiplied by ``speed``: every sleep, timeout and timestamp in
the daemon goes through the clock, so a 12-hour shift plays out in minutes without any part
of the daemon knowing. The clock also plays the real-time clock's faults: it can start
"not set" (a camera that has never been docked), and the dock can set it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

# Start the monotonic domain away from zero so that "0" is never a valid timestamp.
_MONO_ORIGIN = 1000.0
_UNSET_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class SimClock:
    """Scaled monotonic and UTC time; implements ``bodycam.drivers.interfaces.Clock``."""

    def __init__(
        self,
        speed: float = 1.0,
        *,
        utc_start: dt.datetime | None = None,
        clock_set: bool = True,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._lock = threading.Lock()
        self._real0 = time.perf_counter()
        self._mono0 = _MONO_ORIGIN
        self._is_set = clock_set
        if utc_start is None:
            utc_start = dt.datetime.now(dt.UTC) if clock_set else _UNSET_EPOCH
        self._utc0 = utc_start

    @property
    def speed(self) -> float:
        return self._speed

    def monotonic(self) -> float:
        with self._lock:
            return self._mono0 + (time.perf_counter() - self._real0) * self._speed

    def utc_now(self) -> dt.datetime:
        return self._utc0 + dt.timedelta(seconds=self.monotonic() - _MONO_ORIGIN)

    def is_set(self) -> bool:
        return self._is_set

    def set_utc(self, utc: dt.datetime) -> float:
        """Set wall-clock time (as the dock does); returns the correction applied, in seconds."""
        offset = (utc - self.utc_now()).total_seconds()
        self._utc0 += dt.timedelta(seconds=offset)
        self._is_set = True
        return offset

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time takes in real time."""
        return max(0.0, sim_seconds) / self._speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.wall_seconds(seconds))

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling (non-loop) thread for ``seconds`` of simulated time."""
        time.sleep(self.wall_seconds(seconds))
