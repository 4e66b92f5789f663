"""systemd's notify protocol: READY, WATCHDOG, STOPPING and STATUS as datagrams.

The protocol is one datagram of newline-separated ``KEY=value`` to ``$NOTIFY_SOCKET`` (a
leading ``@`` names an abstract socket) and is declared stable by systemd, so a few lines
here replace systemd-python, which needs a compiler and libsystemd headers on the device.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Talks to the service manager; every method is a no-op failure-safe send."""

    def __init__(self, address: str, *, watchdog_usec: int | None = None) -> None:
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls) -> SystemdNotifier | None:
        """A notifier if systemd asked for one (``NOTIFY_SOCKET``), else None."""
        address = os.environ.get("NOTIFY_SOCKET")
        if not address:
            return None
        watchdog_usec: int | None = None
        pid = os.environ.get("WATCHDOG_PID")
        usec = os.environ.get("WATCHDOG_USEC")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            watchdog_usec = int(usec)
        return cls(address, watchdog_usec=watchdog_usec)

    def send(self, **fields: str) -> bool:
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            self._sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.send(READY="1", STATUS=status) if status else self.send(READY="1")

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def stopping(self) -> None:
        self.send(STOPPING="1")

    def close(self) -> None:
        self._sock.close()
