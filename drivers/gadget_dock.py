"""The camera's dock port on a Pi: USB gadget state for presence, ``/dev/ttyGS0`` for the link.

Docked means the USB device controller reports ``configured`` (a host enumerated the camera
and chose its configuration), or VBUS is present on the port (the ``online`` of a
power_supply such as ``/sys/class/power_supply/usb``), or either, as configured. A bus the
host has ``suspended`` (an idle dock PC, USB autosuspend) keeps the camera configured, so
it changes nothing.

The serial port is opened when the service starts and held for as long as it runs:
``open_link`` hands out duplicates of that descriptor, so bytes the dock sends between
enumeration and the camera's first read wait in the tty's buffer (pyserial flushes the
input when it opens a port, so opening late would drop them), and the camera reopening its
link never loses the port.

What the gadget's serial driver does (drivers/usb/gadget/function/u_serial.c), and how this
port copes:

* Opening ``/dev/ttyGS0`` works while no host is connected; I/O starts once one is.
* When the host goes away (unplug, bus reset, configuration change), the driver hangs up
  the open tty: every descriptor on it then reads end-of-file, fails writes with EIO and
  polls ``POLLHUP``, for good. Every poll checks the held descriptor for ``POLLHUP``; a
  hung-up port (and the link handed out on it) is closed and reopened at once, still
  undocked, so the next docking finds a live port with nothing flushed. The hang-up runs
  from a work queue, shortly after the controller's state changes: checking every poll,
  rather than once at undocking, catches it whenever it lands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from bodycam.drivers.interfaces import ByteLink, HardwareError, LinkClosedError
from bodycam.drivers.serial_link import FdLink, open_serial

log = logging.getLogger(__name__)

Detect = Literal["udc", "vbus", "udc_or_vbus"]
_DOCKED_STATES = frozenset({"configured"})
_HOLD_STATES = frozenset({"suspended"})
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
_SERVICE = "bodycam-gadget.service"


class _Fault:
    """A condition logged once when it starts (or changes) and once when it clears."""

    def __init__(self, what: str) -> None:
        self._what = what
        self.message: str | None = None

    def set(self, message: str) -> None:
        if message != self.message:
            log.warning("%s", message)
            self.message = message

    def clear(self) -> None:
        if self.message is not None:
            log.info("%s: fine again", self._what)
            self.message = None


class GadgetDockPort:
    """Implements DockPort over the USB gadget's controller state and its serial port.

    ``run`` is the service the daemon runs as a task: it polls every ``poll_s`` and calls
    the handler from the event loop's thread on every change. ``open_link`` and ``close``
    may be called from the loop thread; ``close`` from any thread.

    Args:
        tty: The gadget's serial port (``gadget.tty``).
        udc_class: The USB device controllers' sysfs class directory.
        udc: The controller to watch (``gadget.udc``); ``None``: the first one there.
        detect: What counts as docked (``gadget.detect``).
        vbus_supply: The power_supply directory whose ``online`` is VBUS
            (``gadget.vbus_supply``); needed unless ``detect`` is ``udc``.
        poll_s: Seconds between two looks.
    """

    def __init__(
        self,
        *,
        tty: Path = Path("/dev/ttyGS0"),
        udc_class: Path = Path("/sys/class/udc"),
        udc: str | None = None,
        detect: Detect = "udc",
        vbus_supply: Path | None = None,
        poll_s: float = 0.25,
    ) -> None:
        if detect not in ("udc", "vbus", "udc_or_vbus"):
            raise ValueError(f"gadget.detect: {detect!r} is not udc, vbus or udc_or_vbus")
        if detect != "udc" and vbus_supply is None:
            raise ValueError(f"gadget.detect = {detect!r} needs gadget.vbus_supply")
        if poll_s <= 0:
            raise ValueError(f"gadget.poll_s must be positive, got {poll_s}")
        self._tty = tty
        self._udc_class = udc_class
        self._udc = udc
        self._detect = detect
        self._vbus = vbus_supply
        self._poll_s = poll_s
        # Re-entrant: a handler may look at the port while it is told of a change.
        self._lock = threading.RLock()
        self._held: FdLink | None = None
        self._hangup_poller: select.poll | None = None
        self._link: FdLink | None = None
        self._docked = False
        self._udc_docked = False
        self._handler: Callable[[bool], None] | None = None
        self._closed = False
        self._tty_fault = _Fault(f"gadget.tty: {tty}")
        self._udc_fault = _Fault("gadget.udc")
        self._vbus_fault = _Fault("gadget.vbus_supply")

    # --- DockPort ---------------------------------------------------------------------

    @property
    def docked(self) -> bool:
        """The state at the last poll."""
        with self._lock:
            return self._docked

    @property
    def tty_error(self) -> HardwareError | None:
        """Why the serial port is not open now, naming ``gadget.tty``; None while it is."""
        with self._lock:
            message = self._tty_fault.message
        return HardwareError(message) if message is not None else None

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None:
        """``on_change(docked)`` is called from the polling (event loop) thread on each change."""
        with self._lock:
            self._handler = on_change

    async def open_link(self) -> ByteLink:
        """The link to the dock present now (the link handed out before is closed).

        Raises:
            LinkClosedError: Not docked, the port was closed, or the tty cannot be opened.
        """
        with self._lock:
            if self._closed:
                raise LinkClosedError(f"{self._tty}: dock port closed")
            if not self._docked:
                raise LinkClosedError(f"{self._tty}: not docked")
            self._keep_tty_open()
            if self._held is None:
                raise LinkClosedError(self._tty_fault.message or f"{self._tty}: not open")
            if self._link is not None:
                log.debug("gadget dock: a new link replaces the previous one")
                self._link.close()
                self._link = None
            try:
                fd = os.dup(self._held.fileno())
            except OSError as exc:
                raise LinkClosedError(f"{self._tty}: cannot open the link: {exc}") from exc
            self._link = FdLink(fd, str(self._tty))
            return self._link

    # --- the service ------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled or closed; never raises for a missing part (it logs once)."""
        try:
            while not self._closed:
                self.poll()
                await asyncio.sleep(self._poll_s)
        finally:
            with self._lock:
                self._release_tty()

    def poll(self) -> bool:
        """One look: keep the tty open, read the dock state, tell the handler of a change.

        ``run`` calls this every ``poll_s``; sysfs reads of a line each, cheap enough for
        the event loop. Returns whether the camera is docked.
        """
        with self._lock:
            if self._closed:
                return False
            self._keep_tty_open()
            docked = self._sense()
            if docked == self._docked:
                return docked
            self._docked = docked
            log.info("gadget dock: %s", "docked" if docked else "undocked")
            if not docked and self._link is not None:
                # The dock is gone, and with it whatever the link was talking to.
                self._link.close()
                self._link = None
            handler = self._handler
            if handler is not None:
                try:
                    handler(docked)
                except Exception:
                    log.exception("gadget dock: dock handler failed (docked=%s)", docked)
            return docked

    def close(self) -> None:
        """Release the port and the link; safe twice. Later polls do nothing."""
        with self._lock:
            self._closed = True
            self._release_tty()

    # --- the serial port --------------------------------------------------------------

    def _keep_tty_open(self) -> None:
        if self._held is not None and not self._hung_up():
            return
        if self._held is not None:
            log.info("gadget dock: %s was hung up (host gone): reopening it", self._tty)
            self._release_tty()
        if not self._tty.exists():
            self._tty_fault.set(
                f"gadget.tty: {self._tty} does not exist: the USB gadget is not set up "
                f"(is {_SERVICE} running?)"
            )
            return
        try:
            held = open_serial(self._tty, exclusive=True)
        except LinkClosedError as exc:
            self._tty_fault.set(f"gadget.tty: {exc} (the gadget's port, from {_SERVICE})")
            return
        self._held = held
        self._hangup_poller = select.poll()
        self._hangup_poller.register(held.fileno(), 0)  # HUP/ERR/NVAL come regardless
        self._tty_fault.clear()
        log.info("gadget dock: %s open", self._tty)

    def _hung_up(self) -> bool:
        poller = self._hangup_poller
        return poller is not None and any(ev & _HANGUP for _fd, ev in poller.poll(0))

    def _release_tty(self) -> None:
        link, self._link = self._link, None
        held, self._held = self._held, None
        self._hangup_poller = None
        if link is not None:
            link.close()
        if held is not None:
            held.close()

    # --- presence ---------------------------------------------------------------------

    def _sense(self) -> bool:
        udc = self._detect != "vbus" and self._udc_configured()
        vbus = self._detect != "udc" and self._vbus_online()
        return udc or vbus

    def _udc_configured(self) -> bool:
        name = self._udc
        if name is None:
            try:
                found = sorted(p.name for p in self._udc_class.iterdir())
            except OSError:
                found = []
            if not found:
                self._udc_fault.set(
                    f"gadget.udc: no USB device controller in {self._udc_class} "
                    "(the port is in host mode, or dwc2 is not loaded): counted as undocked"
                )
                self._udc_docked = False
                return False
            name = found[0]
        state = _read_line(self._udc_class / name / "state")
        if state is None:
            self._udc_fault.set(
                f"gadget.udc: USB device controller {name} is gone or unreadable "
                f"({self._udc_class / name / 'state'}): counted as undocked"
            )
            self._udc_docked = False
            return False
        self._udc_fault.clear()
        if state not in _HOLD_STATES:
            self._udc_docked = state in _DOCKED_STATES
        return self._udc_docked

    def _vbus_online(self) -> bool:
        supply = self._vbus
        if supply is None:  # not reached: __init__ insists on it for the vbus modes
            return False
        online = _read_line(supply / "online")
        if online is None or not online.isdigit():
            self._vbus_fault.set(
                f"gadget.vbus_supply: {supply}/online is missing or unreadable "
                f"({online!r}): VBUS counted as absent"
            )
            return False
        self._vbus_fault.clear()
        return int(online) != 0  # 1: online (fixed), 2: online (programmable)


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
