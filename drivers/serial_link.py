"""Serial links over a file descriptor: the dock's USB port, the camera's gadget port, a pty.

:class:`FdLink` moves bytes through the running event loop's ``add_reader``/``add_writer``
on a non-blocking descriptor: no thread per link, no user-space write queue (``write``
returns once the kernel holds every byte, which is the back-pressure the protocol relies on).

Pseudo-terminal facts this module is built on (Linux, measured):

* Reading a pty master while no process has the slave open fails with ``EIO``; writing to
  it succeeds until the ~12 KiB buffer is full and then fails with ``EAGAIN`` while poll
  reports ``POLLHUP``. :func:`open_pty_pair` therefore hands back the slave descriptor too:
  whoever plays the cable (``SimDockPort``) keeps it open for the whole docking, so the
  camera's end does not fail just because the dock has not opened its port yet, exactly as
  a real gadget port stays usable while the host has not opened ``/dev/ttyACM0``.
* Reading a pty slave after the master closed returns end-of-file; writing fails with
  ``EIO``. Both become :class:`LinkClosedError`.
* With ``VMIN=0`` (what pyserial sets) an idle non-blocking tty read returns 0 bytes instead
  of ``EAGAIN``, which would be indistinguishable from a hang-up. :func:`make_raw` sets
  ``VMIN=1`` so that an empty read always means the peer is gone.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import select
import termios
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import serial

from bodycam.drivers.interfaces import LinkClosedError

log = logging.getLogger(__name__)

DEFAULT_READ_SIZE = 256 * 1024
# Baud rate means nothing on USB CDC-ACM, but termios wants one; 115200 is what a human
# debugging the port with a terminal program would try first.
BAUD_RATE = 115200
# Operations in a row that complete without waiting before the link yields to the event
# loop once: a peer that always has data ready must not starve timers and the watchdog.
_YIELD_EVERY = 32
_HANGUP_EVENTS = select.POLLHUP | select.POLLERR | select.POLLNVAL


# writev takes at most this many chunks per call (1024 on Linux; -1 means "no limit known").
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if "SC_IOV_MAX" in os.sysconf_names else 1024


def _termios_flags(names: str) -> int:
    value = 0
    for flag in names.split():
        value |= getattr(termios, flag)
    return value


# What cfmakeraw clears, plus the software flow control and parity checks pyserial may leave.
_IFLAG_OFF = _termios_flags("IGNBRK BRKINT PARMRK ISTRIP INLCR IGNCR ICRNL IXON IXOFF IXANY INPCK")
_LFLAG_OFF = _termios_flags("ECHO ECHONL ICANON ISIG IEXTEN")


def _wake(waiter: asyncio.Future[None]) -> None:
    # Level-triggered: the loop may call this again before the waiting task has run.
    if not waiter.done():
        waiter.set_result(None)


def _byte_view(chunk: bytes | bytearray | memoryview) -> memoryview:
    # A view, never a copy; cast so that slicing and nbytes count bytes, whatever the
    # caller's memoryview format was.
    view = memoryview(chunk)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class FdLink:
    """Implements ByteLink over a non-blocking file descriptor (tty, pty master, pipe).

    Both calls try the descriptor first and wait for readiness only on ``EAGAIN``, which
    saves a selector round trip whenever the kernel already has data or room. After 32
    operations in a row that did not wait, the next one yields to the loop first.

    One reader at a time (a second concurrent ``read`` is a programming error); concurrent
    writers are serialised, so one gathered write is never interleaved with another.
    ``close`` may be called from any thread: off the link's event loop thread it is handed
    to that loop, which runs it at its next iteration.

    Args:
        fd: The descriptor; the link owns it from now on (made non-blocking here).
        name: The port's path, used in every error message.
        read_size: The most one ``read`` returns.
        on_close: Called instead of ``os.close(fd)`` when something else owns the
            descriptor (pyserial's ``Serial.close``).
    """

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if read_size <= 0:
            raise ValueError(f"read_size must be positive, got {read_size}")
        os.set_blocking(fd, False)
        self._fd = fd
        self._name = name
        self._read_size = read_size
        self._on_close = on_close
        self._closed = False
        self._close_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._write_lock = asyncio.Lock()
        self._reads_in_a_row = 0
        self._writes_in_a_row = 0
        self._poller = select.poll()
        self._poller.register(fd, 0)  # no events asked: poll still reports HUP/ERR/NVAL

    @property
    def name(self) -> str:
        """The port's path."""
        return self._name

    @property
    def closed(self) -> bool:
        """True once ``close`` has run."""
        return self._closed

    def fileno(self) -> int:
        """The descriptor, for a holder that hands out duplicates (the gadget dock port)."""
        return self._fd

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<FdLink {self._name} {state}>"

    async def read(self) -> bytes:
        """Some bytes (at least one, at most ``read_size``), waiting for them.

        Cancel-safe: a cancelled read has taken nothing from the kernel.

        Raises:
            LinkClosedError: The peer hung up, the device vanished or the link was closed.
            RuntimeError: Another task is already reading this link.
        """
        if self._reading:
            raise RuntimeError(f"{self._name}: read() while another read() is waiting")
        self._reading = True
        try:
            if self._reads_in_a_row >= _YIELD_EVERY:
                # Before reading, not after: a cancellation here loses no bytes.
                self._reads_in_a_row = 0
                await asyncio.sleep(0)
            woken = False
            while True:
                self._check_open()
                try:
                    data = os.read(self._fd, self._read_size)
                except BlockingIOError:
                    # A wake-up with nothing to read and a hung-up descriptor would repeat
                    # forever (poll reports HUP every time): treat it as the end.
                    if woken and self._hung_up():
                        raise self._gone("read", "hung up") from None
                    self._reads_in_a_row = 0
                    await self._wait(write=False)
                    woken = True
                    continue
                except OSError as exc:
                    raise self._gone("read", exc.strerror or str(exc)) from exc
                if not data:
                    raise self._gone("read", "end of file (peer hung up)")
                self._reads_in_a_row += 1
                return self._read_more(data)
        finally:
            self._reading = False

    def _read_more(self, data: bytes) -> bytes:
        # A tty hands over at most its line discipline's buffer (4 KiB) per read: take what
        # else is already there now, without waiting, so that a 64 KiB frame costs a few
        # wake-ups of the event loop instead of sixteen.
        if len(data) >= self._read_size:
            return data
        parts, size = [data], len(data)
        while size < self._read_size:
            try:
                more = os.read(self._fd, self._read_size - size)
            except OSError:  # nothing more yet, or a fault the next read() reports
                break
            if not more:
                break
            parts.append(more)
            size += len(more)
        return data if len(parts) == 1 else b"".join(parts)

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        """Write every chunk, in order, with gathered writes; return once the kernel has all.

        A cancelled write may have sent a prefix of the chunks (the framing layer resyncs).

        Raises:
            LinkClosedError: The peer hung up, the device vanished or the link was closed.
        """
        self._check_open()
        views = [view for view in map(_byte_view, chunks) if view.nbytes]
        if not views:
            return
        async with self._write_lock:
            await self._write_views(views)

    async def _write_views(self, views: list[memoryview]) -> None:
        if self._writes_in_a_row >= _YIELD_EVERY:
            # Before writing, not after: a cancellation here has sent nothing.
            self._writes_in_a_row = 0
            await asyncio.sleep(0)
        first = 0
        count = len(views)
        woken = False
        while True:
            self._check_open()
            batch = views if first == 0 and count <= _IOV_MAX else views[first : first + _IOV_MAX]
            try:
                written = os.writev(self._fd, batch)
            except BlockingIOError:
                if woken and self._hung_up():
                    raise self._gone("write", "hung up") from None
                self._writes_in_a_row = 0
                await self._wait(write=True)
                woken = True
                continue
            except OSError as exc:
                raise self._gone("write", exc.strerror or str(exc)) from exc
            # Advance through the chunks without joining them: whole chunks are skipped,
            # the one cut in the middle is re-sliced (a view, not a copy).
            while written:
                size = views[first].nbytes
                if written >= size:
                    written -= size
                    first += 1
                else:
                    views[first] = views[first][written:]
                    written = 0
            if first == count:
                self._writes_in_a_row += 1
                return
            woken = False

    def close(self) -> None:
        """Release the descriptor; safe to call twice and from any thread.

        Pending and later reads/writes raise LinkClosedError.
        """
        with self._close_lock:
            if self._closed:
                return
            loop = self._loop
            if loop is not None and loop.is_running() and not _runs_in(loop):
                # The selector belongs to the loop's thread: let it unregister the fd.
                loop.call_soon_threadsafe(self.close)
                return
            self._closed = True
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None:
                _wake(waiter)
        self._poller.unregister(self._fd)
        try:
            if self._on_close is not None:
                self._on_close()
            else:
                os.close(self._fd)
        except OSError as exc:
            log.debug("%s: error while closing: %s", self._name, exc)
        log.debug("%s: closed", self._name)

    async def _wait(self, *, write: bool) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        waiter: asyncio.Future[None] = loop.create_future()
        if write:
            self._write_waiter = waiter
            loop.add_writer(self._fd, _wake, waiter)
        else:
            self._read_waiter = waiter
            loop.add_reader(self._fd, _wake, waiter)
        try:
            await waiter
        finally:
            # After close() the fd number may already belong to someone else: only a link
            # that is still open may touch the selector.
            if write:
                self._write_waiter = None
                if not self._closed:
                    loop.remove_writer(self._fd)
            else:
                self._read_waiter = None
                if not self._closed:
                    loop.remove_reader(self._fd)

    def _check_open(self) -> None:
        if self._closed:
            raise LinkClosedError(f"{self._name}: link closed")

    def _hung_up(self) -> bool:
        return any(events & _HANGUP_EVENTS for _fd, events in self._poller.poll(0))

    def _gone(self, what: str, why: str) -> LinkClosedError:
        return LinkClosedError(f"{self._name}: {what} failed: {why}")


def _runs_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def make_raw(fd: int) -> None:
    """Put a tty in raw 8-bit mode with ``VMIN=1``, ``VTIME=0``, without flushing.

    Everything ``cfmakeraw`` clears (echo, line editing, CR/LF mapping, XON/XOFF, signals,
    output processing) is cleared, so every byte value passes unchanged both ways.
    """
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    iflag &= ~_IFLAG_OFF
    oflag &= ~termios.OPOST
    lflag &= ~_LFLAG_OFF
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])


class PtyPair(NamedTuple):
    """A raw pseudo-terminal pair; the caller owns (and closes) both descriptors."""

    master_fd: int
    """Non-blocking; the camera's end in the simulator."""
    slave_fd: int
    """Keep it open while the master is in use (see the module docstring)."""
    slave_path: str
    """What the other side opens (``/dev/pts/N``), like ``/dev/ttyACM0`` on a dock."""


def open_pty_pair() -> PtyPair:
    """Open a raw pseudo-terminal pair (no echo, no line editing, 8-bit clean).

    Returns:
        The pair. The slave descriptor is returned open on purpose: a pty master reads
        ``EIO`` whenever no slave descriptor is open, so the holder of the pair keeps it
        for as long as the master is used.
    """
    master_fd, slave_fd = os.openpty()
    try:
        slave_path = os.ttyname(slave_fd)
        make_raw(master_fd)
        make_raw(slave_fd)
        os.set_blocking(master_fd, False)
    except BaseException:
        os.close(master_fd)
        os.close(slave_fd)
        raise
    return PtyPair(master_fd, slave_fd, slave_path)


def _open_error(path: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        why = "held by another process (exclusive lock)"
    elif code == errno.EBUSY:
        why = "busy (opened in exclusive mode by another process)"
    elif code == errno.ENOENT:
        why = "no such port (camera not docked, or udev has not named it yet)"
    elif code in (errno.ENXIO, errno.ENODEV):
        why = "the device is gone (unplugged)"
    elif code in (errno.EACCES, errno.EPERM):
        why = f"permission denied: the user must be in group {_owner_group(path)!r}"
    elif code is None:
        why = f"not a usable serial port ({exc})"
    else:
        why = os.strerror(code)
    return f"cannot open serial port {path}: {why}"


def _owner_group(path: str) -> str:
    try:
        return grp.getgrgid(Path(path).stat().st_gid).gr_name
    except (OSError, KeyError):
        return "dialout"  # the usual owner of /dev/ttyACM* on Debian-like systems


def open_serial(path: str | Path, *, exclusive: bool = True) -> FdLink:
    """Open a serial port raw, locked and non-blocking, as an :class:`FdLink`.

    pyserial does the opening (raw termios, ``flock`` so a second opener using pyserial or
    another dock agent fails; ModemManager is kept off by the udev rule), then the bytes move
    through the event loop on its descriptor.

    Args:
        path: The port (``/dev/bodycam/<serial>``, ``/dev/ttyACM0``, ``/dev/ttyGS0``, a pty).
        exclusive: Take the advisory exclusive lock (fail if someone else holds it).

    Raises:
        LinkClosedError: One line saying which port and why (missing, locked, permission).
    """
    name = str(path)
    try:
        port = serial.Serial(
            name, baudrate=BAUD_RATE, exclusive=exclusive, timeout=0, write_timeout=0
        )
    except (serial.SerialException, OSError) as exc:
        raise LinkClosedError(_open_error(name, exc)) from exc
    try:
        fd: int = port.fileno()
        make_raw(fd)
        os.set_blocking(fd, False)
    except (OSError, termios.error) as exc:
        port.close()
        raise LinkClosedError(_open_error(name, exc)) from exc
    except BaseException:
        port.close()
        raise
    log.debug("%s: opened (exclusive=%s)", name, exclusive)
    return FdLink(fd, name, on_close=port.close)
