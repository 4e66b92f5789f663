"""One clock and one timer heap for every camera of the fleet.

A camera never sleeps on its own: 22,000 sleeping tasks would cost a wake-up each per timer,
and the loop's own timer heap would hold them all anyway. Here the heap holds one entry per
camera (its next wake); one task pops what is due, lets the camera handle it at the time it
was due, not at the time it was popped, and pushes the camera's next wake. When the loop
falls behind, cameras see their events late in real time but in the right order and with
the right times, so the state machine behaves as it would have on time.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Sequence
from typing import Protocol

# How many wakes run before the scheduler yields to the telemetry tasks when behind.
_BATCH = 200
# Longest single sleep, so a stop request or a changed plan is seen promptly.
_MAX_SLEEP_S = 0.5


class Wakeable(Protocol):
    """What the scheduler drives (``FleetCamera``)."""

    def wake(self, t: float) -> float | None: ...


class FleetClock:
    """Fleet (shift) time: ``speed`` simulated seconds per real second since ``start``."""

    def __init__(self, speed: float, *, real: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._real = real
        self._real0 = real()

    def now(self) -> float:
        """Simulated seconds since the fleet started."""
        return (self._real() - self._real0) * self.speed

    def real_seconds_until(self, t: float) -> float:
        """Real seconds from now until fleet time ``t`` (negative once it has passed)."""
        return (t - self.now()) / self.speed


class Scheduler:
    """Wakes each camera when it asked to be woken, in fleet-time order."""

    def __init__(self, clock: FleetClock, cameras: Sequence[Wakeable]) -> None:
        self.clock = clock
        self._cameras = cameras
        self._heap: list[tuple[float, int]] = []
        self.wakes = 0
        self.max_lag_s = 0.0  # real seconds the worst wake came after its time

    def schedule(self, slot: int, t: float | None) -> None:
        """Wake camera ``slot`` at fleet time ``t`` (None: never again)."""
        if t is not None:
            heapq.heappush(self._heap, (t, slot))

    @property
    def pending(self) -> int:
        """Cameras still waiting for a wake."""
        return len(self._heap)

    def next_due(self) -> float | None:
        """The earliest pending wake, or None when every camera is done."""
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float, limit: int = _BATCH) -> int:
        """Run up to ``limit`` wakes due at or before fleet time ``now``; how many ran."""
        heap, cameras = self._heap, self._cameras
        ran = 0
        while heap and ran < limit:
            t, slot = heap[0]
            if t > now:
                break
            nxt = cameras[slot].wake(t)
            if nxt is None:
                heapq.heappop(heap)
            else:
                # Never earlier than now-due: a camera must not wake itself into the past.
                heapq.heapreplace(heap, (max(nxt, t), slot))
            ran += 1
        self.wakes += ran
        return ran

    async def run(self, *, until: float | None = None) -> None:
        """Drive the cameras until all are done or fleet time reaches ``until``."""
        clock = self.clock
        while self._heap:
            now = clock.now()
            if until is not None and now >= until:
                return
            horizon = now if until is None else min(now, until)
            if self.run_due(horizon):
                lag = (now - self._heap[0][0]) / clock.speed if self._heap else 0.0
                self.max_lag_s = max(self.max_lag_s, lag)
                # Behind (or just caught up): give the connections their turn, then go on.
                await asyncio.sleep(0)
                continue
            due = self._heap[0][0]
            if until is not None:
                due = min(due, until)
            await asyncio.sleep(min(_MAX_SLEEP_S, max(0.0, clock.real_seconds_until(due))))
