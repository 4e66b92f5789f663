"""What one docking session reports: an outcome per listed clip, progress, the session's end.

These are the dock's answers to the operator, the telemetry and the tests, kept apart from the
session that fills them in (:mod:`bodycam.dock.agent`) so a view or a publisher can read a
report without importing the protocol machinery. Every status but ``committed`` means the clip
is still on the camera; the statuses are named once here so nothing spells them differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.drivers.interfaces import LinkClosedError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import Status

__all__ = [
    "COMMITTED",
    "KEPT",
    "REFUSED",
    "REJECTED",
    "SKIPPED",
    "STATUSES",
    "ClipOutcome",
    "DockRefused",
    "DockReport",
    "Progress",
    "end_reason",
]

_log = logging.getLogger(__name__)

# The camera acknowledged COMMIT and deleted the clip; the dock holds it verified.
COMMITTED: Final = "committed"
# Fetched (or found stored) and failed a check: quarantined or left, never committed.
REJECTED: Final = "rejected"
# Refused before anything was fetched: a bad name, an impossible size, no room.
REFUSED: Final = "refused"
# Stored and verified, but the camera did not confirm COMMIT: the next docking commits it.
KEPT: Final = "kept"
# Not tried: the session stopped first (a full store, a broken disk).
SKIPPED: Final = "skipped"
STATUSES: Final = (COMMITTED, REJECTED, REFUSED, KEPT, SKIPPED)


class DockRefused(Exception):  # noqa: N818 - an outcome, reported to the operator
    """The session cannot go on (an unknown camera, a failed proof, a lying listing, no room)."""


@dataclass
class ClipOutcome:
    """What became of one listed clip (``status`` is one of :data:`STATUSES`)."""

    clip_id: str
    name: str  # as listed when it passed the store's name rule, else its repr (80 chars)
    status: str
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    conflict_with: list[str] = field(default_factory=list)  # other devices holding this id

    def fail(self, status: str, problems: list[str]) -> ClipOutcome:
        """Set ``status`` and ``problems``; returns itself for a one-line ``return``."""
        self.status, self.problems = status, problems
        return self


@dataclass
class Progress:
    """Offload progress for a view: a callback gets this after every chunk."""

    device_id: str = ""
    clips_total: int = 0
    clips_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    current: str = ""


@dataclass
class DockReport:
    """One session: who docked, what happened to the clock, each clip, and why it ended."""

    port: str
    device_id: str | None = None
    dock_id: str = ""
    authenticated: bool = False
    clock_offset_s: float | None = None
    clock_refused: str | None = None  # the camera's reason for refusing TIME_SET
    policy_applied: bool | None = None
    clips: list[ClipOutcome] = field(default_factory=list)
    camera_status: Status | None = None
    bytes_received: int = 0
    bytes_resumed: int = 0
    error: str | None = None

    @property
    def committed(self) -> list[ClipOutcome]:
        return [c for c in self.clips if c.status == COMMITTED]

    @property
    def rejected(self) -> list[ClipOutcome]:
        """Clips the dock refused or rejected (each is a custody event and an alert)."""
        return [c for c in self.clips if c.status in (REJECTED, REFUSED)]

    @property
    def conflicts(self) -> list[ClipOutcome]:
        """Clips whose id another device's stored clip also carries."""
        return [c for c in self.clips if c.conflict_with]


def end_reason(port: str, exc: Exception) -> str:
    """The one line ``report.error`` says when ``exc`` ended the session on ``port``; logged.

    The camera or the link (a refusal, a lie, a hang-up) is a warning; the dock's own store
    or disk is an error; anything else is a bug, logged with its traceback for whoever
    fixes it, while the operator still gets one line.
    """
    if isinstance(exc, LinkClosedError | ProtocolError | DockRefused):
        _log.warning("%s: session ended early: %s", port, exc)
        return str(exc)
    if isinstance(exc, EvidenceError):  # the store (StoreError) or a file it could not read
        _log.error("%s: session ended by the store: %s", port, exc)
        return f"store: {exc}"
    if isinstance(exc, OSError):
        _log.error("%s: session ended by the dock host: %s", port, exc)
        return f"dock host: {exc.strerror or exc}"
    _log.error("%s: session ended by an internal error", port, exc_info=exc)
    return f"internal error: {type(exc).__name__}: {exc}"
