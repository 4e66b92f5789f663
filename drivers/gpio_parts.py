"""The GPIO parts of a board (LEDs, beeper, buttons, triggers), built from ``[pins]``.

One assembly for the Pi and the simulator: only the pin factory differs (lgpio on a Pi,
gpiozero's MockFactory in the simulator), so the simulator's LED and beep timelines are the
ones a camera's pins go through.

A part that cannot be opened (a pin another program holds, a pin the board lacks) does not
stop the camera: it is replaced by a stand-in that does nothing, and the fault, naming the
part and its config key, is reported so the daemon can warn the officer and keep recording.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bodycam.drivers.gpio import GpioBeeper, GpioInput, GpioLed, GpioToneBeeper
from bodycam.drivers.interfaces import Beeper, DigitalInput, HardwareError, Led

if TYPE_CHECKING:
    from bodycam.daemon.config import PinsSection

log = logging.getLogger(__name__)


def pin_map(pins: PinsSection) -> dict[str, int]:
    """Part name (``red_led``, ``trigger:holster``) to BCM pin, for every wired part."""
    return {(key.replace("triggers.", "trigger:")): pin for key, pin in pins.assigned()}


class MissingOutput:
    """Stands in for an LED or beeper that could not be opened: remembers, drives nothing."""

    def __init__(self) -> None:
        self._on = False

    def on(self) -> None:
        self._on = True

    def off(self) -> None:
        self._on = False

    @property
    def is_lit(self) -> bool:
        return self._on

    @property
    def is_active(self) -> bool:
        return self._on


class MissingInput:
    """Stands in for an input that could not be opened: it never changes."""

    def __init__(self, name: str, *, active: bool = False) -> None:
        self._name = name
        self._active = active

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_active(self) -> bool:
        return self._active

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None:
        """Nothing will ever change."""


@dataclass
class GpioParts:
    """What ``build_gpio_parts`` opened, the faults it met, and how to release the pins."""

    red_led: Led
    green_led: Led
    beeper: Beeper
    record_button: DigitalInput
    function_button: DigitalInput | None
    power_switch: DigitalInput | None
    triggers: list[DigitalInput]
    faults: list[str] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)


def build_gpio_parts(pins: PinsSection, *, debounce_s: float, pin_factory: Any = None) -> GpioParts:
    """Open every part ``pins`` wires; a part that fails becomes a stand-in and a fault."""
    faults: list[str] = []
    closers: list[Callable[[], None]] = []

    def opened(key: str, build: Callable[[], Any], missing: Callable[[], Any]) -> Any:
        try:
            part = build()
        except HardwareError as exc:
            message = f"{exc} (config pins.{key})"
            log.error("%s: running without it", message)
            faults.append(message)
            return missing()
        closers.append(part.close)
        return part

    def output(key: str, part: str, pin: int) -> Led:
        led: Led = opened(
            key,
            lambda: GpioLed(part, pin, pin_factory=pin_factory),
            MissingOutput,
        )
        return led

    def button(
        key: str, part: str, pin: int, debounce: float | None, *, missing_active: bool = False
    ) -> DigitalInput:
        found: DigitalInput = opened(
            key,
            lambda: GpioInput(part, pin, debounce_s=debounce, pin_factory=pin_factory),
            lambda: MissingInput(part, active=missing_active),
        )
        return found

    def beeper() -> Beeper:
        if pins.beeper_kind == "tone":
            hz = pins.beeper_tone_hz
            build: Callable[[], Any] = lambda: GpioToneBeeper(  # noqa: E731
                "beeper", pins.beeper, tone_hz=hz, pin_factory=pin_factory
            )
        else:
            build = lambda: GpioBeeper("beeper", pins.beeper, pin_factory=pin_factory)  # noqa: E731
        found: Beeper = opened("beeper", build, MissingOutput)
        return found

    parts = GpioParts(
        red_led=output("red_led", "red LED", pins.red_led),
        green_led=output("green_led", "green LED", pins.green_led),
        beeper=beeper(),
        record_button=button("record_button", "record button", pins.record_button, debounce_s),
        function_button=(
            None
            if pins.function_button is None
            else button("function_button", "function button", pins.function_button, debounce_s)
        ),
        # The power switch is a slide switch: no debounce delay on turning off. One that
        # cannot be read counts as on: a camera must not be unable to record.
        power_switch=(
            None
            if pins.power_switch is None
            else button(
                "power_switch", "power switch", pins.power_switch, None, missing_active=True
            )
        ),
        triggers=[
            button(f"triggers.{name}", f"trigger:{name}", pin, debounce_s)
            for name, pin in sorted(pins.triggers.items())
        ],
    )
    parts.faults, parts.closers = faults, closers
    return parts
