"""Error codes of the dock link and the one exception its decoders raise.

The codes travel on the wire in ERROR messages (``docs/protocol.md`` says when each is used),
so their numbers are part of the protocol: add new ones at the end, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Why a request failed, as carried by an ERROR message (u16)."""

    MALFORMED = 1
    UNKNOWN_MESSAGE = 2
    VERSION_MISMATCH = 3
    SCHEMA_MISMATCH = 4
    NOT_AUTHENTICATED = 5
    AUTH_FAILED = 6
    RATE_LIMITED = 7
    BAD_STATE = 8
    NO_SUCH_CLIP = 9
    NO_SUCH_FILE = 10
    BAD_RANGE = 11
    CHAIN_MISMATCH = 12
    BAD_SIGNATURE = 13
    POLICY_REJECTED = 14
    BUSY = 15
    STORAGE_ERROR = 16
    UNSUPPORTED = 17


class ProtocolError(Exception):
    """Bytes from the peer broke the protocol; ``code`` is what to answer in an ERROR message.

    Attributes:
        code: The error code that describes the fault.
        detail: Human-readable detail (which message, which field).
    """

    def __init__(self, code: ErrorCode, detail: str) -> None:
        # Both go to Exception so the error pickles and reprs with its arguments.
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code.name}: {self.detail}"
