"""Notice a connection that fails before the broker's CONNACK, instead of waiting it out.

aiomqtt resolves a connection attempt only on CONNACK or its timeout. When the broker (or
TLS) drops the connection after the TCP/TLS handshake but before CONNACK, which is what
mosquitto does to a client without the required certificate under TLS 1.3, aiomqtt
would wait out the whole timeout and the failure would be counted as a timeout. paho
does report the real cause, through the logger aiomqtt hands it; this handler on that
logger catches the report, so the attempt ends at once and is counted under its kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

# aiomqtt's and paho's own messages: paho logs every lost connection at ERROR, which the
# connection's failure log already reports once per kind. Lower this logger's level to
# see them (they are forwarded to it).
mqtt_log = logging.getLogger("bodycam.daemon.telemetry.mqtt")
mqtt_log.setLevel(logging.CRITICAL)


class ConnectWatch(logging.Handler):
    """A per-attempt logger for aiomqtt/paho; ``failed`` resolves with paho's first error."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self._loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[str] = self._loop.create_future()
        # Not registered with logging's manager: thousands of simulated cameras must not
        # leave a logger each behind. Its level keeps paho from formatting debug lines
        # nobody reads.
        self.logger = logging.Logger(f"{mqtt_log.name}.{name}")
        self.logger.setLevel(min(logging.ERROR, mqtt_log.getEffectiveLevel()))
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Forward to the shared mqtt logger; remember the first error (from any thread)."""
        if mqtt_log.isEnabledFor(record.levelno):
            mqtt_log.handle(record)
        if record.levelno >= logging.ERROR and not self.failed.done():
            message = record.getMessage()
            # A closed loop (RuntimeError) means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._fail, message)

    def _fail(self, message: str) -> None:
        if not self.failed.done():
            self.failed.set_result(message)
