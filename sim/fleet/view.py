"""The fleet as a force's dashboard sees it: counted from the broker, not from the cameras.

``FleetSummary`` reads what a subscriber to ``bodycam/v1/camera/+/{state,event,online}``
receives and keeps a few numbers per camera; anything malformed (a stranger's retained
message, a truncated payload, a field of the wrong type) is counted and skipped, never
trusted and never fatal. ``watch`` subscribes and prints the summary: one line every few
seconds in a log, a small table redrawn in place on a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import aiomqtt

from bodycam.daemon.telemetry import topics
from bodycam.daemon.telemetry.broker import BrokerAddress
from bodycam.daemon.telemetry.payloads import (
    PayloadError,
    decode_event,
    decode_online,
    decode_state,
)

# A camera's row: state name, recording, docked, low battery, failing.
_Row = tuple[str, bool, bool, bool, bool]
_LOW = "LOW_BATTERY"


@dataclass(frozen=True)
class Snapshot:
    """Counts at one moment; rates are over the time since the previous snapshot."""

    cameras: int
    online: int
    recording: int
    buffering: int
    docked: int
    low_battery: int
    failing: int
    clips: int
    clips_per_hour: float  # shift (simulated) hours
    messages: int
    messages_per_s: float  # real seconds
    malformed: int

    def line(self) -> str:
        """One log line."""
        return (
            f"cameras {self.cameras} online {self.online} | recording {self.recording} "
            f"buffering {self.buffering} docked {self.docked} | low battery "
            f"{self.low_battery} failing {self.failing} | clips/h {self.clips_per_hour:.0f} "
            f"| {self.messages_per_s:.0f} msg/s | malformed {self.malformed}"
        )

    def table(self) -> list[str]:
        """A small table for a terminal."""
        return [
            f"{'cameras':>10} {'online':>8} {'recording':>10} {'buffering':>10} {'docked':>8}",
            f"{self.cameras:>10} {self.online:>8} {self.recording:>10} {self.buffering:>10} "
            f"{self.docked:>8}",
            f"{'low batt':>10} {'failing':>8} {'clips/h':>10} {'msg/s':>10} {'malformed':>9}",
            f"{self.low_battery:>10} {self.failing:>8} {self.clips_per_hour:>10.0f} "
            f"{self.messages_per_s:>10.0f} {self.malformed:>9}",
        ]


def _row(state: dict[str, Any]) -> _Row:
    """A camera's row from its state; PayloadError when a field has the wrong type."""
    name, warnings = state.get("state"), state.get("warnings", [])
    recording, docked = state.get("recording", False), state.get("docked", False)
    if not isinstance(name, str) or not isinstance(warnings, list):
        raise PayloadError("state: 'state' must be a string and 'warnings' a list")
    if not isinstance(recording, bool) or not isinstance(docked, bool):
        raise PayloadError("state: 'recording' and 'docked' must be true or false")
    names = {w for w in warnings if isinstance(w, str)}
    return (name, recording, docked, _LOW in names, bool(names - {_LOW}))


class FleetSummary:
    """Per-camera rows from received messages, and the totals a dashboard shows.

    ``failing`` counts cameras with any warning except low battery (a full card, a write
    error, a camera or hardware fault, an unset clock): someone must look at those.
    """

    def __init__(self, *, speed: float = 1.0, clock: Any = time.monotonic) -> None:
        self._speed = speed
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._online: set[str] = set()
        self.messages = 0
        self.malformed = 0
        self.clips = 0
        self._last = (clock(), 0, 0)  # when, messages, clips at the previous snapshot

    @property
    def cameras(self) -> int:
        """Cameras that have published a readable state."""
        return len(self._rows)

    def feed(self, topic: str, payload: bytes) -> None:
        """Take one received message into account."""
        self.messages += 1
        try:
            info = topics.parse_topic(topic)
            if info.role != "camera":
                return
            if info.channel == "state":
                self._rows[info.id] = _row(decode_state(payload).state)
            elif info.channel == "online":
                if decode_online(payload):
                    self._online.add(info.id)
                else:
                    self._online.discard(info.id)
            elif info.channel == "event":
                event = decode_event(payload)
                if event.kind == "clip_closed":
                    self.clips += 1
        except (PayloadError, ValueError):
            self.malformed += 1

    def snapshot(self) -> Snapshot:
        """The counts now; rates since the previous snapshot."""
        now = self._clock()
        then, messages, clips = self._last
        self._last = (now, self.messages, self.clips)
        elapsed = max(now - then, 1e-9)
        rows = self._rows.values()
        return Snapshot(
            cameras=len(self._rows),
            online=len(self._online),
            recording=sum(r[1] for r in rows),
            buffering=sum(r[0] == "BUFFERING" for r in rows),
            docked=sum(r[2] for r in rows),
            low_battery=sum(r[3] for r in rows),
            failing=sum(r[4] for r in rows),
            clips=self.clips,
            clips_per_hour=(self.clips - clips) / (elapsed * self._speed) * 3600,
            messages=self.messages,
            messages_per_s=(self.messages - messages) / elapsed,
            malformed=self.malformed,
        )


def client_for(broker: BrokerAddress, identifier: str, **extra: Any) -> aiomqtt.Client:
    """An aiomqtt client for ``broker`` (TLS with the system's CAs for ``mqtts://``)."""
    tls = aiomqtt.TLSParameters() if broker.tls else None
    return aiomqtt.Client(broker.host, broker.port, identifier=identifier, tls_params=tls, **extra)


async def watch(
    broker: BrokerAddress,
    summary: FleetSummary,
    *,
    every_s: float = 5.0,
    out: TextIO = sys.stdout,
    live: bool | None = None,
) -> None:
    """Subscribe to the fleet's topics and print the summary until cancelled."""
    live = out.isatty() if live is None else live
    drawn = 0

    async def show() -> None:
        nonlocal drawn
        while True:
            await asyncio.sleep(every_s)
            snap = summary.snapshot()
            if live:
                lines = snap.table()
                up = f"\033[{drawn}F" if drawn else ""
                out.write(up + "".join(f"\033[2K{line}\n" for line in lines))
                drawn = len(lines)
            else:
                out.write(snap.line() + "\n")
            out.flush()

    async with client_for(broker, f"bodycam-fleet-view-{id(summary):x}") as client:
        for topic in (topics.CAMERA_STATES, topics.CAMERA_ONLINE, topics.CAMERA_EVENTS):
            await client.subscribe(topic, qos=0)
        printer = asyncio.create_task(show(), name="fleet view")
        try:
            async for message in client.messages:
                payload = message.payload
                summary.feed(message.topic.value, payload if isinstance(payload, bytes) else b"")
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
