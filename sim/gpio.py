"""Simulated GPIO: gpiozero's MockFactory with pins that also log simulated time.

gpiozero's MockPin records each change with real-time gaps, which is what its
``assert_states_and_times`` checks. The simulator runs faster than real time, so each pin
here also keeps a timeline in the board clock's seconds: the same LED and beeper code drives
them, and a test reads the timeline the officer would have seen.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from bodycam.drivers.interfaces import Clock

# A blinking LED changes state twice a second: keep about a day of changes per pin, so a
# simulated camera running for weeks (or thousands of them) does not grow without bound.
MAX_CHANGES = 200_000


class TimelinePin(MockPWMPin):  # type: ignore[misc]
    """A mock pin (PWM-capable, for a tone beeper) that also records its changes.

    Each change is kept as ``(clock seconds, state)``.
    """

    clock: Clock  # set on the per-board subclass made by ``make_factory``

    def __init__(self, factory: Any, info: Any) -> None:
        self.timeline: deque[tuple[float, bool]] = deque(maxlen=MAX_CHANGES)
        self._timeline_lock = threading.Lock()
        super().__init__(factory, info)

    def _change_state(self, value: bool) -> bool:
        changed = bool(super()._change_state(value))
        if changed:
            with self._timeline_lock:
                # A PWM beeper's duty cycle counts as "sounding" when it is not zero.
                self.timeline.append((self.clock.monotonic(), bool(value)))
            # gpiozero's own record (``states``) is a plain list: trim it the same way.
            if len(self.states) > MAX_CHANGES:
                del self.states[: len(self.states) - MAX_CHANGES // 2]
        return changed

    def timeline_since(self, t0: float) -> list[tuple[float, bool]]:
        with self._timeline_lock:
            return [(t, state) for t, state in self.timeline if t >= t0]


def make_factory(clock: Clock) -> MockFactory:
    """A MockFactory whose pins keep a timeline in ``clock`` time."""
    pin_class = type("BoardTimelinePin", (TimelinePin,), {"clock": clock})
    return MockFactory(pin_class=pin_class)


class SimWorld:
    """The outside world of the simulated board: an officer's hand on the buttons.

    ``pins`` maps part names (``red_led``, ``trigger:holster``) to the board's pins, as
    :func:`bodycam.drivers.gpio_parts.pin_map` gives them from the config.
    """

    def __init__(self, factory: MockFactory, pins: dict[str, int]) -> None:
        self._factory = factory
        self._pins = dict(pins)

    def has(self, part: str) -> bool:
        return part in self._pins

    def pin(self, part: str) -> TimelinePin:
        try:
            number = self._pins[part]
        except KeyError:
            raise KeyError(f"the simulated board has no {part} (not in [pins])") from None
        pin: TimelinePin = self._factory.pin(number)
        return pin

    def set_input(self, part: str, active: bool) -> None:
        # Inputs are wired to ground with a pull-up: active means the pin is driven low.
        pin = self.pin(part)
        if active:
            pin.drive_low()
        else:
            pin.drive_high()
