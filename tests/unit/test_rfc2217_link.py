"""The reference dock's RFC 2217 link, against ser2net serving a pseudo-terminal.

ser2net runs with the labgrid exporter's own settings, so this is the connection a runner
makes to a shared bench's dock port: bytes both ways (every byte value, telnet's 0xFF
included), a peer that goes away, a close while a read waits, and an exporter that is not
there, each ending as LinkClosedError and never as a hang.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.drivers.interfaces import LinkClosedError
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair
from bodycam.sim.broker import free_port
from tests.acceptance.rfc2217_link import Rfc2217Link
from tests.link_checks import assert_closed, exchange, read_exactly
from tests.server_process import listening, ser2net_command, server

TIMEOUT = 10.0


@pytest.fixture
def exported_pty(tmp_path: Path) -> Iterator[tuple[PtyPair, str]]:
    """A pty whose slave ser2net serves over RFC 2217; the test holds the master."""
    pair = open_pty_pair()
    port = free_port()
    try:
        command = ser2net_command(Path(pair.slave_path), port)
        with server(command, log=tmp_path / "ser2net.log", ready=lambda: listening(port)):
            yield pair, f"rfc2217://127.0.0.1:{port}"
    finally:
        for fd in (pair.master_fd, pair.slave_fd):
            os.close(fd)


async def test_every_byte_value_crosses_both_ways(exported_pty: tuple[PtyPair, str]) -> None:
    pair, url = exported_pty
    camera = FdLink(os.dup(pair.master_fd), "camera")
    dock = Rfc2217Link(url)
    try:
        everything = bytes(range(256)) * 64  # 0xFF is telnet's escape byte
        await exchange(dock, camera, everything, within_s=TIMEOUT)
        await exchange(camera, dock, everything, within_s=TIMEOUT)
    finally:
        dock.close()
        camera.close()


async def test_a_read_waiting_when_the_link_closes_ends(exported_pty: tuple[PtyPair, str]) -> None:
    _, url = exported_pty
    dock = Rfc2217Link(url)
    reading = asyncio.ensure_future(dock.read())
    await asyncio.sleep(0.3)
    dock.close()
    await assert_closed(dock, reading, within_s=TIMEOUT)


async def test_a_cancelled_read_loses_no_bytes(exported_pty: tuple[PtyPair, str]) -> None:
    pair, url = exported_pty
    camera = FdLink(os.dup(pair.master_fd), "camera")
    dock = Rfc2217Link(url)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await dock.read()  # nothing yet: the agent's timeouts cancel reads like this
        await camera.write(b"after the cancel")
        async with asyncio.timeout(TIMEOUT):
            assert await read_exactly(dock, 16) == b"after the cancel"
    finally:
        dock.close()
        camera.close()


async def test_no_exporter_there_is_a_clear_error() -> None:
    url = f"rfc2217://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(LinkClosedError, match=f"{url}: cannot connect"):
        Rfc2217Link(url, connect_timeout_s=2)
    assert time.monotonic() - started < 5
