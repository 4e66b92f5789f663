"""A battery that drains by what the camera is doing and charges on the dock.

Rates are chosen so a full battery lasts ``hours`` of recording (about 12 h on the reference
camera), longer when only buffering, and recharges in about two hours on the dock.
"""

from __future__ import annotations

import threading

from bodycam.drivers.interfaces import BatteryReading, Clock

# Share of the recording draw for each load (the fleet's battery model uses them too).
LOAD_FACTOR: dict[str, float] = {
    "recording": 1.0,
    "finalizing": 1.0,
    "buffering": 0.8,
    "asleep": 0.02,
    "off": 0.01,
}
CHARGE_PERCENT_PER_HOUR = 50.0


class SimBattery:
    """Implements Battery and PowerLoad; the world can set its level or plug in a charger."""

    def __init__(self, clock: Clock, *, percent: float = 100.0, hours: float = 12.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._percent = percent
        self._recording_rate = 100.0 / hours / 3600.0  # percent per second
        self._load = "off"
        self._charging = False
        self._t = clock.monotonic()

    def _advance(self) -> None:
        now = self._clock.monotonic()
        elapsed, self._t = now - self._t, now
        if self._charging:
            self._percent += elapsed * CHARGE_PERCENT_PER_HOUR / 3600.0
        else:
            self._percent -= elapsed * self._recording_rate * LOAD_FACTOR.get(self._load, 1.0)
        self._percent = min(100.0, max(0.0, self._percent))

    def read(self) -> BatteryReading:
        with self._lock:
            self._advance()
            return BatteryReading(percent=round(self._percent, 2), charging=self._charging)

    def set_load(self, load: str) -> None:
        with self._lock:
            self._advance()
            self._load = load

    def set_percent(self, percent: float) -> None:
        with self._lock:
            self._advance()
            self._percent = min(100.0, max(0.0, percent))

    def set_charging(self, charging: bool) -> None:
        with self._lock:
            self._advance()
            self._charging = charging
