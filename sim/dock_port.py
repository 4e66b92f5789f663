"""The simulated camera's dock connector: a fresh pseudo-terminal for every docking.

The camera holds the pty master (its ``/dev/ttyGS0``); the dock opens the slave path, as a
dock host opens the ``/dev/ttyACM0`` that appears when a camera is seated. ``plug`` and
``unplug`` are the world's hand; ``docked``, ``set_handler`` and ``open_link`` are the
camera's side (:class:`~bodycam.drivers.interfaces.DockPort`).

How the pair is held during a docking, and why:

* The port keeps the pty's own master and a slave descriptor open from ``plug`` to
  ``unplug``. A pty master reads ``EIO`` while no slave descriptor is open, so without the
  held slave the camera's reads would fail until the dock opened its port, and again every
  time the dock agent restarted. A real gadget port behaves like the held pair: it stays
  usable while the host has not (or no longer) opened its end.
* Each ``open_link`` returns an :class:`~bodycam.drivers.serial_link.FdLink` on a duplicate
  of the master, so the camera closing and reopening its link (as it would reopen
  ``/dev/ttyGS0``) leaves the docking intact. Opening a new link closes the previous one,
  so there is never more than one reader. Bytes the dock sent while the camera had no link
  open stay queued, as they would in the gadget's buffer.
* ``unplug`` closes the camera's link and every descriptor of the docking: the dock's reads
  then see end-of-file and its writes ``EIO`` (both LinkClosedError through ``FdLink``),
  exactly as when a camera is lifted out of the dock.
* With ``link_path`` the port also names the dock's end while docked (a symlink to the
  slave, replaced atomically, removed on unplug), as the dock host's udev rule names a
  seated camera ``/dev/bodycam/<serial>``: a test bench can be configured with one fixed
  path (a labgrid ``RawSerialPort``) although every docking gets a new pty.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair

log = logging.getLogger(__name__)


@dataclass
class _Docking:
    """Everything one docking owns; released together on unplug."""

    pty: PtyPair
    link: FdLink | None = None

    def release(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        for fd in (self.pty.master_fd, self.pty.slave_fd):
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("sim dock: closing fd %d: %s", fd, exc)


class SimDockPort:
    """Implements DockPort with one pseudo-terminal pair per docking.

    Thread-safe: ``plug``, ``unplug`` and ``close`` may be called from any thread, and the
    handler is called on the thread that made the change, in the order of the changes.
    """

    def __init__(self, *, link_path: Path | None = None) -> None:
        self._link_path = link_path
        # Re-entrant: a handler may read ``docked`` or ``port_path`` while it is notified.
        # Handlers run under the lock so that notifications arrive in the order of changes.
        self._lock = threading.RLock()
        self._docking: _Docking | None = None
        self._handler: Callable[[bool], None] | None = None
        self._closed = False

    # --- the camera's side (DockPort) ----------------------------------------------------

    @property
    def docked(self) -> bool:
        """True from ``plug`` to ``unplug``."""
        with self._lock:
            return self._docking is not None

    @property
    def port_path(self) -> str | None:
        """The slave path the dock opens while docked (the dock host's ``/dev/ttyACM*``)."""
        with self._lock:
            return self._docking.pty.slave_path if self._docking is not None else None

    def set_handler(self, on_change: Callable[[bool], None] | None) -> None:
        """``on_change(docked)`` is called on every plug and unplug, from the caller's thread."""
        with self._lock:
            self._handler = on_change

    async def open_link(self) -> ByteLink:
        """The camera's end of the present docking (closes the link this returned before).

        Raises:
            LinkClosedError: Not docked, or the port was closed.
        """
        with self._lock:
            docking = self._docking
            if docking is None:
                raise LinkClosedError("sim dock port: not docked")
            if docking.link is not None:
                log.debug("sim dock: a new link replaces %s", docking.link.name)
                docking.link.close()
            try:
                fd = os.dup(docking.pty.master_fd)
            except OSError as exc:
                raise LinkClosedError(f"sim dock port: cannot open the link: {exc}") from exc
            docking.link = FdLink(fd, f"sim-dock:{docking.pty.slave_path}")
            return docking.link

    # --- the world's side ----------------------------------------------------------------

    def plug(self) -> str:
        """Seat the camera in the dock: a fresh pty appears; returns the path the dock opens.

        A second plug while docked changes nothing and returns the same path.

        Raises:
            RuntimeError: The port was closed.
            OSError: No pseudo-terminal could be allocated.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("sim dock port is closed")
            if self._docking is not None:
                return self._docking.pty.slave_path
            self._docking = _Docking(open_pty_pair())
            path = self._docking.pty.slave_path
            self._name_port(path)
            log.info("sim dock: camera docked, dock side is %s", path)
            self._notify(True)
            return path

    def unplug(self) -> None:
        """Lift the camera out: its link and the whole pty go away; no-op when not docked."""
        with self._lock:
            docking = self._docking
            if docking is None:
                return
            self._docking = None
            self._unname_port()
            docking.release()
            log.info("sim dock: camera undocked (%s gone)", docking.pty.slave_path)
            self._notify(False)

    def close(self) -> None:
        """Release everything for shutdown, without notifying; later plugs raise."""
        with self._lock:
            self._closed = True
            docking, self._docking = self._docking, None
            if docking is not None:
                self._unname_port()
                docking.release()

    def _name_port(self, slave_path: str) -> None:
        if self._link_path is None:
            return
        # Replaced in one rename, so a bench polling the name never sees a half-made link.
        staging = self._link_path.with_name(f".{self._link_path.name}.{os.getpid()}")
        try:
            self._link_path.parent.mkdir(parents=True, exist_ok=True)
            staging.unlink(missing_ok=True)
            staging.symlink_to(slave_path)
            staging.replace(self._link_path)
        except OSError as exc:
            # The docking itself works without the name; say why a bench cannot find it.
            log.warning("sim dock: cannot name the dock port %s: %s", self._link_path, exc)

    def _unname_port(self) -> None:
        if self._link_path is None:
            return
        try:
            self._link_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("sim dock: cannot remove the dock port name %s: %s", self._link_path, exc)

    def _notify(self, docked: bool) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            handler(docked)
        except Exception:
            # The world's hand must not fail because the camera's handler did.
            log.exception("sim dock: dock handler failed (docked=%s)", docked)
