"""One bay of the reference dock: open its port, serve each camera, report, never fail others.

A bay is a task in the dock's TaskGroup (``--port``) or one per camera found (``--watch``).
Whatever happens in one bay (a port that cannot be opened, a camera that lies, a store
that breaks, a bug) ends in a :class:`DockReport` with an error that is printed, logged and
published; it never leaves :func:`run_bay` as an exception, so it can cost no other bay
its session, and the process's exit code says whether any bay had an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bodycam.dock.agent import DockAgent, DockReport
from bodycam.dock.telemetry import DockTelemetry
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.serial_link import open_serial

__all__ = ["log_task_failure", "print_report", "run_bay"]

_log = logging.getLogger(__name__)

_REOPEN_S = 1.0
_MAX_SHOWN = 200  # characters of one camera-supplied text on the console


def _shown(text: str) -> str:
    """Text that came from a camera, safe for a terminal: no control characters, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= _MAX_SHOWN else cleaned[:_MAX_SHOWN] + "..."


def print_report(report: DockReport) -> None:
    """One line per session and one per clip, for the operator at the dock host."""
    who = report.device_id or "unknown camera"
    if report.error and not report.authenticated:
        print(f"{report.port}: {who}: refused: {_shown(report.error)}")
        return
    offset = (
        f", clock corrected by {report.clock_offset_s:+.3f} s"
        if report.clock_offset_s is not None
        else ""
    )
    print(
        f"{report.port}: {who}: {len(report.committed)} clip(s) committed, "
        f"{len(report.rejected)} rejected, {report.bytes_received} bytes received"
        f" ({report.bytes_resumed} resumed){offset}"
    )
    if report.clock_refused is not None:
        print(f"  clock not set: the camera refused: {_shown(report.clock_refused)}")
    for clip in report.clips:
        detail = f": {_shown('; '.join(clip.problems))}" if clip.problems else ""
        print(f"  {clip.status.upper():9} {_shown(clip.name)}{detail}")
        if clip.conflict_with:
            print(
                f"  ALERT     clip id {clip.clip_id} is also held for "
                f"{', '.join(clip.conflict_with)} (custody: clip_id_conflict)"
            )
    if report.error:
        print(f"  interrupted: {_shown(report.error)} (the rest stays on the camera for next time)")


def _tell(action: Callable[..., Any], *args: Any) -> None:
    """Telemetry is a report, not a duty: its failure (a full queue disk) ends no session."""
    try:
        action(*args)
    except Exception:  # logged; the bay goes on
        _log.exception("telemetry: %s failed", getattr(action, "__name__", action))


async def _wait_until_gone(link: ByteLink) -> None:
    with contextlib.suppress(LinkClosedError):
        while True:
            await link.read()


def _finished(report: DockReport, telemetry: DockTelemetry | None) -> None:
    try:
        print_report(report)
    except Exception:  # a console that fails must not end the bay
        _log.exception("%s: cannot print the report", report.port)
    if report.error:
        _log.warning("%s: session ended with an error: %s", report.port, report.error)
    if telemetry is not None:
        _tell(telemetry.finished, report.port, report)


async def run_bay(
    port: str, agent: DockAgent, *, once: bool, telemetry: DockTelemetry | None = None
) -> list[DockReport]:
    """Serve the cameras that dock on ``port``; with ``once``, just the first one.

    Never raises except :class:`asyncio.CancelledError`. With ``once``, a port that cannot
    be opened is a report with an error (the exit code says so), not an exception.
    """
    reports: list[DockReport] = []
    if telemetry is not None:
        _tell(telemetry.bay_open, port)
        agent.on_progress = telemetry.progress_for(port)
    while True:
        try:
            link = open_serial(port)
        except Exception as exc:  # LinkClosedError, or anything else
            if once:
                report = DockReport(port=port, dock_id=agent.identity.dock_id, error=str(exc))
                reports.append(report)
                _finished(report, telemetry)
                return reports
            _log.debug("%s: %s", port, exc)
            await asyncio.sleep(_REOPEN_S)
            continue
        try:
            if telemetry is not None:
                _tell(telemetry.camera_seated, port)
            report = await agent.serve(link)
            reports.append(report)
            _finished(report, telemetry)
            if once:
                return reports
            await _wait_until_gone(link)
            if telemetry is not None:
                _tell(telemetry.camera_left, port)
        except Exception as exc:  # serve never raises; this is the bay's own
            _log.exception("%s: bay fault; serving the next camera", port)
            if once:
                if not reports:
                    error = f"internal error: {type(exc).__name__}: {exc}"
                    reports.append(DockReport(port, dock_id=agent.identity.dock_id, error=error))
                return reports
            await asyncio.sleep(_REOPEN_S)
        finally:
            link.close()


def log_task_failure(task: asyncio.Task[Any]) -> None:
    """A done-callback for bay tasks nobody awaits (``--watch``): a failure is logged, not lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        _log.error("bay %s failed: %s", task.get_name(), exc, exc_info=exc)
