"""Telemetry settings: the broker, the credentials, the timing and the queue's bounds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bodycam.daemon.config import ConfigError
from bodycam.daemon.telemetry.broker import BrokerAddress


def read_password_file(path: Path | None, *, what: str) -> str | None:
    """The broker password kept in ``path`` (None: no password); ``what`` names the option.

    Raises:
        ConfigError: The file cannot be read; the message names it and ``what``.
    """
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path} ({what}): cannot read: {exc.strerror}") from None


@dataclass(frozen=True)
class TelemetrySettings:
    """How to reach the broker and how much to keep while it cannot be reached.

    Attributes:
        broker: Where the broker is (:func:`~bodycam.daemon.telemetry.broker.parse_broker_url`).
        client_id: MQTT client id; the device or dock id, so the broker's logs name it.
        username: Password authentication, if the broker uses it.
        password: See ``username``.
        ca_file: TLS: the broker's CA (None: the system's CAs).
        cert_file: TLS client certificate (per-device credentials; its CN is the device id).
        key_file: The client certificate's private key.
        keepalive_s: MQTT keepalive; the broker declares the camera gone (last will) after
            1.5 times this without a packet.
        state_interval_s: The retained state is re-published at least this often.
        queue_path: sqlite file keeping queued events across restarts; None: memory only.
        queue_max: At most this many events are queued.
        backoff_min_s: First reconnect window (addition; tests shorten it).
        backoff_max_s: Largest reconnect window (addition).
    """

    broker: BrokerAddress
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    state_interval_s: float = 10.0
    queue_path: Path | None = None
    queue_max: int = 10_000
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
