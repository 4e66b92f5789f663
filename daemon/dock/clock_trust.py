"""Which dock may move the camera's clock, and how far (docs/protocol.md, "Clock trust").

A camera checks dock certificates against its own clock, so a dock that sets the clock far
wrong could lock every honest dock out ("certificate expired"). The rule:

1. A dock may only set a time inside its own certificate's validity window.
2. A time set on an unset clock is PROVISIONAL. It becomes CONFIRMED when a *different* dock
   sets a time within ``max_step_s`` of it. A clock that is set but was set by no dock (the
   system's own time source, a simulated board) also counts as provisional.
3. While provisional, certificate windows are not held against a dock (as when unset), and
   any dock may replace the time. Once confirmed, one TIME_SET moves the clock at most
   ``max_step_s``; a larger step is refused with the reason.
4. No TIME_SET sets the clock earlier than the floor: the newest time the camera has held
   with a confirmed clock (kept across restarts), less ``max_step_s`` for drift.

The state is one small JSON file in the camera's state directory, written durably.
:meth:`ClockTrust.source` is what each new clip records of it (the manifest's
``clock_source``, docs/evidence-format.md).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from bodycam.daemon.evidence.schema import MAX_DOCK_ID_CHARS, ClockSource

_log = logging.getLogger(__name__)

CLOCK_TRUST_FILE: Final = "clock_trust.json"
# The most one TIME_SET may move a confirmed clock, and how close two docks must agree.
MAX_CLOCK_STEP_S: Final = 120.0


class ClockStatus(enum.StrEnum):
    UNSET = "unset"
    PROVISIONAL = "provisional"
    CONFIRMED = "confirmed"


class ClockRefused(Exception):  # noqa: N818 - a refusal with its reason, not a fault
    """A TIME_SET the clock-trust rule does not allow; the message says why (one line)."""


@dataclass(frozen=True)
class ClockRecord:
    """What the camera remembers about its clock (persisted)."""

    status: ClockStatus = ClockStatus.UNSET
    set_by: str | None = None  # the dock whose TIME_SET was applied last
    confirmed_by: str | None = None  # the dock that confirmed it (None unless confirmed)
    offset_s: float | None = None  # the last correction applied
    floor_utc_s: float | None = None  # never set earlier than this (minus the step)
    # The dock whose provisional time ``confirmed_by`` agreed with (None unless confirmed).
    confirmed_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ClockRecord:
        if not isinstance(data, dict):
            raise TypeError("not an object")

        def text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{key} is not a string")
            return value[:64] if value is not None else None

        def number(key: str) -> float | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{key} is not a number")
            return float(value)

        return cls(
            status=ClockStatus(data.get("status", "unset")),
            set_by=text("set_by"),
            confirmed_by=text("confirmed_by"),
            offset_s=number("offset_s"),
            floor_utc_s=number("floor_utc_s"),
            confirmed_from=text("confirmed_from"),
        )


@dataclass(frozen=True)
class ClockDecision:
    """An allowed TIME_SET: the status the clock will have once it is applied."""

    status: ClockStatus
    dock_id: str
    utc: dt.datetime


class ClockTrust:
    """Applies the clock-trust rule; shared by every dock session of a daemon.

    Args:
        path: The state file (``<state_dir>/clock_trust.json``); None keeps it in memory.
        max_step_s: See the module docstring.
    """

    def __init__(self, path: Path | None = None, *, max_step_s: float = MAX_CLOCK_STEP_S) -> None:
        self.path = path
        self.max_step_s = max_step_s
        self.record = self._load()
        # TIME_SETs applied since this daemon started (a clip records the count).
        self.corrections = 0

    def _load(self) -> ClockRecord:
        if self.path is None:
            return ClockRecord()
        try:
            return ClockRecord.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return ClockRecord()
        except (OSError, ValueError, TypeError) as exc:
            _log.warning("clock trust: ignoring %s: %s", self.path, exc)
            return ClockRecord()

    def status(self, clock_is_set: bool) -> ClockStatus:
        """The clock's status now: unset whatever the record says if the clock lost its time."""
        if not clock_is_set:
            return ClockStatus.UNSET
        if self.record.status is ClockStatus.UNSET:
            return ClockStatus.PROVISIONAL  # set, but by no dock
        return self.record.status

    def certificate_time(self, now: dt.datetime, clock_is_set: bool) -> dt.datetime | None:
        """The time to check certificate windows against; None unless the clock is confirmed."""
        return now if self.status(clock_is_set) is ClockStatus.CONFIRMED else None

    def check(
        self,
        *,
        dock_id: str,
        not_before_s: int,
        not_after_s: int,
        utc: dt.datetime,
        now: dt.datetime,
        clock_is_set: bool,
    ) -> ClockDecision:
        """Whether ``dock_id`` (certified for ``not_before_s..not_after_s``) may set ``utc``.

        Raises:
            ClockRefused: The rule forbids it; the message names the reason.
        """
        stamp = utc.timestamp()
        shown = f"{utc:%Y-%m-%dT%H:%M:%SZ}"
        if not not_before_s <= stamp <= not_after_s:
            raise ClockRefused(
                f"dock {dock_id!r} sent {shown}, outside its own certificate "
                f"({_iso(not_before_s)} .. {_iso(not_after_s)})"
            )
        floor = self.record.floor_utc_s
        if floor is not None and stamp < floor - self.max_step_s:
            raise ClockRefused(
                f"dock {dock_id!r} sent {shown}, earlier than {_iso(floor)}, a time this "
                "camera has already held with a confirmed clock"
            )
        status = self.status(clock_is_set)
        step = (utc - now).total_seconds()
        if status is ClockStatus.UNSET:
            return ClockDecision(ClockStatus.PROVISIONAL, dock_id, utc)
        if status is ClockStatus.PROVISIONAL:
            agrees = abs(step) <= self.max_step_s
            other = self.record.set_by is not None and dock_id != self.record.set_by
            confirmed = ClockStatus.CONFIRMED if agrees and other else ClockStatus.PROVISIONAL
            return ClockDecision(confirmed, dock_id, utc)
        if abs(step) > self.max_step_s:
            raise ClockRefused(
                f"dock {dock_id!r} would move the confirmed clock by {step:+.0f} s; at most "
                f"{self.max_step_s:.0f} s per TIME_SET"
            )
        return ClockDecision(ClockStatus.CONFIRMED, dock_id, utc)

    def applied(self, decision: ClockDecision, offset_s: float) -> ClockRecord:
        """Record a TIME_SET that ``check`` allowed and the clock then took; returns the record."""
        old = self.record
        record = replace(old, status=decision.status, set_by=decision.dock_id, offset_s=offset_s)
        if decision.status is ClockStatus.CONFIRMED:
            if old.status is not ClockStatus.CONFIRMED:
                record = replace(record, confirmed_by=decision.dock_id, confirmed_from=old.set_by)
            stamp = decision.utc.timestamp()
            record = replace(record, floor_utc_s=max(stamp, old.floor_utc_s or stamp))
        else:
            record = replace(record, confirmed_by=None, confirmed_from=None)
        self.record = record
        self.corrections += 1
        self._save()
        return record

    def source(self, clock_is_set: bool) -> ClockSource:
        """What a clip starting now records about its clock; never raises.

        The record may come from a damaged file, so every value is bounded here: a clip is
        never refused for the sake of its metadata.
        """
        status = self.status(clock_is_set)
        count = min(self.corrections, 0xFFFF_FFFF)
        if status is ClockStatus.UNSET:
            # Whatever the record says, the time these clips carry was set by no dock.
            return ClockSource(
                status="unset",
                set_by=None,
                confirmed_by=None,
                corrected_by=None,
                offset_s=None,
                corrections=count,
            )
        record = self.record
        confirmed = status is ClockStatus.CONFIRMED
        return ClockSource(
            status="confirmed" if confirmed else "provisional",
            set_by=_dock(record.confirmed_from if confirmed else record.set_by),
            confirmed_by=_dock(record.confirmed_by) if confirmed else None,
            corrected_by=_dock(record.set_by),
            offset_s=record.offset_s if _finite(record.offset_s) else None,
            corrections=count,
        )

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(self.record.to_json(), f)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            # The clock itself is set; only what the camera remembers of it is not.
            _log.warning("clock trust: cannot store %s: %s", self.path, exc)


def _dock(dock_id: str | None) -> str | None:
    return dock_id[:MAX_DOCK_ID_CHARS] if dock_id else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _iso(stamp: float) -> str:
    try:
        return f"{dt.datetime.fromtimestamp(stamp, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
    except (OverflowError, OSError, ValueError):
        return f"{stamp:.0f} s"


__all__ = [
    "CLOCK_TRUST_FILE",
    "MAX_CLOCK_STEP_S",
    "ClockDecision",
    "ClockRecord",
    "ClockRefused",
    "ClockStatus",
    "ClockTrust",
]
