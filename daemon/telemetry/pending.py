"""What waits to be published: retained bodies, the event queue, the latest progress.

The daemon's calls land here and return at once; the connection takes from here when it
can. Retained topics keep only their latest body: a state that changed ten times while
the broker was away is sent once, as it is now.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from bodycam.daemon.telemetry.queue import EventQueue

COALESCE_S = 1.0
"""A changed retained state goes out at most this often (a busy camera changes a lot)."""


@dataclass
class Retained:
    """One retained topic: its latest body and when it last went out (``clock`` time)."""

    body: str
    changed: bool = True
    sent_at: float | None = None


class Pending:
    """Everything one publisher has to send; ``wake`` is set whenever something arrives."""

    def __init__(self, queue: EventQueue, *, state_interval_s: float) -> None:
        self.queue = queue
        self.state_interval_s = max(COALESCE_S, state_interval_s)
        self.retained: dict[str, Retained] = {}
        self.progress: str | None = None
        # Created without a running loop: asyncio.Event binds to a loop only when awaited.
        self.wake = asyncio.Event()

    def set_retained(self, topic: str, body: str) -> None:
        """Make ``body`` the latest for ``topic``; wake the sender only if it changed."""
        current = self.retained.get(topic)
        if current is None:
            self.retained[topic] = Retained(body)
        elif current.body != body:
            current.body = body
            current.changed = True
        else:
            return
        self.wake.set()

    def set_progress(self, body: str) -> None:
        """Replace the progress waiting to go out."""
        self.progress = body
        self.wake.set()

    def take_progress(self) -> str | None:
        """The progress to send now, if any (it is sent once)."""
        body, self.progress = self.progress, None
        return body

    def due(self, now: float) -> tuple[list[str], float]:
        """Retained topics to send at ``now``, and the seconds until the next one is due."""
        due: list[str] = []
        wait = math.inf
        for topic, item in self.retained.items():
            if item.sent_at is None:
                due.append(topic)
                continue
            at = item.sent_at + (COALESCE_S if item.changed else self.state_interval_s)
            if at <= now:
                due.append(topic)
            else:
                wait = min(wait, at - now)
        return due, wait

    def mark_sent(self, topic: str, now: float) -> str:
        """Note that ``topic`` goes out now; return the body to send."""
        item = self.retained[topic]
        item.changed = False
        item.sent_at = now
        return item.body

    def resend_all(self) -> None:
        """A new connection: every retained topic goes out at once (the broker may be new)."""
        for item in self.retained.values():
            item.sent_at = None

    def has_work(self) -> bool:
        """True if events or progress are waiting (retained topics are timed by ``due``)."""
        return self.progress is not None or len(self.queue) > 0
