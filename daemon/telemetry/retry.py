"""Reconnect policy: exponential backoff with full jitter, failure kinds, quiet logging.

A force's worth of cameras loses its broker at the same moment (a broker restart, a
network cut at a station); full jitter spreads their reconnects over the whole backoff
window instead of sending them back in waves. The log names each kind of failure once
and then stays quiet (with a periodic count), because a camera offline for a shift
would otherwise fill its journal with the same line.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterator

import aiomqtt

REPEAT_S = 600.0
"""A failure kind already logged is logged again (with its count) at most this often."""


class Backoff:
    """Delays for consecutive failed attempts: uniform in ``[0, min(max, first * 2**n)]``."""

    def __init__(
        self,
        first_s: float = 0.5,
        max_s: float = 60.0,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first_s = max(0.0, first_s)
        self.max_s = max(self.first_s, max_s)
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the window up to ``max_s``."""
        window = min(self.max_s, self.first_s * 2.0 ** min(self.attempt, 64))
        self.attempt += 1
        return self._rng() * window

    def reset(self) -> None:
        """Start again from ``first_s`` (after a connection that held)."""
        self.attempt = 0


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the leaves of exception groups, and what each was raised from."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
            continue
        yield cur
        # aiomqtt re-raises socket errors as MqttError(str(exc)) "from None": the original
        # is still in __context__, and its type says more than the text.
        todo.extend(e for e in (cur.__cause__, cur.__context__) if e is not None)


def failure_kind(exc: BaseException) -> str:
    """Name the kind of a connection failure: tls, auth, refused, dns, timeout, lost, ..."""
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
        if isinstance(cause, socket.gaierror):
            return "dns"
        if isinstance(cause, FileNotFoundError | PermissionError | IsADirectoryError):
            return "credentials-file"
    for cause in causes:
        text = str(cause).lower()
        if isinstance(cause, aiomqtt.MqttCodeError) and "connection refused" in text:
            return "refused"
        if "not authori" in text or "bad user" in text or "password" in text:
            return "auth"
        if "certificate" in text or "ssl" in text or "tls" in text:
            return "tls"
        if "refused" in text:
            return "refused"
        if "unreachable" in text or "no route" in text:
            return "unreachable"
    for cause in causes:
        if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
            return "timeout"
    for cause in causes:
        if isinstance(cause, aiomqtt.MqttError | ConnectionError | OSError):
            return "lost"
    return f"error:{type(causes[0]).__name__}" if causes else "error"


def describe(exc: BaseException) -> str:
    """One line for logs and stats: the most telling message in the chain."""
    for cause in _causes(exc):
        text = str(cause).strip()
        if text:
            return f"{type(cause).__name__}: {text}"[:300]
    return type(exc).__name__


class FailureLog:
    """Logs each kind of failure once, then repeats a kind at most every ``repeat_s``."""

    def __init__(
        self, logger: logging.Logger, clock: Callable[[], float], repeat_s: float = REPEAT_S
    ) -> None:
        self._log = logger
        self._clock = clock
        self._repeat_s = repeat_s
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.failing = False

    def failed(self, kind: str, what: str, where: str) -> None:
        """Count one failure; log it if this kind is new or has been quiet long enough."""
        self.counts[kind] += 1
        self._since[kind] += 1
        self.failing = True
        now = self._clock()
        last = self._last.get(kind)
        if last is None:
            self._log.warning("telemetry: %s (%s): %s; retrying with backoff", where, kind, what)
        elif now - last >= self._repeat_s:
            self._log.warning(
                "telemetry: %s still failing (%s, %d times since last report): %s",
                where,
                kind,
                self._since[kind],
                what,
            )
        else:
            self._log.debug("telemetry: %s (%s): %s", where, kind, what)
            return
        self._last[kind] = now
        self._since[kind] = 0

    def recovered(self, where: str) -> None:
        """Log the return of the connection once after failures."""
        if self.failing:
            self._log.info(
                "telemetry: connected to %s again (%d failures so far)",
                where,
                sum(self.counts.values()),
            )
            self.failing = False
