"""What a dock tells the force's broker: its bays, the cameras in them, offloads, failures.

Retained: the dock's state (bays, cameras present, totals) and one topic per bay (who is in
it and how far its offload got), so a dashboard that connects mid-shift sees every dock as it
is. Events (QoS 1, in order): ``camera_seated``, ``offload_done`` and, for every clip the
dock refused, ``verification_failed``: evidence that did not verify is something a force
must hear about at once; so is ``clip_id_conflict``, a clip id that two cameras claim (one
of them re-signed the other's footage). A session that ended with an error says so in its
``offload_done`` (``error``). Progress goes out as QoS 0, latest only (docs/telemetry.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.daemon.telemetry import DockTopics, Telemetry
from bodycam.dock.agent import DockReport, Progress


def bay_name(port: str) -> str:
    """A bay's name for topics: its port's last path part (``ttyACM0``, a camera serial)."""
    return Path(port).name


@dataclass
class _Totals:
    offloads: int = 0
    committed: int = 0
    rejected: int = 0
    bytes: int = 0


class DockTelemetry:
    """Reports one dock's bays through a :class:`Telemetry` built with ``DockTopics``."""

    def __init__(self, telemetry: Telemetry, topics: DockTopics) -> None:
        self.telemetry = telemetry
        self.topics = topics
        self.dock_id = topics.dock_id
        self._bays: dict[str, dict[str, Any]] = {}
        self._totals = _Totals()

    def _bay(self, port: str, **fields: Any) -> None:
        name = bay_name(port)
        bay = {"bay": name, **fields}
        self._bays[name] = bay
        self.telemetry.set_retained(self.topics.bay(name), bay)
        self._publish_state()

    def _publish_state(self) -> None:
        t = self._totals
        self.telemetry.set_state(
            {
                "dock_id": self.dock_id,
                "bays": len(self._bays),
                "cameras_present": sum(1 for b in self._bays.values() if b["phase"] != "empty"),
                "offloads": t.offloads,
                "clips_committed": t.committed,
                "clips_rejected": t.rejected,
                "bytes_received": t.bytes,
            }
        )

    def bay_open(self, port: str) -> None:
        """A bay is being served (no camera yet)."""
        self._bay(port, phase="empty")

    def camera_seated(self, port: str) -> None:
        self._bay(port, phase="connecting")
        self.telemetry.event("camera_seated", {"bay": bay_name(port)})

    def progress_for(self, port: str) -> Callable[[Progress], None]:
        """The agent's ``on_progress`` for ``port``: bay state and QoS 0 progress."""
        name = bay_name(port)

        def report(progress: Progress) -> None:
            fields = {
                "device_id": progress.device_id,
                "clips_total": progress.clips_total,
                "clips_done": progress.clips_done,
                "bytes_total": progress.bytes_total,
                "bytes_done": progress.bytes_done,
            }
            self._bay(port, phase="offloading", **fields)
            self.telemetry.progress({"bay": name, **fields})

        return report

    def finished(self, port: str, report: DockReport) -> None:
        """A session ended: totals, the bay's outcome, and an event per refused clip."""
        t = self._totals
        t.offloads += 1
        t.committed += len(report.committed)
        t.rejected += len(report.rejected)
        t.bytes += report.bytes_received
        name = bay_name(port)
        outcome = {
            "device_id": report.device_id,
            "authenticated": report.authenticated,
            "committed": len(report.committed),
            "rejected": len(report.rejected),
            "bytes": report.bytes_received,
            "error": report.error,
            "conflicts": len(report.conflicts),
            "clock_refused": report.clock_refused,
        }
        self._bay(port, phase="done", **outcome)
        # Alerts first (conflicts, each refused clip), the session's summary last.
        for clip in report.conflicts:
            self.telemetry.event(
                "clip_id_conflict",
                {
                    "bay": name,
                    "device_id": report.device_id,
                    "clip_id": clip.clip_id,
                    "other_devices": clip.conflict_with[:5],
                },
            )
        for clip in report.rejected:
            self.telemetry.event(
                "verification_failed",
                {
                    "bay": name,
                    "device_id": report.device_id,
                    "clip_id": clip.clip_id,
                    "problems": clip.problems[:5],
                },
            )
        self.telemetry.event("offload_done", {"bay": name, **outcome})

    def camera_left(self, port: str) -> None:
        self._bay(port, phase="empty")
