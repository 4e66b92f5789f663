"""What the acceptance suite may ask of a camera on a rig, whatever the rig is made of.

A rig is the camera plus the equipment around it: something to press the record button,
something to watch the red LED and the beeper, a dock port, and a way to cut the power. On
the simulator each of these is the simulated board's own part; on a bench they are labgrid
drivers (a GPIO, a logic analyser, a USB hub port, a relay). Tests are written against
:class:`CameraRig` only, so that one test body runs on both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from bodycam.daemon.config import Config

# Output name -> (seconds since the watch started, on) changes; the first entry of each list
# is the state at 0.0, so a line that never changed still says what it was.
Edges = dict[str, list[tuple[float, bool]]]
OUTPUTS = ("red", "green", "beeper")


T = TypeVar("T")


class MissingPart(Exception):  # noqa: N818 (a reason to skip, not an error)
    """The rig lacks a part a test needs; the message names it and how to add it."""


class RigError(Exception):
    """The rig could not do what was asked in time (a camera that never enumerates...)."""


@dataclass(frozen=True)
class CameraIdentity:
    """Which camera is on the rig, and which force it answers to."""

    device_id: str
    device_pub: Path  # the camera's public key, as the force enrolled it
    authority_key: Path  # the test force's dock-authority private key (signs dock certificates)


@dataclass(frozen=True)
class RigTimeouts:
    """How long a rig waits for the camera; a bench's camera boots far slower than the sim."""

    boot_s: float = 30.0  # power on -> the daemon shows its ready blink
    enumerate_s: float = 20.0  # docked -> the dock port exists on the dock host
    session_s: float = 120.0  # one whole docking session (offload included)


class IndicatorWatch(Protocol):
    """A capture of the LED and beeper lines, running until ``stop``."""

    def stop(self) -> Edges:
        """End the capture; the changes seen, per output (see :data:`Edges`)."""
        ...


class CameraRig(Protocol):
    """A camera the suite can press, watch, dock and power-cycle."""

    name: str  # for reports: which rig and which camera
    identity: CameraIdentity
    config: Config  # the config the camera runs with: the timings the suite expects
    timeouts: RigTimeouts
    timing_tolerance_s: float  # how far an observed edge may be from its expected time

    def set_button(self, pressed: bool) -> None:
        """Hold the record button down (True) or let it go (False)."""
        ...

    def watch_indicators(self) -> IndicatorWatch:
        """Start capturing the outputs. Raises MissingPart without a probe."""
        ...

    def dock(self) -> str:
        """Seat the camera; the port the dock opens once it enumerates (path or URL).

        Raises:
            MissingPart: The rig cannot dock the camera.
            RigError: The port did not appear within ``timeouts.enumerate_s``.
        """
        ...

    def undock(self) -> None:
        """Lift the camera out of the dock (no-op when it is not docked)."""
        ...

    def power(self, on: bool) -> None:
        """Cut (False) or restore (True) the camera's power. Raises MissingPart without it."""
        ...

    def close(self) -> None:
        """Leave the camera undocked, powered down or stopped, and release the equipment."""
        ...


def needs_part(part: Callable[[], T]) -> T:
    """Run a rig call, skipping the test (with the rig's reason) if the rig lacks the part."""
    try:
        return part()
    except MissingPart as exc:
        pytest.skip(str(exc))
