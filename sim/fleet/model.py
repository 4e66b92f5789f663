"""Battery and card of a fleet camera: straight lines between events, no threads, no files.

The simulator's ``SimBattery`` and ``SimStorage`` read a clock and the disk; a fleet camera
only ever knows the time of the event it is handling, so these models are evaluated at a
given time instead. The battery draws the same shares as ``bodycam.sim.battery``.
"""

from __future__ import annotations

import math

from bodycam.sim.battery import CHARGE_PERCENT_PER_HOUR, LOAD_FACTOR

# The simulator's shares of the recording draw by state, and its charge rate.
_LOAD_SHARE = LOAD_FACTOR
_CHARGE_PERCENT_PER_HOUR = CHARGE_PERCENT_PER_HOUR


class Battery:
    """State of charge: drains by load (percent per second), charges in the dock."""

    __slots__ = ("_charging", "_full_rate", "_load", "_percent", "_t")

    def __init__(self, percent: float, *, hours: float, t: float = 0.0) -> None:
        self._percent = min(100.0, max(0.0, percent))
        self._t = t
        self._full_rate = 100.0 / hours / 3600.0
        self._load = "off"
        self._charging = False

    @property
    def charging(self) -> bool:
        """True while on the dock's charger."""
        return self._charging

    def _rate(self) -> float:
        if self._charging:
            return _CHARGE_PERCENT_PER_HOUR / 3600.0
        return -self._full_rate * _LOAD_SHARE.get(self._load, 1.0)

    def percent(self, t: float) -> float:
        """The charge at ``t`` (not before the last change)."""
        value = self._percent + self._rate() * max(0.0, t - self._t)
        return min(100.0, max(0.0, value))

    def _settle(self, t: float) -> None:
        self._percent, self._t = self.percent(t), max(t, self._t)

    def set_load(self, t: float, load: str) -> None:
        """From ``t`` on the camera draws as in state ``load`` (``"recording"``...)."""
        self._settle(t)
        self._load = load

    def set_charging(self, t: float, charging: bool) -> None:
        """Put on or taken off the charger at ``t``."""
        self._settle(t)
        self._charging = charging


class Card:
    """The storage card: clip bytes from the bitrate, freed as the dock takes clips off."""

    __slots__ = ("_bps", "_clip", "_open_since", "_segment_s", "_stored", "reserve", "total")

    def __init__(
        self, total: int, *, reserve: int, bytes_per_s: float, segment_s: float = 2.0
    ) -> None:
        self.total = total
        self.reserve = reserve
        self._bps = bytes_per_s
        self._segment_s = segment_s
        self._stored = 0  # bytes of the sealed clips still on the card
        self._clip = 0.0  # bytes of the open clip
        self._open_since: float | None = None  # counted up to here while a clip is open

    def _room(self) -> float:
        return self.total - self._stored - self._clip

    @property
    def free_bytes(self) -> int:
        """Free space now (as last advanced)."""
        return max(0, int(self._room()))

    @property
    def full(self) -> bool:
        """Free space is down to the reserve (the daemon's ``StorageChanged(full)``)."""
        # A byte of slack: the crossing time is computed in floats.
        return self._room() <= self.reserve + 1

    def advance(self, t: float) -> None:
        """Count the open clip's bytes up to ``t`` (a full card takes no more)."""
        if self._open_since is not None and t > self._open_since:
            self._clip += min((t - self._open_since) * self._bps, max(0.0, self._room()))
            self._open_since = t

    def full_at(self, already_full: bool) -> float | None:
        """When the open clip brings free space down to the reserve (None: not recording)."""
        if self._open_since is None or already_full or self._bps <= 0:
            return None
        return self._open_since + max(0.0, self._room() - self.reserve) / self._bps

    def open_clip(self, t: float, pre_event_s: float) -> None:
        """A clip starts at ``t`` with ``pre_event_s`` seconds already buffered."""
        self._open_since = t
        self._clip = 0.0
        self._clip = min(pre_event_s * self._bps, max(0.0, self._room()))

    def close_clip(self, t: float) -> tuple[int, int]:
        """Seal the open clip at ``t``; returns its size in bytes and segment count."""
        self.advance(t)
        self._open_since = None
        size = round(self._clip)
        self._stored += size
        self._clip = 0.0
        seconds = size / self._bps if self._bps > 0 else 0.0
        return size, max(1, math.ceil(seconds / self._segment_s))

    def free(self, size: int) -> None:
        """A clip of ``size`` bytes left the card (the dock committed it)."""
        self._stored = max(0, self._stored - size)
