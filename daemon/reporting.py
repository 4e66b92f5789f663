"""What the camera tells the outside world: telemetry events and state, and its faulty parts.

Kept out of :mod:`bodycam.daemon.device` so the device wires parts together and this module
says what is reported: which state changes are events (and which of them are critical, so
they are the last to be dropped from a full queue), and how part faults are tracked.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Protocol

from bodycam.daemon import state_machine as sm
from bodycam.daemon.status import DeviceStatus

log = logging.getLogger(__name__)


class TelemetrySink(Protocol):
    """Where the camera reports to (``bodycam.daemon.telemetry.publisher.Telemetry``).

    Both calls return at once and never raise: recording never waits for telemetry.
    """

    def set_state(self, state: dict[str, Any]) -> None: ...

    def event(
        self, kind: str, data: dict[str, Any] | None = None, *, critical: bool = True
    ) -> None: ...

    async def run(self) -> None: ...

    def close(self) -> None: ...


class Reporter:
    """Turns the device's changes into telemetry; does nothing without a sink."""

    def __init__(self, sink: TelemetrySink | None) -> None:
        self.sink = sink

    def event(self, kind: str, *, critical: bool = True, **data: Any) -> None:
        if self.sink is not None:
            self.sink.event(kind, data, critical=critical)

    def state(self, status: DeviceStatus) -> None:
        if self.sink is not None:
            self.sink.set_state(asdict(status))

    def state_changed(self, change: sm.StateChanged) -> None:
        """Every change (not critical: the state topic has it too); recording start/stop are."""
        old, new = change.old, change.new
        self.event("state", critical=False, old=old.name, new=new.name, reason=change.reason)
        if new == sm.State.RECORDING:
            self.event("recording_started", reason=change.reason)
        elif old == sm.State.RECORDING:
            self.event("recording_stopped", reason=change.reason)


class FaultBook:
    """Which parts are failing now, each with the message that names its config key."""

    def __init__(self, at_start: list[str]) -> None:
        self._faults = {f"board:{i}": message for i, message in enumerate(at_start)}

    @property
    def active(self) -> bool:
        return bool(self._faults)

    def messages(self) -> list[str]:
        return sorted(self._faults.values())

    def update(self, part: str, problem: str | None) -> bool:
        """Record ``part``'s problem (None: fixed); True when "any fault" flipped."""
        before = self.active
        if problem is None:
            if self._faults.pop(part, None) is not None:
                log.info("%s: working again", part)
        elif self._faults.get(part) != problem:
            log.error("%s", problem)
            self._faults[part] = problem
        return self.active != before
