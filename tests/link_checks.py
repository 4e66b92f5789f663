"""Byte-link helpers shared by the serial link, faulty cable, dock port and RFC 2217 tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from bodycam.drivers.interfaces import ByteLink, LinkClosedError


async def read_exactly(link: ByteLink, nbytes: int, *, within_s: float | None = None) -> bytes:
    """Read until ``nbytes`` have arrived (a read returns what is there, maybe less).

    ``within_s``: fail with TimeoutError after this long (None: wait as long as it takes).
    """
    got = bytearray()
    async with asyncio.timeout(within_s):
        while len(got) < nbytes:
            got += await link.read()
    return bytes(got)


async def exchange(camera: ByteLink, dock: ByteLink, tag: bytes, *, within_s: float) -> None:
    """Send a tagged message each way and check it arrives intact."""
    await camera.write(b"from camera ", tag)
    assert await read_exactly(dock, 12 + len(tag), within_s=within_s) == b"from camera " + tag
    await dock.write(b"from dock ", tag)
    assert await read_exactly(camera, 10 + len(tag), within_s=within_s) == b"from dock " + tag


async def assert_closed(link: ByteLink, *pending_reads: Awaitable[bytes], within_s: float) -> None:
    """Every pending read ends with LinkClosedError, and so does a write on ``link``."""
    async with asyncio.timeout(within_s):
        for read in pending_reads:
            with pytest.raises(LinkClosedError):
                await read
        with pytest.raises(LinkClosedError):
            await link.write(b"anyone there?")
