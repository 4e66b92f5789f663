"""FaultyCable between two pseudo-terminals: exact forwarding, flip statistics, cuts."""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bodycam.drivers.interfaces import LinkClosedError
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial
from bodycam.sim.faulty_cable import FRAME_MAGIC, MAX_GARBAGE, FaultyCable
from tests.link_checks import read_exactly

TIMEOUT = 30.0


@dataclass
class Rig:
    """camera <-> pty1 <-> cable <-> pty2 <-> dock; the cable holds both masters."""

    camera: FdLink
    dock: FdLink
    cable_a: FdLink
    cable_b: FdLink

    def close(self) -> None:
        for link in (self.camera, self.dock, self.cable_a, self.cable_b):
            link.close()


def _make_rig() -> Rig:
    pty1, pty2 = open_pty_pair(), open_pty_pair()
    rig = Rig(
        camera=open_serial(pty1.slave_path),
        dock=open_serial(pty2.slave_path),
        cable_a=FdLink(pty1.master_fd, "cable-a"),
        cable_b=FdLink(pty2.master_fd, "cable-b"),
    )
    # Both far ends are open now: drop the pairs' own slave fds so that a far end closing
    # reaches the cable as a hang-up.
    os.close(pty1.slave_fd)
    os.close(pty2.slave_fd)
    return rig


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = _make_rig()
    yield made
    made.close()


async def _read_until_closed(link: FdLink, into: bytearray) -> None:
    try:
        while True:
            into += await link.read()
    except LinkClosedError:
        return


async def _send(link: FdLink, data: bytes, chunk: int = 65536) -> None:
    view = memoryview(data)
    for pos in range(0, len(data), chunk):
        await link.write(view[pos : pos + chunk])


async def test_flip_rate_zero_forwards_exactly(rig: Rig) -> None:
    rng = random.Random(3)
    to_dock, to_camera = rng.randbytes(4_000_000), rng.randbytes(1_000_000)
    cable = FaultyCable(rig.cable_a, rig.cable_b, seed=1)
    runner = asyncio.create_task(cable.run())
    async with asyncio.timeout(TIMEOUT):
        *_, at_dock, at_camera = await asyncio.gather(
            _send(rig.camera, to_dock),
            _send(rig.dock, to_camera),
            read_exactly(rig.dock, len(to_dock)),
            read_exactly(rig.camera, len(to_camera)),
        )
    assert at_dock == to_dock
    assert at_camera == to_camera
    stats = cable.stats
    assert (stats.a_to_b, stats.b_to_a) == (len(to_dock), len(to_camera))
    assert (stats.flipped, stats.garbage, stats.cut) == (0, 0, False)
    cable.cut()
    async with asyncio.timeout(TIMEOUT):
        await runner


@pytest.mark.parametrize("rate", [0.001, 0.3])
async def test_flip_rate_flips_about_p_n_bytes(rig: Rig, rate: float) -> None:
    data = random.Random(5).randbytes(2_000_000)
    cable = FaultyCable(rig.cable_a, rig.cable_b, flip_rate=rate, seed=11)
    runner = asyncio.create_task(cable.run())
    async with asyncio.timeout(TIMEOUT):
        _, got = await asyncio.gather(_send(rig.camera, data), read_exactly(rig.dock, len(data)))
    changed = sum(1 for sent, seen in zip(data, got, strict=True) if sent != seen)
    # Every flip XORs with a non-zero byte, so the receiver sees exactly the flips.
    assert changed == cable.stats.flipped
    expected = rate * len(data)
    sigma = math.sqrt(len(data) * rate * (1 - rate))
    assert abs(changed - expected) < 5 * sigma, (changed, expected, sigma)
    cable.cut()
    async with asyncio.timeout(TIMEOUT):
        await runner


async def test_flip_rate_one_flips_every_byte(rig: Rig) -> None:
    data = bytes(20_000)
    cable = FaultyCable(rig.cable_a, rig.cable_b, flip_rate=1.0, seed=2)
    runner = asyncio.create_task(cable.run())
    async with asyncio.timeout(TIMEOUT):
        _, got = await asyncio.gather(_send(rig.camera, data), read_exactly(rig.dock, len(data)))
    assert 0 not in got
    cable.cut()
    async with asyncio.timeout(TIMEOUT):
        await runner


async def test_same_seed_same_damage() -> None:
    # With one direction and no garbage, flip positions depend on byte positions only, not
    # on how the kernel happened to split the stream into reads.
    data = random.Random(8).randbytes(300_000)
    results: list[bytes] = []
    for _ in range(2):
        rig = _make_rig()
        try:
            cable = FaultyCable(rig.cable_a, rig.cable_b, flip_rate=0.01, seed=42)
            runner = asyncio.create_task(cable.run())
            async with asyncio.timeout(TIMEOUT):
                _, got = await asyncio.gather(
                    _send(rig.camera, data, chunk=rig_chunk(len(results))),
                    read_exactly(rig.dock, len(data)),
                )
            cable.cut()
            await runner
            results.append(got)
        finally:
            rig.close()
    assert results[0] == results[1]
    assert results[0] != data


def rig_chunk(run: int) -> int:
    """Different write sizes per run, so that the reads differ too."""
    return 65536 if run == 0 else 1000


async def test_garbage_is_inserted_and_counted(rig: Rig) -> None:
    data = random.Random(9).randbytes(200_000)
    cable = FaultyCable(rig.cable_a, rig.cable_b, garbage_rate=1.0, seed=4)
    runner = asyncio.create_task(cable.run())
    received = bytearray()
    sender = asyncio.create_task(_send(rig.camera, data, chunk=4096))
    async with asyncio.timeout(TIMEOUT):
        # Garbage is counted before it is written: once every payload byte has passed, the
        # count is final and says how much the dock must still receive.
        while cable.stats.a_to_b < len(data) or len(received) < len(data) + cable.stats.garbage:
            received += await rig.dock.read()
        await sender
    stats = cable.stats
    assert stats.a_to_b == len(data)
    assert len(received) == len(data) + stats.garbage
    assert stats.garbage > 0
    assert received.count(FRAME_MAGIC) > data.count(FRAME_MAGIC)  # resync gets exercised
    cable.cut()
    async with asyncio.timeout(TIMEOUT):
        await runner


async def test_garbage_size_is_bounded() -> None:
    cable = FaultyCable(_NullLink(), _NullLink(), garbage_rate=1.0, seed=6)
    sizes = [len(cable._garbage_bytes()) for _ in range(2000)]
    assert min(sizes) >= 1
    assert max(sizes) <= MAX_GARBAGE


async def test_cut_fails_both_far_ends(rig: Rig) -> None:
    cable = FaultyCable(rig.cable_a, rig.cable_b)
    runner = asyncio.create_task(cable.run())
    sender = asyncio.create_task(_send(rig.camera, os.urandom(5_000_000)))
    received = bytearray()
    async with asyncio.timeout(TIMEOUT):
        while len(received) < 100_000:
            received += await rig.dock.read()
        cable.cut()
        await runner
        with pytest.raises(LinkClosedError):
            await sender
        await _read_until_closed(rig.dock, bytearray())  # what was still in the pty, then the end
        with pytest.raises(LinkClosedError):
            await rig.dock.read()
        with pytest.raises(LinkClosedError):
            await rig.dock.write(b"still there?")
        with pytest.raises(LinkClosedError):
            await rig.camera.read()
    assert cable.stats.cut
    assert rig.cable_a.closed
    assert rig.cable_b.closed


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
async def test_cut_after_n_bytes(rig: Rig, direction: str) -> None:
    limit = 123_457
    data = random.Random(10).randbytes(1_000_000)
    source, sink = (rig.camera, rig.dock) if direction == "a->b" else (rig.dock, rig.camera)
    cable = FaultyCable(rig.cable_a, rig.cable_b)
    cable.cut_after(limit, direction)
    runner = asyncio.create_task(cable.run())
    sender = asyncio.create_task(_send(source, data))
    received = bytearray()
    async with asyncio.timeout(TIMEOUT):
        await _read_until_closed(sink, received)
        await runner
        with pytest.raises(LinkClosedError):
            await sender
    stats = cable.stats
    assert stats.cut
    assert (stats.a_to_b if direction == "a->b" else stats.b_to_a) == limit
    # Whatever reached the far end is an undamaged prefix of at most the limit.
    assert len(received) <= limit
    assert bytes(received) == data[: len(received)]


async def test_one_side_closing_ends_the_run_and_closes_the_other(rig: Rig) -> None:
    cable = FaultyCable(rig.cable_a, rig.cable_b)
    runner = asyncio.create_task(cable.run())
    await rig.camera.write(b"ping")
    async with asyncio.timeout(TIMEOUT):
        assert await read_exactly(rig.dock, 4) == b"ping"
        rig.camera.close()  # the camera side hangs up: the cable notices and gives up
        await runner
        with pytest.raises(LinkClosedError):
            await rig.dock.read()
    assert not cable.stats.cut
    assert rig.cable_b.closed


async def test_cancelling_run_closes_both_ends(rig: Rig) -> None:
    cable = FaultyCable(rig.cable_a, rig.cable_b)
    runner = asyncio.create_task(cable.run())
    await asyncio.sleep(0.05)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert rig.cable_a.closed
    assert rig.cable_b.closed


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="flip_rate"):
        FaultyCable(_NullLink(), _NullLink(), flip_rate=1.5)
    with pytest.raises(ValueError, match="garbage_rate"):
        FaultyCable(_NullLink(), _NullLink(), garbage_rate=-0.1)
    cable = FaultyCable(_NullLink(), _NullLink())
    with pytest.raises(ValueError, match="direction"):
        cable.cut_after(10, "a<-b")


class _NullLink:
    """A ByteLink that never delivers; enough for argument checks."""

    name = "null"

    async def read(self) -> bytes:
        await asyncio.Event().wait()
        return b""

    async def write(self, *chunks: bytes | bytearray | memoryview) -> None:
        del chunks

    def close(self) -> None:
        pass
