"""The dock port of a shared bench, reached over the network: RFC 2217, as labgrid exports it.

A labgrid exporter serves a bench's serial ports through ser2net speaking RFC 2217 (telnet
with serial-port control), so a runner that acquired the place from the coordinator talks
to the camera's gadget port from another machine. pyserial's RFC 2217 client is blocking;
this link gives it the :class:`~bodycam.drivers.interfaces.ByteLink` shape the reference
dock's agent expects. One reader thread moves whatever arrives into an asyncio queue, so a
cancelled ``read`` (the agent's timeouts) never loses bytes; writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import warnings

import serial

from bodycam.drivers.interfaces import LinkClosedError

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# How often the reader thread looks up from a quiet line to notice ``close``.
_POLL_S = 0.1
_CLOSED = b""  # queued once when the connection ends: never a real read


class Rfc2217Link:
    """Implements ByteLink over ``rfc2217://host:port``; open it from the event loop thread.

    Raises:
        LinkClosedError: The exporter cannot be reached or refuses the connection.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self._name = url
        # ign_set_control: ser2net does not implement every control option pyserial sends.
        full = f"{url}?ign_set_control&timeout={connect_timeout_s:g}"
        try:
            with warnings.catch_warnings():
                # pyserial 3.5 starts its telnet thread with the deprecated setDaemon/setName.
                warnings.filterwarnings(
                    "ignore", r"set(Daemon|Name)\(\) is deprecated", DeprecationWarning
                )
                self._serial = serial.serial_for_url(full, baudrate=115200, timeout=_POLL_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkClosedError(f"{url}: cannot connect: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = threading.Event()
        self._ended = False
        self._reader = threading.Thread(target=self._read_loop, name=f"rfc2217 {url}", daemon=True)
        self._reader.start()

    @property
    def name(self) -> str:
        return self._name

    def _deliver(self, data: bytes) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, data)
        except RuntimeError:  # the loop is closed: nobody will read any more
            return False
        return True

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                data = self._serial.read(max(1, min(self._serial.in_waiting, READ_SIZE)))
                if data and not self._deliver(bytes(data)):
                    return
        except (serial.SerialException, OSError, AttributeError) as exc:
            # AttributeError: pyserial's client drops its socket when closed under a read.
            if not self._closed.is_set():
                log.info("%s: connection ended: %s", self._name, exc)
        finally:
            self._deliver(_CLOSED)

    async def read(self) -> bytes:
        if self._ended:
            raise LinkClosedError(f"{self._name}: connection closed")
        data = await self._queue.get()
        if data is _CLOSED or not data:
            self._ended = True
            raise LinkClosedError(f"{self._name}: connection closed")
        return data

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        if self._closed.is_set() or self._ended:
            raise LinkClosedError(f"{self._name}: connection closed")
        payload = b"".join(bytes(chunk) for chunk in chunks)
        try:
            await asyncio.to_thread(self._serial.write, payload)
        except (serial.SerialException, OSError, AttributeError) as exc:
            raise LinkClosedError(f"{self._name}: write failed: {exc}") from exc

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(serial.SerialException, OSError):
            self._serial.close()
        self._reader.join(timeout=5)
