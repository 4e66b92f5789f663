"""What the camera is doing, as one small record: for the view, health checks and tests."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class DeviceStatus:
    device_id: str
    firmware: str
    state: str = "OFF"
    warnings: list[str] = field(default_factory=list)
    stealth: bool = False
    recording: bool = False
    clip_id: str | None = None
    segments_sealed: int = 0
    last_segment: str | None = None
    clips_closed: int = 0
    battery_percent: float | None = None
    charging: bool = False
    storage_free_bytes: int | None = None
    storage_total_bytes: int | None = None
    clock_set: bool = True
    clock_offset_s: float | None = None  # the correction the dock applied at the last docking
    docked: bool = False
    dock_sessions: int = 0
    clips_offloaded: int = 0  # verified and committed by a dock, deleted from the card
    # Parts missing or failing, each naming the part and its config key.
    hardware_faults: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class StatusWriter:
    """Writes status.json atomically (readers never see half a file); failures are logged."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._last = ""
        self._warned = False

    def write(self, status: DeviceStatus) -> None:
        text = status.to_json()
        if text == self._last:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_name(self._path.name + ".tmp")
            tmp.write_text(text + "\n", encoding="utf-8")
            tmp.replace(self._path)
            self._last = text
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write %s: %s", self._path, exc)
                self._warned = True
