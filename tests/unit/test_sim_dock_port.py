"""SimDockPort: docking notifications, the link while docked, and a camera lifted mid-read."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bodycam.drivers.interfaces import DockPort, LinkClosedError
from bodycam.drivers.serial_link import FdLink, open_serial
from bodycam.sim.dock_port import SimDockPort
from tests.link_checks import assert_closed, exchange, read_exactly

TIMEOUT = 10.0


@pytest.fixture
async def port() -> AsyncIterator[SimDockPort]:
    dock_port = SimDockPort()
    yield dock_port
    dock_port.close()


def test_is_a_dock_port() -> None:
    dock_port: DockPort = SimDockPort()  # mypy checks the protocol; this checks it runs
    assert not dock_port.docked


async def test_plug_and_unplug_call_the_handler(port: SimDockPort) -> None:
    seen: list[tuple[bool, bool, str | None]] = []
    # The handler may look at the port while it is told (the lock is re-entrant).
    port.set_handler(lambda docked: seen.append((docked, port.docked, port.port_path)))
    assert not port.docked
    assert port.port_path is None
    path = port.plug()
    assert port.docked
    assert port.port_path == path
    assert port.plug() == path  # second plug while docked: nothing happens
    port.unplug()
    port.unplug()  # already out: nothing happens
    assert not port.docked
    assert port.port_path is None
    assert seen == [(True, True, path), (False, False, None)]
    port.set_handler(None)
    port.plug()
    port.unplug()
    assert len(seen) == 2


async def test_handler_runs_on_the_thread_that_plugs(port: SimDockPort) -> None:
    threads: list[str] = []
    port.set_handler(lambda _docked: threads.append(threading.current_thread().name))
    await asyncio.to_thread(port.plug)
    await asyncio.to_thread(port.unplug)
    assert len(threads) == 2
    assert threading.current_thread().name not in threads


async def test_a_failing_handler_does_not_break_the_world(port: SimDockPort) -> None:
    def broken(_docked: bool) -> None:
        raise RuntimeError("handler bug")

    port.set_handler(broken)
    port.plug()
    assert port.docked
    port.unplug()
    assert not port.docked


async def test_open_link_when_not_docked_raises(port: SimDockPort) -> None:
    with pytest.raises(LinkClosedError, match="not docked"):
        await port.open_link()
    port.plug()
    port.unplug()
    with pytest.raises(LinkClosedError, match="not docked"):
        await port.open_link()


async def test_bytes_flow_both_ways_while_docked(port: SimDockPort) -> None:
    path = port.plug()
    camera = await port.open_link()
    dock = open_serial(path)
    try:
        await exchange(camera, dock, b"one", within_s=TIMEOUT)
    finally:
        dock.close()


async def test_camera_link_works_before_the_dock_opens(port: SimDockPort) -> None:
    path = port.plug()
    camera = await port.open_link()
    reader = asyncio.create_task(camera.read())
    await asyncio.sleep(0.05)
    assert not reader.done(), "the camera's end failed while the dock had not opened yet"
    dock = open_serial(path)
    try:
        await dock.write(b"hello")
        async with asyncio.timeout(TIMEOUT):
            assert await reader == b"hello"
        # The dock agent restarting does not disturb the camera either.
        dock.close()
        dock = open_serial(path)
        await exchange(camera, dock, b"after restart", within_s=TIMEOUT)
    finally:
        dock.close()


async def test_unplug_mid_read_fails_both_ends(port: SimDockPort) -> None:
    path = port.plug()
    camera = await port.open_link()
    dock = open_serial(path)
    try:
        camera_read = asyncio.create_task(camera.read())
        dock_read = asyncio.create_task(dock.read())
        await asyncio.sleep(0.05)
        port.unplug()
        await assert_closed(dock, camera_read, dock_read, within_s=TIMEOUT)
        await assert_closed(camera, within_s=TIMEOUT)
    finally:
        dock.close()


async def test_unplug_from_another_thread_wakes_the_camera(port: SimDockPort) -> None:
    path = port.plug()
    camera = await port.open_link()
    dock = open_serial(path)
    try:
        camera_read = asyncio.create_task(camera.read())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(port.unplug)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(LinkClosedError):
                await camera_read
            with pytest.raises(LinkClosedError):
                await dock.read()
    finally:
        dock.close()


async def test_replug_gives_a_new_working_docking(port: SimDockPort) -> None:
    first_path = port.plug()
    old_camera = await port.open_link()
    old_dock = open_serial(first_path)
    try:
        await exchange(old_camera, old_dock, b"first", within_s=TIMEOUT)
        port.unplug()
        second_path = port.plug()  # the kernel may hand out the same pts number again
        camera = await port.open_link()
        dock = open_serial(second_path)
        try:
            await exchange(camera, dock, b"second", within_s=TIMEOUT)
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(LinkClosedError):
                    await old_dock.read()
                with pytest.raises(LinkClosedError):
                    await old_camera.read()
        finally:
            dock.close()
    finally:
        old_dock.close()


async def test_reopening_the_link_keeps_the_docking(port: SimDockPort) -> None:
    path = port.plug()
    first = await port.open_link()
    dock = open_serial(path)
    try:
        await exchange(first, dock, b"a", within_s=TIMEOUT)
        second = await port.open_link()
        assert isinstance(first, FdLink)
        assert first.closed  # one reader at a time
        await exchange(second, dock, b"b", within_s=TIMEOUT)
        second.close()  # the camera closing its port is not an undocking
        assert port.docked
        await dock.write(b"queued")
        third = await port.open_link()
        assert await read_exactly(third, 6, within_s=TIMEOUT) == b"queued"
    finally:
        dock.close()


async def test_close_releases_and_refuses_new_plugs(port: SimDockPort) -> None:
    told: list[bool] = []
    port.set_handler(told.append)
    path = port.plug()
    camera = await port.open_link()
    dock = open_serial(path)
    try:
        port.close()
        port.close()
        assert told == [True]  # shutdown is not an undocking
        assert not port.docked
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(LinkClosedError):
                await camera.read()
            with pytest.raises(LinkClosedError):
                await dock.read()
        with pytest.raises(RuntimeError, match="closed"):
            port.plug()
    finally:
        dock.close()


def _points_at(name: Path) -> str | None:
    return str(name.readlink()) if name.is_symlink() else None


async def test_a_named_port_follows_each_docking(tmp_path: Path) -> None:
    name = tmp_path / "dev" / "bodycam" / "CAM-SIM"
    port = SimDockPort(link_path=name)
    try:
        assert _points_at(name) is None
        first = port.plug()
        assert _points_at(name) == first
        camera = await port.open_link()
        dock = open_serial(str(name))  # the bench opens the name, not the pts number
        try:
            await exchange(camera, dock, b"by name", within_s=TIMEOUT)
        finally:
            dock.close()
        port.unplug()
        assert _points_at(name) is None
        second = port.plug()
        assert _points_at(name) == second
    finally:
        port.close()
    assert not name.is_symlink(), "closing the port must not leave a dangling name"


def test_an_unwritable_name_does_not_stop_the_docking(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    port = SimDockPort(link_path=blocker / "CAM-SIM")
    try:
        assert Path(port.plug()).exists()
        assert port.docked
    finally:
        port.close()
