"""The hardware edge: small interfaces the daemon drives, real and simulated alike.

The daemon imports only this module from ``bodycam.drivers``. Real implementations (picamera2,
gpiozero on lgpio, sysfs power supply) and simulated ones (``bodycam.sim``) satisfy these
protocols structurally; no inheritance is needed.

Threading contract: input callbacks (:class:`DigitalInput`) may be called from any thread
(gpiozero calls them from its own); the daemon hops them onto its event loop. Everything
else is called from the daemon's event loop thread and must not block for long.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self


class HardwareError(Exception):
    """A part is missing or misbehaves; the message names the part and the config key."""


class CameraError(HardwareError):
    """The sensor failed to start or stopped delivering frames."""


class BackendUnavailableError(HardwareError):
    """The chosen board backend cannot be used on this machine."""


class LinkClosedError(HardwareError):
    """The serial link to the dock (or to the camera) is gone: unplugged, hung up, closed."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded H.264 access unit as the encoder hands it out.

    Attributes:
        data: Annex B bytes (start codes included). A keyframe carries SPS/PPS in band, so
            any run of frames that starts at a keyframe decodes on its own.
        keyframe: True for an IDR frame.
        timestamp_us: Sensor timestamp in microseconds, in the board clock's monotonic domain.
    """

    data: bytes
    keyframe: bool
    timestamp_us: int


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """What the encoder produces."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 8_000_000
    gop: int = 30  # frames between keyframes

    @property
    def frame_interval_us(self) -> int:
        return round(1_000_000 / self.fps)


class Camera(Protocol):
    """Source of encoded video frames. ``async with camera`` is "sensor on"; re-enterable."""

    @property
    def video_format(self) -> VideoFormat: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def frames(self) -> AsyncIterator[EncodedFrame]:
        """Yield frames until the camera is stopped; raise CameraError if the sensor stalls."""
        ...


class Led(Protocol):
    """One indicator LED."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    @property
    def is_lit(self) -> bool: ...


class Beeper(Protocol):
    """The recording beeper (a buzzer or a PWM tone)."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    @property
    def is_active(self) -> bool: ...


class DigitalInput(Protocol):
    """A button or trigger input (holster, vehicle, weapon signal, power switch).

    ``on_change(active)`` is called from any thread on every debounced edge.
    """

    @property
    def name(self) -> str: ...

    @property
    def is_active(self) -> bool: ...

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None: ...


@dataclass(frozen=True, slots=True)
class BatteryReading:
    percent: float
    charging: bool
    present: bool = True


class Battery(Protocol):
    def read(self) -> BatteryReading: ...


class Clock(Protocol):
    """Time as the device sees it. The simulator's runs faster than real time."""

    def monotonic(self) -> float:
        """Seconds, never going backwards; camera timestamps are in this domain."""
        ...

    def utc_now(self) -> dt.datetime:
        """Wall-clock UTC (timezone-aware); may be wrong when ``is_set`` is False."""
        ...

    def is_set(self) -> bool:
        """False while the real-time clock has never been set (no dock, no RTC battery)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def set_utc(self, utc: dt.datetime) -> float:
        """Set wall-clock time (the dock does, at docking); returns the correction in seconds.

        Raises:
            HardwareError: The clock cannot be set (no permission, no RTC).
        """
        ...


@dataclass(frozen=True, slots=True)
class StorageUsage:
    total_bytes: int
    free_bytes: int


class Storage(Protocol):
    """The evidence volume."""

    @property
    def root(self) -> Path: ...

    def usage(self) -> StorageUsage: ...

    def check_write(self, nbytes: int) -> None:
        """Raise ``OSError(ENOSPC)`` if ``nbytes`` more would not fit (as a full card would)."""
        ...


class ByteLink(Protocol):
    """One open serial link: the camera's gadget port, the dock's port, or a pseudo-terminal.

    Bytes only; framing is :mod:`bodycam.drivers.link`'s job. Both calls are made from the
    event loop thread. ``write`` is the back-pressure point: it returns only when the kernel
    has taken every byte, so nothing queues in user space without bound.
    """

    @property
    def name(self) -> str:
        """The port's path (``/dev/ttyGS0``, ``/dev/bodycam/<serial>``, ``/dev/pts/7``)."""
        ...

    async def read(self) -> bytes:
        """Some bytes (at least one, at most the driver's read size), waiting for them.

        Raises:
            LinkClosedError: The peer hung up or the device vanished (never returns b"").
        """
        ...

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        """Write every chunk, in order, as one gathered write where the OS allows it.

        Raises:
            LinkClosedError: The peer hung up or the device vanished.
        """
        ...

    def close(self) -> None:
        """Release the port; safe to call twice. Pending reads/writes raise LinkClosedError."""
        ...


class DockPort(Protocol):
    """The camera's side of the dock: whether it is docked, and the link while it is.

    On a Pi the presence comes from the USB device controller's state (``configured``) or
    VBUS, and the link is the gadget's CDC-ACM port; the simulator plugs a pseudo-terminal.
    """

    @property
    def docked(self) -> bool: ...

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None:
        """``on_change(docked)`` is called from any thread on every change."""
        ...

    async def open_link(self) -> ByteLink:
        """The link to the dock that is present now.

        Raises:
            LinkClosedError: Not docked (any more), or the port cannot be opened.
        """
        ...


class PowerLoad(Protocol):
    """Optional hook for boards that model consumption (the simulated battery)."""

    def set_load(self, load: str) -> None: ...


@dataclass
class Board:
    """Every part of one camera, chosen by the backend table (``bodycam.drivers.backends``)."""

    name: str
    camera: Camera
    red_led: Led
    green_led: Led
    beeper: Beeper
    record_button: DigitalInput
    battery: Battery
    clock: Clock
    storage: Storage
    triggers: Sequence[DigitalInput] = ()
    function_button: DigitalInput | None = None
    power_switch: DigitalInput | None = None
    power_load: PowerLoad | None = None
    dock: DockPort | None = None
    # Background work the board needs while the daemon runs (the simulator's world socket,
    # a dock watcher): (task name, coroutine factory), run in the daemon's task group.
    services: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = field(
        default_factory=list
    )
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Parts that could not be opened at start, each naming the part and its config key; the
    # board runs without them and the daemon warns the officer.
    faults: list[str] = field(default_factory=list)
    # Parts that can fail while running and tell so themselves: (part, check), where check
    # returns what is wrong now (naming the config key) or None. Polled by the daemon.
    fault_checks: list[tuple[str, Callable[[], str | None]]] = field(default_factory=list)

    def close(self) -> None:
        """Release every part (pins, devices); safe to call twice."""
        while self.closers:
            self.closers.pop()()
