"""One publisher's broker connection: connect, publish what is pending, reconnect, say goodbye.

Each attempt uses a fresh ``aiomqtt.Client`` with a clean session: what must survive a
lost connection is in our own queue, not in the client or the broker. A connection runs
two named tasks in a task group: the pump (publishes) and the watch (iterates
``client.messages``, which is how aiomqtt reports a dropped connection: the iteration
raises ``MqttError``), so a publish waiting for an acknowledgement that will never come
is cancelled as soon as the connection is gone instead of waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import aiomqtt

from bodycam.daemon.telemetry.connect_watch import ConnectWatch
from bodycam.daemon.telemetry.payloads import OFFLINE, ONLINE, encode_progress, encode_state
from bodycam.daemon.telemetry.pending import Pending
from bodycam.daemon.telemetry.queue import QueuedEvent
from bodycam.daemon.telemetry.retry import Backoff, FailureLog, describe, failure_kind
from bodycam.daemon.telemetry.settings import TelemetrySettings
from bodycam.daemon.telemetry.topics import TopicSet

log = logging.getLogger(__name__)

WINDOW = 16
"""Events in flight at once: one round trip per 16 events, not per event, on a slow link.
Order holds: one TCP stream, and the broker forwards a client's messages in order."""
FAREWELL_S = 2.0
"""How long a stop may spend publishing ``online=0`` and disconnecting."""
STABLE_S = 10.0
"""A connection that held this long resets the backoff (a broker that accepts and then
drops us, e.g. a duplicate client id, must not be retried in a tight loop)."""


class Connection:
    """Keeps one publisher connected and sends what :class:`Pending` holds."""

    def __init__(
        self,
        settings: TelemetrySettings,
        topics: TopicSet,
        pending: Pending,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.pending = pending
        self.clock = clock
        self.wall_clock = wall_clock
        self.backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s)
        self.failures = FailureLog(log, clock)
        self.connected = False
        self.published = 0
        self.delivered_events = 0
        self.sessions = 0
        self.last_error: str | None = None
        # CONNACK and each PUBACK are awaited at most this long before the link counts as
        # dead: a broker that answers pings but not publishes is as good as gone.
        self._reply_timeout = float(max(1, settings.keepalive_s))

    async def run(self) -> None:
        """Connect and publish until cancelled; every failure is counted, then retried."""
        where = self.settings.broker.url
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing may end the loop but a cancel
                self.last_error = f"{failure_kind(exc)}: {describe(exc)}"
                self.failures.failed(failure_kind(exc), describe(exc), where)
            finally:
                self.connected = False
            await asyncio.sleep(self.backoff.next_delay())

    def _make_client(self) -> tuple[aiomqtt.Client, ConnectWatch]:
        """An aiomqtt client for one attempt; its last will is ``online=0``, retained."""
        s = self.settings
        tls = None
        if s.broker.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
            )
        watch = ConnectWatch(s.client_id)
        client = aiomqtt.Client(
            s.broker.host,
            s.broker.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            logger=watch.logger,
            will=aiomqtt.Will(self.topics.online, OFFLINE, qos=1, retain=True),
            clean_session=True,
            keepalive=s.keepalive_s,
            timeout=self._reply_timeout,
            tls_params=tls,
            max_inflight_messages=WINDOW,
            # Small packets each waiting for an acknowledgement: Nagle's algorithm would
            # hold every one back until the previous was acknowledged.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        client.pending_calls_threshold = WINDOW + 4  # a full window is normal, not a warning
        return client, watch

    # ----- one connection -----------------------------------------------------------------

    async def _session(self) -> None:
        client, watch = self._make_client()
        await self._connect(client, watch)
        started = self.clock()
        self.connected = True
        self.sessions += 1
        self.failures.recovered(self.settings.broker.url)
        name = self.settings.client_id
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client), name=f"telemetry-watch:{name}")
                tg.create_task(self._pump(client), name=f"telemetry-pump:{name}")
        except asyncio.CancelledError:
            await self._close(client, farewell=True)
            raise
        except BaseException:
            await self._close(client, farewell=False)
            raise
        finally:
            self.connected = False
            if self.clock() - started >= STABLE_S:
                self.backoff.reset()

    async def _connect(self, client: aiomqtt.Client, watch: ConnectWatch) -> None:
        # aiomqtt connects in an executor thread; a cancel must not leave that attempt's
        # socket behind, so the attempt is not cancelled with us: it is finished or
        # abandoned here, within FAREWELL_S.
        attempt = asyncio.ensure_future(client.__aenter__())
        try:
            either: set[asyncio.Future[Any]] = {attempt, watch.failed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await asyncio.wait({attempt}, timeout=FAREWELL_S)
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                await self._close(client, farewell=False)
            elif not attempt.done():
                attempt.cancel()
            raise
        if attempt.done():
            attempt.result()  # connected, or raises why not
            return
        # paho saw the connection fail before CONNACK (e.g. a refused client certificate).
        attempt.cancel()
        await asyncio.wait({attempt})
        raise ConnectionError(f"closed before CONNACK: {watch.failed.result()}")

    async def _close(self, client: aiomqtt.Client, *, farewell: bool) -> None:
        """Publish ``online=0`` (when asked) and disconnect cleanly, within ``FAREWELL_S``."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FAREWELL_S):
                if farewell:
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.publish(self.topics.online, OFFLINE, qos=1, retain=True)
                        self.published += 1
                await client.__aexit__(None, None, None)

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed: the iteration only ends, with MqttError, on disconnection.
        async for _message in client.messages:
            pass

    async def _pump(self, client: aiomqtt.Client) -> None:
        pending = self.pending
        await self._publish(client, self.topics.online, ONLINE, qos=1, retain=True)
        pending.resend_all()
        while True:
            _raise_if_cancelled()
            pending.wake.clear()
            due, wait = pending.due(self.clock())
            for topic in due:
                body = pending.mark_sent(topic, self.clock())
                payload = encode_state(pending.queue.next_seq(), self.wall_clock(), body)
                await self._publish(client, topic, payload, qos=1, retain=True)
            progress = pending.take_progress()
            if progress is not None:
                payload = encode_progress(pending.queue.next_seq(), self.wall_clock(), progress)
                await self._publish(client, self.topics.progress, payload, qos=0, retain=False)
            batch = pending.queue.head(WINDOW)
            if batch:
                await self._send_events(client, batch)
            if due or batch or progress is not None:
                continue  # look again before sleeping: more may have come meanwhile
            await _wait_for(pending.wake, min(wait, pending.state_interval_s))

    async def _send_events(self, client: aiomqtt.Client, batch: list[QueuedEvent]) -> None:
        # Tasks start in creation order, so the publishes hit the socket in queue order.
        async with asyncio.TaskGroup() as tg:
            for event in batch:
                tg.create_task(
                    self._send_event(client, event),
                    name=f"telemetry-event:{self.settings.client_id}:{event.seq}",
                )

    async def _send_event(self, client: aiomqtt.Client, event: QueuedEvent) -> None:
        await self._publish(client, self.topics.event, event.payload, qos=1, retain=False)
        # Removed only now: the broker has acknowledged it (QoS 1 PUBACK).
        if self.pending.queue.remove(event.seq):
            self.delivered_events += 1

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int, retain: bool
    ) -> None:
        await client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop and an await swallowed it.

    On Python 3.11, ``asyncio.wait_for`` (which aiomqtt's ``publish`` waits with) returns
    normally when its future completes in the same turn of the loop as a cancel: the cancel
    is lost, and a loop that goes on to wait again would wait for ever, its task group
    having cancelled it once already. ``Task.cancelling()`` still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait_for(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``event`` is set or ``timeout_s`` has passed, whichever comes first.

    ``asyncio.wait`` cancels nothing of its own, so a cancel from outside always comes
    through (on Python 3.11 ``asyncio.timeout()`` may take such a cancel for its own when
    both land in the same turn of the loop).
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout_s)
    finally:
        waiter.cancel()
