"""The Raspberry Pi board: picamera2, gpiozero (lgpio), the fuel gauge, the USB gadget.

Each part comes from its config section ([camera], [pins], [battery], [gadget]). A part
that cannot be opened does not stop the camera: the GPIO parts become stand-ins, a missing
fuel gauge is retried at every reading, and the sensor is retried by the daemon with a
back-off; each such fault is logged naming the part and its config key, and the daemon
plays the hardware-fault warning. Only a broken config stops the daemon, at start, with one
line naming the key.

``PiPaths`` names the kernel interfaces the board reads (sysfs), so that the whole board can
run in a test against fake trees, with gpiozero's MockFactory and a fake picamera2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodycam.drivers.gadget_dock import GadgetDockPort
from bodycam.drivers.gpio_parts import build_gpio_parts
from bodycam.drivers.interfaces import Battery, BatteryReading, Board, HardwareError
from bodycam.drivers.picamera import PiCamera
from bodycam.drivers.power_supply import PowerSupplyBattery
from bodycam.drivers.storage import VolumeStorage
from bodycam.drivers.system_clock import BOOT_ID_PATH, TIMESYNC_FLAG, SystemClock

if TYPE_CHECKING:
    from bodycam.daemon.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PiPaths:
    """The kernel interfaces the board reads; a test points them at fake trees."""

    power_supply: Path = Path("/sys/class/power_supply")
    udc_class: Path = Path("/sys/class/udc")
    boot_id: Path = BOOT_ID_PATH
    timesync_flag: Path = TIMESYNC_FLAG


class GaugeWhenPresent:
    """The fuel gauge, opened on first use and again after it vanished.

    A gauge missing at boot (a HAT not seated, a driver still probing) or one that drops
    off the I2C bus mid-shift raises HardwareError at each reading, which the daemon turns
    into the hardware-fault warning; it recovers by itself when the gauge answers again.
    """

    def __init__(self, root: Path, supply: str | None, charger: str | None) -> None:
        self._root, self._supply, self._charger = root, supply, charger
        self._gauge: PowerSupplyBattery | None = None

    def read(self) -> BatteryReading:
        if self._gauge is None:
            self._gauge = PowerSupplyBattery(self._root, self._supply, self._charger)
        try:
            return self._gauge.read()
        except HardwareError:
            self._gauge = None
            raise


def build_pi_board(
    config: Config, *, pin_factory: Any = None, paths: PiPaths | None = None
) -> Board:
    """Assemble the camera on a Pi from ``config``; faults in parts are reported, not fatal.

    Args:
        config: The device config.
        pin_factory: gpiozero's pin factory; None is gpiozero's default (lgpio on a Pi).
        paths: Where sysfs is (tests use fake trees).
    """
    paths = paths or PiPaths()
    parts = build_gpio_parts(
        config.pins, debounce_s=config.buttons.debounce_s, pin_factory=pin_factory
    )
    cam = config.camera
    camera = PiCamera(
        config.video.format(),
        camera_index=cam.index,
        stall_timeout_s=cam.stall_timeout_s,
        hflip=cam.hflip,
        vflip=cam.vflip,
    )
    battery: Battery = GaugeWhenPresent(
        paths.power_supply, config.battery.supply or None, config.battery.charger or None
    )
    g = config.gadget
    dock = GadgetDockPort(
        tty=g.tty,
        udc_class=paths.udc_class,
        udc=g.udc or None,
        detect=g.detect,
        vbus_supply=paths.power_supply / g.vbus_supply if g.vbus_supply else None,
        poll_s=g.poll_s,
    )
    clock = SystemClock(
        config.device.state_dir / "clock.json",
        boot_id_path=paths.boot_id,
        synchronized_flag=paths.timesync_flag,
    )
    board = Board(
        name="pi",
        camera=camera,
        red_led=parts.red_led,
        green_led=parts.green_led,
        beeper=parts.beeper,
        record_button=parts.record_button,
        battery=battery,
        clock=clock,
        storage=VolumeStorage(config.clips_dir),
        triggers=parts.triggers,
        function_button=parts.function_button,
        power_switch=parts.power_switch,
        dock=dock,
        faults=list(parts.faults),
    )
    board.services.append(("gadget-dock", dock.run))

    def gadget_fault() -> str | None:
        error = dock.tty_error
        return None if error is None else str(error)

    board.fault_checks.append(("gadget", gadget_fault))
    board.closers.extend(parts.closers)
    board.closers.append(dock.close)
    return board
