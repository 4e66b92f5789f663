"""MQTT test helpers: a real mosquitto per test, and subscribers that collect what arrives.

The helpers take ``timeout`` and return what arrived by then instead of raising, so a
test can assert on exactly what came (ruff's ASYNC109 is silenced for them).

Use from a test module::

    from tests.mqtt_fixtures import broker, collect, subscribed  # noqa: F401 (fixture)

``broker`` starts a :class:`~bodycam.sim.broker.LocalMosquitto` on a free loopback port in
the test's ``tmp_path`` and always stops it. Subscribers use aiomqtt directly, each with
its own client id, and every client is closed before the helper returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bodycam.daemon.telemetry import TelemetrySettings, parse_broker_url
from bodycam.sim.broker import LocalMosquitto

__all__ = [
    "Subscription",
    "broker",
    "collect",
    "eventually",
    "fast_settings",
    "mqtt_client",
    "retained",
    "subscribed",
]

_ids = itertools.count(1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A started mosquitto on 127.0.0.1 (anonymous access), stopped after the test."""
    with LocalMosquitto(tmp_path / "mosquitto") as running:
        yield running


def mqtt_client(url: str, **kwargs: Any) -> aiomqtt.Client:
    """An aiomqtt client for ``url`` (``mqtt://`` or ``mqtts://``) with a unique client id.

    ``kwargs`` go to ``aiomqtt.Client`` (``tls_params``, ``username``, ...); for
    ``mqtts://`` without ``tls_params`` the system CAs are used.
    """
    address = parse_broker_url(url)
    if address.tls and "tls_params" not in kwargs:
        kwargs["tls_params"] = aiomqtt.TLSParameters()
    kwargs.setdefault("identifier", f"test-{os.getpid()}-{next(_ids)}")
    kwargs.setdefault("timeout", 5)
    return aiomqtt.Client(address.host, address.port, **kwargs)


class Subscription:
    """Messages arriving for one subscribed client."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def take(self, count: int, timeout: float = 5.0) -> list[aiomqtt.Message]:  # noqa: ASYNC109
        """Up to ``count`` messages, fewer if ``timeout`` passes first (never raises on it)."""
        got: list[aiomqtt.Message] = []
        if count <= 0:
            return got
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for message in self.client.messages:
                    got.append(message)
                    if len(got) >= count:
                        break
        return got

    async def take_until(
        self,
        done: Callable[[aiomqtt.Message], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[aiomqtt.Message]:
        """Messages up to and including the first for which ``done`` is true (or the timeout)."""
        got: list[aiomqtt.Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for message in self.client.messages:
                    got.append(message)
                    if done(message):
                        break
        return got


@contextlib.asynccontextmanager
async def subscribed(
    url: str, topic_filter: str, *, qos: int = 1, **kwargs: Any
) -> AsyncIterator[Subscription]:
    """Connect, subscribe to ``topic_filter`` (SUBACK received), yield; then disconnect."""
    async with mqtt_client(url, **kwargs) as client:
        await client.subscribe(topic_filter, qos=qos)
        yield Subscription(client)


async def collect(
    url: str,
    topic_filter: str,
    count: int,
    timeout: float = 5.0,  # noqa: ASYNC109
    **kwargs: Any,
) -> list[aiomqtt.Message]:
    """Subscribe now and return up to ``count`` messages (retained ones arrive first)."""
    async with subscribed(url, topic_filter, **kwargs) as sub:
        return await sub.take(count, timeout)


async def retained(url: str, topic: str, timeout: float = 2.0, **kwargs: Any) -> bytes | None:  # noqa: ASYNC109
    """The payload retained on ``topic`` (exact topic, no wildcard), or None if there is none."""
    got = await collect(url, topic, 1, timeout, **kwargs)
    return bytes(got[0].payload) if got and got[0].retain else None


async def eventually(
    condition: Callable[[], bool],
    timeout: float = 5.0,  # noqa: ASYNC109
    interval: float = 0.02,
) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def fast_settings(url: str, client_id: str, **overrides: Any) -> TelemetrySettings:
    """Telemetry settings for tests: short keepalive and a reconnect window of 0.05-0.2 s."""
    values: dict[str, Any] = {
        "broker": parse_broker_url(url),
        "client_id": client_id,
        "keepalive_s": 5,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.2,
    }
    values.update(overrides)
    return TelemetrySettings(**values)
