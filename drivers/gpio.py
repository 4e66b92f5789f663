"""LED, beeper and inputs on gpiozero: one driver for the Pi and the simulated board.

The only difference between a camera and the simulator is the pin factory: lgpio on a Pi,
gpiozero's MockFactory in ``bodycam.sim``. gpiozero errors (a pin already in use, an unknown
pin) become HardwareError naming the part, so the daemon can say which config key to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gpiozero

from bodycam.drivers.interfaces import HardwareError

log = logging.getLogger(__name__)


def _open(part: str, pin: int | str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except gpiozero.GPIOZeroError as exc:
        raise HardwareError(f"{part} (pin {pin}): {exc}") from None


class _GpioOutput:
    """One output pin, off at start; the gpiozero class says what hangs on it."""

    _device_class: Any

    def __init__(self, part: str, pin: int | str, *, pin_factory: Any = None) -> None:
        device_class = self._device_class
        self._device = _open(
            part, pin, lambda: device_class(pin, initial_value=False, pin_factory=pin_factory)
        )

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    def close(self) -> None:
        self._device.close()


class GpioLed(_GpioOutput):
    """An indicator LED on one output pin."""

    _device_class = gpiozero.LED

    @property
    def is_lit(self) -> bool:
        return bool(self._device.is_lit)


class GpioBeeper(_GpioOutput):
    """An active buzzer: sounds while its pin is high."""

    _device_class = gpiozero.Buzzer

    @property
    def is_active(self) -> bool:
        return bool(self._device.is_active)


class GpioToneBeeper:
    """A passive piezo: a PWM square wave at ``tone_hz`` (half duty) while it sounds."""

    def __init__(
        self, part: str, pin: int | str, *, tone_hz: float, pin_factory: Any = None
    ) -> None:
        self._device = _open(
            part,
            pin,
            lambda: gpiozero.PWMOutputDevice(
                pin, initial_value=0, frequency=tone_hz, pin_factory=pin_factory
            ),
        )

    def on(self) -> None:
        self._device.value = 0.5

    def off(self) -> None:
        self._device.value = 0

    @property
    def is_active(self) -> bool:
        return bool(self._device.value)

    def close(self) -> None:
        self._device.close()


class GpioInput:
    """A button or switch to ground (internal pull-up), debounced by gpiozero."""

    def __init__(
        self,
        name: str,
        pin: int | str,
        *,
        debounce_s: float | None = None,
        pin_factory: Any = None,
    ) -> None:
        self._name = name
        self._handler: Callable[[bool], None] | None = None
        self._button = _open(
            name,
            pin,
            lambda: gpiozero.Button(
                pin, pull_up=True, bounce_time=debounce_s or None, pin_factory=pin_factory
            ),
        )
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_active(self) -> bool:
        return bool(self._button.is_pressed)

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None:
        self._handler = on_change

    def _pressed(self) -> None:
        handler = self._handler
        if handler is not None:
            handler(True)

    def _released(self) -> None:
        handler = self._handler
        if handler is not None:
            handler(False)

    def close(self) -> None:
        self._handler = None
        self._button.close()
