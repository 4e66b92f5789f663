"""FdLink and open_serial over real pseudo-terminals: integrity, back-pressure, hang-ups."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from bodycam.drivers.interfaces import LinkClosedError
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair, open_serial
from tests.link_checks import read_exactly

TIMEOUT = 10.0


@dataclass
class Wire:
    """Camera end (pty master) and dock end (pty slave opened with open_serial)."""

    pty: PtyPair
    camera: FdLink
    dock: FdLink
    holder_open: bool = True

    def drop_holder(self) -> None:
        """Close the pair's own slave fd: from now on only the dock holds the slave."""
        if self.holder_open:
            os.close(self.pty.slave_fd)
            self.holder_open = False

    def close(self) -> None:
        self.camera.close()
        self.dock.close()
        self.drop_holder()


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    pty = open_pty_pair()
    camera = FdLink(pty.master_fd, "camera")
    dock = open_serial(pty.slave_path)
    link = Wire(pty, camera, dock)
    yield link
    link.close()


def _random_chunks(
    rng: random.Random, data: bytes
) -> Iterator[list[bytes | bytearray | memoryview]]:
    """``data`` cut into groups of chunks of random sizes and types (empty ones included)."""
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        group: list[bytes | bytearray | memoryview] = []
        for _ in range(rng.randint(1, 40)):
            size = rng.choice((0, 1, 7, rng.randint(1, 5000), rng.randint(1, 300_000)))
            part = view[pos : pos + size]
            kind = rng.randrange(3)
            group.append(part if kind == 0 else bytes(part) if kind == 1 else bytearray(part))
            pos += len(part)
        yield group


async def _send(link: FdLink, rng: random.Random, data: bytes) -> None:
    for group in _random_chunks(rng, data):
        await link.write(*group)


async def test_large_gathered_writes_arrive_intact_both_ways(wire: Wire) -> None:
    rng = random.Random(7)
    to_dock = rng.randbytes(6_000_000)
    to_camera = rng.randbytes(3_000_000)
    async with asyncio.timeout(60):
        _, _, at_dock, at_camera = await asyncio.gather(
            _send(wire.camera, random.Random(1), to_dock),
            _send(wire.dock, random.Random(2), to_camera),
            read_exactly(wire.dock, len(to_dock)),
            read_exactly(wire.camera, len(to_camera)),
        )
    assert at_dock == to_dock
    assert at_camera == to_camera


async def test_every_byte_value_passes_unchanged(wire: Wire) -> None:
    # Raw mode: no CR/LF mapping, no XON/XOFF, no echo, no signals on ^C.
    data = bytes(range(256)) * 64
    async with asyncio.timeout(TIMEOUT):
        _, _, at_dock, at_camera = await asyncio.gather(
            wire.camera.write(data),
            wire.dock.write(data[::-1]),
            read_exactly(wire.dock, len(data)),
            read_exactly(wire.camera, len(data)),
        )
    assert at_dock == data
    assert at_camera == data[::-1]
    with pytest.raises(TimeoutError):  # nothing echoed back
        async with asyncio.timeout(0.2):
            await wire.camera.read()


async def test_read_returns_at_most_read_size() -> None:
    pty = open_pty_pair()
    small = FdLink(pty.master_fd, "small", read_size=10)
    try:
        os.write(pty.slave_fd, b"x" * 100)
        async with asyncio.timeout(TIMEOUT):
            assert len(await small.read()) <= 10
    finally:
        small.close()
        os.close(pty.slave_fd)


async def test_one_read_takes_everything_already_there() -> None:
    # A tty's line discipline hands over at most 4 KiB per read(2); a frame of 64 KiB that
    # has arrived must not cost one event-loop wake-up per 4 KiB. A packet socket gives
    # exactly one packet per read(2), so it shows whether read() took the rest as well.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = FdLink(ours.detach(), "packets", read_size=2000)
    try:
        for n in range(4):
            theirs.send(bytes([n]) * 1000)
        async with asyncio.timeout(TIMEOUT):
            first = await link.read()
            second = await link.read()
        # As much as read_size allows, nothing lost or reordered.
        assert first == b"\x00" * 1000 + b"\x01" * 1000
        assert second == b"\x02" * 1000 + b"\x03" * 1000
    finally:
        link.close()
        theirs.close()


async def test_writer_blocks_until_the_reader_reads(wire: Wire) -> None:
    payload = os.urandom(1_000_000)  # far more than the pty holds (~12 KiB)
    writer = asyncio.create_task(wire.camera.write(payload))
    await asyncio.sleep(0.3)
    assert not writer.done(), "write returned while the kernel could not hold the bytes"
    async with asyncio.timeout(TIMEOUT):
        got = await read_exactly(wire.dock, len(payload))
        await writer
    assert got == payload


async def test_cancelled_read_leaves_the_link_usable(wire: Wire) -> None:
    pending = asyncio.create_task(wire.camera.read())
    await asyncio.sleep(0.05)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await wire.dock.write(b"after")
    async with asyncio.timeout(TIMEOUT):
        assert await read_exactly(wire.camera, 5) == b"after"


async def test_second_concurrent_read_is_refused(wire: Wire) -> None:
    first = asyncio.create_task(wire.camera.read())
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError, match="another read"):
        await wire.camera.read()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_dock_closing_fails_the_camera_read_and_write(wire: Wire) -> None:
    wire.drop_holder()
    pending = asyncio.create_task(wire.camera.read())
    await asyncio.sleep(0.05)
    wire.dock.close()
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(LinkClosedError, match="camera"):
            await pending
        with pytest.raises(LinkClosedError):
            await wire.camera.read()
        # The master buffers some bytes for nobody, then must fail rather than wait forever.
        with pytest.raises(LinkClosedError):
            await wire.camera.write(b"x" * 1_000_000)


async def test_camera_closing_fails_the_dock_read_and_write(wire: Wire) -> None:
    pending = asyncio.create_task(wire.dock.read())
    await asyncio.sleep(0.05)
    wire.camera.close()
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(LinkClosedError, match=wire.pty.slave_path):
            await pending
        with pytest.raises(LinkClosedError):
            await wire.dock.read()
        with pytest.raises(LinkClosedError):
            await wire.dock.write(b"hello")


async def test_close_wakes_own_pending_read_and_write(wire: Wire) -> None:
    reader = asyncio.create_task(wire.camera.read())
    writer = asyncio.create_task(wire.camera.write(b"y" * 1_000_000))
    await asyncio.sleep(0.05)
    assert not writer.done()
    wire.camera.close()
    async with asyncio.timeout(TIMEOUT):
        for task in (reader, writer):
            with pytest.raises(LinkClosedError, match="closed"):
                await task


async def test_close_from_another_thread_wakes_the_reader(wire: Wire) -> None:
    reader = asyncio.create_task(wire.camera.read())
    await asyncio.sleep(0.05)
    thread = threading.Thread(target=wire.camera.close)
    thread.start()
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(LinkClosedError):
            await reader
    thread.join()
    assert wire.camera.closed


async def test_close_twice_and_use_after_close(wire: Wire) -> None:
    wire.camera.close()
    wire.camera.close()
    with pytest.raises(LinkClosedError):
        await wire.camera.read()
    with pytest.raises(LinkClosedError):
        await wire.camera.write(b"z")
    with pytest.raises(LinkClosedError):
        await wire.camera.write()  # even with nothing to write


async def test_empty_write_is_a_no_op(wire: Wire) -> None:
    await wire.camera.write()
    await wire.camera.write(b"", bytearray(), memoryview(b""))
    await wire.camera.write(b"", b"ab", b"")
    async with asyncio.timeout(TIMEOUT):
        assert await read_exactly(wire.dock, 2) == b"ab"


def test_open_serial_missing_port(tmp_path: Path) -> None:
    path = tmp_path / "ttyACM9"
    with pytest.raises(LinkClosedError) as caught:
        open_serial(path)
    message = str(caught.value)
    assert str(path) in message
    assert "no such port" in message
    assert "\n" not in message


async def test_open_serial_refuses_a_port_held_exclusively() -> None:
    pty = open_pty_pair()
    first = open_serial(pty.slave_path)
    try:
        with pytest.raises(LinkClosedError) as caught:
            open_serial(pty.slave_path)
        assert pty.slave_path in str(caught.value)
        assert "held by another process (exclusive lock)" in str(caught.value)
        # Without asking for the lock, a second opener gets in (what exclusive=True stops).
        open_serial(pty.slave_path, exclusive=False).close()
    finally:
        first.close()
        os.close(pty.master_fd)
        os.close(pty.slave_fd)
    # Once released, the port can be taken again.
    pty = open_pty_pair()
    again = open_serial(pty.slave_path)
    again.close()
    os.close(pty.master_fd)
    os.close(pty.slave_fd)


def test_open_serial_on_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-tty"
    path.write_bytes(b"")
    with pytest.raises(LinkClosedError, match="not a usable serial port"):
        open_serial(path)


def test_open_serial_permission_names_the_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Tests may run as root, which no permission stops: play pyserial's refusal instead.
    path = tmp_path / "ttyACM0"
    path.write_bytes(b"")

    def refuse(port: str, **_kwargs: object) -> None:
        raise serial.SerialException(errno.EACCES, f"could not open port {port}: denied")

    monkeypatch.setattr(serial, "Serial", refuse)
    with pytest.raises(LinkClosedError) as caught:
        open_serial(path)
    message = str(caught.value)
    assert str(path) in message
    assert "permission denied" in message
    assert "group" in message


def test_open_serial_busy_and_gone_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    for code, words in ((errno.EBUSY, "busy"), (errno.ENXIO, "gone")):

        def refuse(port: str, code: int = code, **_kwargs: object) -> None:
            raise serial.SerialException(code, f"could not open port {port}")

        monkeypatch.setattr(serial, "Serial", refuse)
        with pytest.raises(LinkClosedError, match=words):
            open_serial("/dev/ttyACM0")


async def test_pty_pair_master_survives_until_the_dock_opens() -> None:
    # The held slave fd is what keeps the master from reading EIO before the dock opens.
    pty = open_pty_pair()
    camera = FdLink(pty.master_fd, "camera")
    try:
        await camera.write(b"hello before the dock opened")
        reader = asyncio.create_task(camera.read())
        await asyncio.sleep(0.05)
        assert not reader.done()
        dock = open_serial(pty.slave_path)
        try:
            await dock.write(b"hi")
            async with asyncio.timeout(TIMEOUT):
                assert await reader == b"hi"
        finally:
            dock.close()
    finally:
        camera.close()
        os.close(pty.slave_fd)


async def test_a_reader_with_data_always_ready_lets_other_tasks_run() -> None:
    read_fd, write_fd = os.pipe()
    link = FdLink(read_fd, "pipe", read_size=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    try:
        os.write(write_fd, b"x" * 1000)
        await asyncio.sleep(0)  # let the ticker start
        started = ticks
        for _ in range(1000):  # every read finds data: none of them has to wait
            await link.read()
        assert ticks > started, "1000 reads in a row never yielded to the event loop"
    finally:
        other.cancel()
        link.close()
        os.close(write_fd)
