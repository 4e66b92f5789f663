"""What bounds a camera's dock session: the largest request, and failed-auth back-off.

``MAX_REQUEST_PAYLOAD`` is computed from the message declarations (every request type with
every bounded field at its bound), so it follows the schema instead of being repeated by
hand. The camera announces it in its HELLO and its deframer accepts no longer payload
(docs/protocol.md, "Limits"). :class:`AuthLimiter` backs off after failed dock
authentications and outlives sessions, so a rogue dock cannot try keys at link speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import (
    MAX_POLICY_SIZE,
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    Ack,
    AuthDock,
    Bye,
    ByeReason,
    Capability,
    Commit,
    ConfigPush,
    DockCertificate,
    ErrorCode,
    FileKind,
    Hello,
    ListClips,
    Message,
    Read,
    Role,
    StatusReq,
    TimeSet,
    encode_message,
)

# After the n-th failed authentication in a row, refuse for min(2**(n-1), 60) seconds.
_LOCKOUT_MAX_S = 60.0


def largest_requests() -> list[Message]:
    """The largest message of every type a dock may send, every bounded field at its bound."""
    cert = DockCertificate(
        dock_id="d" * 64,
        public_key=bytes(32),
        not_before_s=0,
        not_after_s=0,
        issuer=bytes(8),
        signature=bytes(64),
    )
    return [
        Hello(
            PROTOCOL_VERSION,
            SCHEMA_HASH,
            Role.DOCK,
            "n" * 64,
            "f" * 64,
            Capability(0),
            0,
            0,
            bytes(32),
        ),
        AuthDock(cert, bytes(64)),
        TimeSet(0, bytes(64)),
        ConfigPush(bytes(MAX_POLICY_SIZE), bytes(64)),
        ListClips(0, 0),
        Read(bytes(16), FileKind.SEGMENT, 0, 0, 0),
        Commit(bytes(16), bytes(32), bytes(64)),
        StatusReq(),
        Bye(ByeReason.DONE),
        Ack(),
    ]


# The camera's deframer takes no payload longer than the largest request (CONFIG_PUSH with a
# full policy, 8 258 bytes): a forged header cannot make it wait for 64 KiB.
MAX_REQUEST_PAYLOAD = max(len(encode_message(m)) for m in largest_requests())


@dataclass
class AuthLimiter:
    """Backs off after failed dock authentications; shared by all sessions of a daemon."""

    failures: int = 0
    locked_until: float = 0.0
    monotonic: Callable[[], float] = field(default=time.monotonic)

    def check(self) -> None:
        """Refuse while locked out.

        Raises:
            ProtocolError: RATE_LIMITED, naming how long to wait.
        """
        wait = self.locked_until - self.monotonic()
        if wait > 0:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"too many failed attempts; retry in {wait:.0f} s"
            )

    def failed(self) -> None:
        """Count a failed authentication and lock out for longer."""
        self.failures += 1
        self.locked_until = self.monotonic() + min(2.0 ** (self.failures - 1), _LOCKOUT_MAX_S)

    def succeeded(self) -> None:
        """A dock proved itself: forget earlier failures."""
        self.failures = 0
        self.locked_until = 0.0


__all__ = ["MAX_REQUEST_PAYLOAD", "AuthLimiter", "largest_requests"]
