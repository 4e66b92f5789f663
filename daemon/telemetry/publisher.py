"""The telemetry publisher used by the daemon, the dock and the fleet simulator.

Recording never waits for telemetry: :meth:`Telemetry.set_state`, :meth:`Telemetry.event`
and :meth:`Telemetry.progress` only store what they are given and return; they never raise.
:meth:`Telemetry.run` owns the broker connection and is the only part that waits.

QoS and retain per message (docs/telemetry.md has the full table):

- ``online``: QoS 1, retained. ``1`` on connect, ``0`` on a clean stop, and ``0`` as the
  last will, so a dead camera shows offline. Retained so a view that starts later knows.
- ``state`` (and a dock's ``bay/<n>``): QoS 1, retained, latest wins. Retained for the
  same reason; QoS 1 because a lost state would stand for a whole interval.
- ``event``: QoS 1, not retained, queued until the broker acknowledged it, in order.
  Events are history, not state: retaining one would replay it as new to every subscriber.
- ``progress``: QoS 0, not retained, never queued: the next one replaces it within a second.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bodycam.daemon.telemetry.connection import Connection
from bodycam.daemon.telemetry.payloads import body_json, encode_event, is_valid_kind, safe_kind
from bodycam.daemon.telemetry.pending import Pending
from bodycam.daemon.telemetry.queue import EventQueue
from bodycam.daemon.telemetry.settings import TelemetrySettings
from bodycam.daemon.telemetry.topics import TopicSet

__all__ = ["Telemetry", "TelemetrySettings", "TelemetryStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TelemetryStats:
    """A snapshot of what the publisher did; every failure is counted here."""

    connected: bool
    published: int  # messages the broker took (QoS 1: acknowledged; QoS 0: written)
    delivered_events: int  # queued events acknowledged and removed from the queue
    queued: int
    dropped: Mapping[str, int]  # events dropped from a full queue, by kind
    reconnects: int  # connections made after the first one
    last_error: str | None  # "<kind>: <message>" of the latest failure
    # Additions:
    failures: Mapping[str, int] = field(default_factory=dict)  # refused, tls, auth, lost, ...
    storage_failures: int = 0  # the queue file could not be opened or written
    queue_persistent: bool = False  # a file mirrors the queue right now
    bad_input: int = 0  # calls whose input had to be repaired or was ignored


class Telemetry:
    """Publishes one camera's (or dock's) state and events; see the module docstring.

    Call the plain methods from the event loop's thread. Run :meth:`run` as a task and
    cancel it to stop: it then publishes ``online=0`` and disconnects within ~2 s.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        topics: TopicSet,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Open the queue (reading its file, if any); nothing touches the network yet.

        ``clock`` times the state interval and the backoff; ``wall_clock`` (an addition)
        stamps ``t`` in payloads (the simulator passes its own).
        """
        self.settings = settings
        self.topics = topics
        self._wall_clock = wall_clock
        self._queue = EventQueue(settings.queue_path, settings.queue_max)
        self._pending = Pending(self._queue, state_interval_s=settings.state_interval_s)
        self._connection = Connection(
            settings, topics, self._pending, clock=clock, wall_clock=wall_clock
        )
        self._bad_input = 0
        self._warned: set[str] = set()
        if not settings.broker.tls and (settings.ca_file or settings.cert_file):
            log.warning(
                "telemetry: certificate files are set but %s is not mqtts://: TLS is not used",
                settings.broker.url,
            )

    # ----- the daemon's side: store and return --------------------------------------------

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Make ``state`` the retained state (latest wins).

        Published when it changes (at most once a second) and every ``state_interval_s``.
        """
        self._set_retained(self.topics.state, state)

    def set_retained(self, topic: str, state: Mapping[str, Any]) -> None:
        """Like :meth:`set_state`, for another retained topic of this publisher (a dock bay).

        ``topic`` must lie below ``topics.root`` (e.g. ``DockTopics.bay(3)``); anything
        else is logged once and ignored.
        """
        t = self.topics
        if not (isinstance(topic, str) and topic.startswith(t.root + "/")) or topic in (
            t.event,
            t.online,
            t.progress,
        ):
            self._bad("topic", "telemetry: ignored retained state for topic %r", topic)
            return
        self._set_retained(topic, state)

    def event(
        self, kind: str, data: Mapping[str, Any] | None = None, *, critical: bool = True
    ) -> None:
        """Queue an event; delivered in order with QoS 1 once the broker is reachable."""
        try:
            if not is_valid_kind(kind):
                self._bad("kind", "telemetry: event kind %r renamed for the wire", kind)
                kind = safe_kind(kind)
            t = self._wall_clock()

            def build(seq: int) -> bytes:
                return encode_event(seq, t, kind, data, critical=critical)

            self._queue.put(kind, build, critical=critical)
            self._pending.wake.set()
        except Exception:  # never into the recorder; logged once
            self._bad("event", "telemetry: could not queue event %r", kind, exc_info=True)

    def progress(self, data: Mapping[str, Any]) -> None:
        """Offer the latest offload progress: QoS 0, never queued, replaced by the next."""
        try:
            self._pending.set_progress(body_json(data))
        except Exception:  # never into the recorder; logged once
            self._bad("progress", "telemetry: could not encode progress", exc_info=True)

    @property
    def stats(self) -> TelemetryStats:
        """What happened so far (cheap: the fleet view reads it often)."""
        c = self._connection
        return TelemetryStats(
            connected=c.connected,
            published=c.published,
            delivered_events=c.delivered_events,
            queued=len(self._queue),
            dropped=self._queue.dropped,
            reconnects=max(0, c.sessions - 1),
            last_error=c.last_error,
            failures=dict(c.failures.counts),
            storage_failures=self._queue.storage_failures,
            queue_persistent=self._queue.persistent,
            bad_input=self._bad_input,
        )

    # ----- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish ``online=1``, the state and the queue in order; reconnect on loss.

        Backoff: full jitter over a window from ``backoff_min_s`` doubling to
        ``backoff_max_s``. Runs until cancelled; on cancel publishes ``online=0`` and
        disconnects within ~2 s. Never raises anything but ``CancelledError``.
        """
        await self._connection.run()

    def close(self) -> None:
        """Addition: commit the queue file's pending writes and close it (after ``run``).

        Optional: without it, the file still holds every committed write (WAL), but the
        writes still pending in memory at exit are lost.
        """
        with contextlib.suppress(Exception):
            self._queue.close()

    # ----- inside -------------------------------------------------------------------------

    def _set_retained(self, topic: str, state: Mapping[str, Any]) -> None:
        try:
            self._pending.set_retained(topic, body_json(state))
        except Exception:  # never into the recorder; logged once
            self._bad("state", "telemetry: could not encode state for %s", topic, exc_info=True)

    def _bad(self, what: str, message: str, *args: object, exc_info: bool = False) -> None:
        self._bad_input += 1
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args, exc_info=exc_info)
