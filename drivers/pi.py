"""The Raspberry Pi board: picamera2, gpiozero on lgpio, USB gadget serial, fuel gauge.

Not yet available: the real drivers land with the hardware issue. Until then the daemon
says so clearly instead of failing inside a hardware library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from bodycam.drivers.interfaces import BackendUnavailableError

if TYPE_CHECKING:
    from bodycam.daemon.config import Config


def build_pi_board(config: Config) -> NoReturn:
    raise BackendUnavailableError(
        "device.board = 'pi': the Raspberry Pi drivers (picamera2, GPIO, fuel gauge, USB "
        "gadget) are not yet available in this release; use board = 'sim' "
        "(or BODYCAM_BOARD=sim) to run on the simulated board"
    )
