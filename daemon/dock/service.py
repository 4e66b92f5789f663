"""The daemon's docking service: while the camera sits in a dock, answer the dock.

It waits for the board's dock port to report a dock, opens the link, and serves sessions on
it until the camera is lifted out. Undocking closes the link at once; whatever was not
COMMITted simply stays on the card for next time.

Nothing authenticated outlives its connection: every session (a new :class:`Responder` and
:class:`CameraSession`) starts ``NEW`` after a hang-up, a re-open of the port or silence
(``idle_timeout_s``), and within a session a request from another request stream drops the
authentication (``CameraSession.new_peer``). Only the failed-authentication limiter and the
clock-trust state are shared by sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bodycam.daemon.dock.clock_trust import ClockTrust
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.session import (
    MAX_REQUEST_PAYLOAD,
    AuthLimiter,
    CameraHooks,
    CameraIdentity,
    CameraSession,
    SessionLog,
)
from bodycam.drivers.interfaces import ByteLink, DockPort, LinkClosedError
from bodycam.drivers.link.endpoint import Responder

_log = logging.getLogger(__name__)

# How long a docked camera waits for a dock that has gone quiet before it starts over.
IDLE_TIMEOUT_S = 30.0
_OPEN_RETRY_S = 1.0


class DockService:
    """Serves dock sessions whenever ``port`` says the camera is docked."""

    def __init__(
        self,
        port: DockPort,
        identity: CameraIdentity,
        outbox: Outbox,
        hooks: CameraHooks,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        on_session_end: Callable[[SessionLog], None] | None = None,
        clock_trust: ClockTrust | None = None,
    ) -> None:
        self.port = port
        self.on_session_end = on_session_end
        self.identity = identity
        self.outbox = outbox
        self.hooks = hooks
        self.limiter = AuthLimiter()
        # Pass one backed by the state directory, or the trust state ends with the process.
        self.clock_trust = clock_trust if clock_trust is not None else ClockTrust()
        self.idle_timeout_s = idle_timeout_s
        self.sessions = 0
        self.data_bytes_sent = 0
        self._docked = asyncio.Event()
        self._link: ByteLink | None = None

    def docked_changed(self, docked: bool) -> None:
        """Called on the event loop when the dock port changes."""
        if docked:
            self._docked.set()
            return
        self._docked.clear()
        if self._link is not None:
            self._link.close()  # wakes the session's read with LinkClosedError

    async def run(self) -> None:
        if self.port.docked:
            self._docked.set()
        while True:
            await self._docked.wait()
            try:
                link = await self.port.open_link()
            except LinkClosedError as exc:
                _log.warning("docked, but the link cannot be opened: %s", exc)
                await asyncio.sleep(_OPEN_RETRY_S)
                continue
            self._link = link
            try:
                await self._serve(link)
            finally:
                self._link = None
                self.outbox.close()
                link.close()

    async def _serve(self, link: ByteLink) -> None:
        while self._docked.is_set():
            session = CameraSession(
                self.identity, self.outbox, self.hooks, self.limiter, self.clock_trust
            )
            responder = Responder(
                link,
                session.handle,
                idle_timeout_s=self.idle_timeout_s,
                max_payload=MAX_REQUEST_PAYLOAD,
                on_new_peer=session.new_peer,
            )
            try:
                await responder.run()
            except LinkClosedError as exc:
                if self._docked.is_set():
                    _log.warning("dock link lost: %s", exc)
                    # A dock that vanished: give the port a moment before reopening it.
                    await asyncio.sleep(_OPEN_RETRY_S)
                return
            finally:
                self.data_bytes_sent += responder.stats.data_bytes_sent
                if session.log.dock_id is not None:
                    self.sessions += 1
                    log = session.log
                    _log.info(
                        "dock session with %s ended: %s, %d clip(s) committed and deleted, "
                        "%d bytes sent",
                        log.dock_id,
                        "authenticated" if log.authenticated else f"refused ({log.refusal})",
                        log.clips_deleted,
                        log.data_bytes,
                    )
                    if self.on_session_end is not None:
                        self.on_session_end(log)
