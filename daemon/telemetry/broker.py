"""Where the telemetry broker is: ``mqtt://host[:port]`` or ``mqtts://host[:port]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# The IANA ports for MQTT over TCP and over TLS.
MQTT_PORT = 1883
MQTTS_PORT = 8883

_SCHEMES = {"mqtt": False, "mqtts": True}
_USERINFO = re.compile(r"//[^/@]*@")


@dataclass(frozen=True)
class BrokerAddress:
    """One MQTT broker endpoint.

    Attributes:
        host: Host name or IP address (an IPv6 address without brackets).
        port: TCP port.
        tls: True when the connection must use TLS (``mqtts://``).
    """

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """The address written back as a URL (what logs and the config show)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` into a :class:`BrokerAddress`.

    Raises:
        ValueError: for any other scheme, a missing host, a bad port, or parts an MQTT
            address cannot carry (credentials, path, query); the message says which.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("broker URL is empty: expected mqtt://host[:port] or mqtts://host[:port]")
    # Error messages end up in logs: never repeat a password someone put in the URL.
    text = _USERINFO.sub("//***@", url.strip())
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or "://" not in text:
        raise ValueError(f"broker URL {text!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    # Credentials in a URL end up in logs and process listings; they have their own keys.
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"broker URL {text!r}: put credentials in telemetry.username/password "
            "or a client certificate, not in the URL"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {text!r}: only scheme, host and port are allowed")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {text!r}: the host is missing")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {text!r}: the port must be a number 1-65535") from None
    if port is None:
        port = MQTTS_PORT if _SCHEMES[scheme] else MQTT_PORT
    elif port == 0:
        raise ValueError(f"broker URL {text!r}: the port must be a number 1-65535")
    return BrokerAddress(host=host, port=port, tls=_SCHEMES[scheme])
