"""The simulated world on a unix socket: another process presses the camera's buttons.

Used when the daemon runs as its own process on the simulated board (power-cut tests, the
acceptance suite). One JSON object per line in, one reply per line out. Lines are bounded
before they are read, and a bad line gets an error reply, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodycam.sim.actions import ActionError, perform

if TYPE_CHECKING:
    from bodycam.sim.board import SimBoard

log = logging.getLogger(__name__)
MAX_LINE = 4096


async def _serve_client(
    board: SimBoard, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                writer.write(b'{"ok": false, "error": "line too long"}\n')
                await writer.drain()
                return
            reply: dict[str, Any]
            try:
                action = json.loads(line)
                if isinstance(action, dict):
                    reply = {"ok": True, **(await perform(board, action))}
                else:
                    reply = {"ok": False, "error": "expected a JSON object"}
            except (ActionError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_world(board: SimBoard, path: Path) -> None:
    """Serve world actions on ``path`` until cancelled."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(path.unlink, missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda r, w: _serve_client(board, r, w), path=str(path), limit=MAX_LINE
    )
    log.info("simulated world listening on %s", path)
    try:
        async with server:
            await server.serve_forever()
    finally:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 (cleanup on cancellation: no await here)
