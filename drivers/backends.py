"""The backend table: which board the daemon drives, ``sim`` or ``pi``.

A backend's module is imported only once chosen, so hardware libraries (picamera2, lgpio)
are never imported on a laptop, and a missing one never breaks the simulator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from bodycam.drivers.interfaces import BackendUnavailableError, Board

if TYPE_CHECKING:
    from bodycam.daemon.config import Config

BACKENDS: dict[str, tuple[str, str]] = {
    "sim": ("bodycam.sim.board", "build_sim_board"),
    "pi": ("bodycam.drivers.pi", "build_pi_board"),
}


def load_board(config: Config) -> Board:
    """Build the board named by ``device.board`` (or BODYCAM_BOARD)."""
    name = config.device.board
    try:
        module_name, factory_name = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise BackendUnavailableError(
            f"device.board: unknown board {name!r} (known: {known})"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"device.board = {name!r}: its drivers cannot be loaded here ({exc})"
        ) from None
    factory = cast("Callable[[Config], Board]", getattr(module, factory_name))
    return factory(config)
