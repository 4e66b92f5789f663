"""GadgetDockPort: presence from a fake UDC/VBUS tree, the link over a pty standing in for ttyGS0.

The camera's ``/dev/ttyGS0`` is a symlink in the test's directory pointing at a pty slave;
the test holds the master as the dock host. The host going away closes the master (the
slave is then hung up, as u_serial hangs up ttyGS0); the next docking re-points the symlink
at a fresh pty, as the same ttyGS0 path comes back to life on a real camera.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bodycam.drivers.gadget_dock import GadgetDockPort
from bodycam.drivers.interfaces import ByteLink, DockPort, LinkClosedError
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair
from tests.fakes.sysfs import FakePowerSupply, FakeUdc
from tests.link_checks import exchange, read_exactly

UDC = "fe980000.usb"
TIMEOUT = 5.0


@dataclass
class Host:
    """The dock host's end of one docking: the pty master."""

    pty: PtyPair
    link: FdLink

    def hang_up(self) -> None:
        """The host goes away: the camera's tty is hung up."""
        self.link.close()

    def close(self) -> None:
        self.link.close()
        os.close(self.pty.slave_fd)


@dataclass
class World:
    root: Path
    udc: FakeUdc
    supplies: FakePowerSupply
    tty: Path
    hosts: list[Host] = field(default_factory=list)
    ports: list[GadgetDockPort] = field(default_factory=list)

    def port(self, **kwargs: object) -> GadgetDockPort:
        options: dict[str, object] = {"tty": self.tty, "udc_class": self.udc.root, "poll_s": 0.01}
        options.update(kwargs)
        port = GadgetDockPort(**options)  # type: ignore[arg-type]
        self.ports.append(port)
        return port

    def gadget_port_appears(self) -> Host:
        """A fresh pty becomes "/dev/ttyGS0" (atomically re-pointing the symlink)."""
        pty = open_pty_pair()
        host = Host(pty, FdLink(pty.master_fd, "host"))
        self.hosts.append(host)
        fresh = self.root / "ttyGS0.new"
        fresh.symlink_to(pty.slave_path)
        fresh.replace(self.tty)
        return host

    def close(self) -> None:
        for port in self.ports:
            port.close()
        for host in self.hosts:
            host.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    udc = FakeUdc(tmp_path / "udc")
    udc.add(UDC)
    w = World(tmp_path, udc, FakePowerSupply(tmp_path / "power_supply"), tmp_path / "ttyGS0")
    yield w
    w.close()


def _recorder(port: GadgetDockPort) -> list[tuple[bool, bool]]:
    seen: list[tuple[bool, bool]] = []
    port.set_handler(lambda docked: seen.append((docked, port.docked)))
    return seen


def test_is_a_dock_port(world: World) -> None:
    port: DockPort = world.port()  # mypy checks the protocol
    assert not port.docked


async def test_udc_state_drives_docking(world: World) -> None:
    world.gadget_port_appears()
    port = world.port()
    seen = _recorder(port)
    assert port.poll() is False
    for state in ("attached", "powered", "default", "addressed"):  # enumerating: not yet
        world.udc.set_state(UDC, state)
        assert port.poll() is False
    world.udc.set_state(UDC, "configured")
    assert port.poll() is True
    assert port.docked
    assert port.poll() is True  # no change, no call
    world.udc.set_state(UDC, "not attached")
    assert port.poll() is False
    assert not port.docked
    assert seen == [(True, True), (False, False)]


async def test_a_suspended_bus_is_not_an_undocking(world: World) -> None:
    world.gadget_port_appears()
    port = world.port()
    seen = _recorder(port)
    world.udc.set_state(UDC, "suspended")  # suspended before ever being configured
    assert port.poll() is False
    world.udc.set_state(UDC, "configured")
    port.poll()
    world.udc.set_state(UDC, "suspended")  # idle dock PC
    assert port.poll() is True
    world.udc.set_state(UDC, "configured")
    port.poll()
    assert seen == [(True, True)]


async def test_bytes_flow_both_ways_and_early_bytes_wait(world: World) -> None:
    host = world.gadget_port_appears()
    port = world.port()
    port.poll()  # opens and holds the tty, undocked
    with pytest.raises(LinkClosedError, match="not docked"):
        await port.open_link()
    world.udc.set_state(UDC, "configured")
    port.poll()
    # The dock talks before the camera has opened its link: nothing may be lost.
    await host.link.write(b"HELLO early")
    link = await port.open_link()
    assert await read_exactly(link, 11, within_s=TIMEOUT) == b"HELLO early"
    await exchange(link, host.link, b"one", within_s=TIMEOUT)
    big = os.urandom(200_000)  # more than any tty buffer: back-pressure both ways
    send = asyncio.create_task(link.write(big))
    assert await read_exactly(host.link, len(big), within_s=TIMEOUT) == big
    await send


async def test_a_new_link_closes_the_previous_one(world: World) -> None:
    host = world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port()
    port.poll()
    first = await port.open_link()
    second = await port.open_link()
    with pytest.raises(LinkClosedError):
        await first.read()
    await exchange(
        second, host.link, b"two", within_s=TIMEOUT
    )  # the held port survived the reopening


async def test_undocking_closes_the_link(world: World) -> None:
    world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port()
    port.poll()
    link = await port.open_link()
    reader = asyncio.create_task(link.read())
    await asyncio.sleep(0)
    world.udc.set_state(UDC, "not attached")
    port.poll()
    with pytest.raises(LinkClosedError):
        await asyncio.wait_for(reader, TIMEOUT)


async def test_host_hang_up_then_next_docking(world: World) -> None:
    host = world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port()
    seen = _recorder(port)
    port.poll()
    link = await port.open_link()
    await exchange(link, host.link, b"before", within_s=TIMEOUT)

    host.hang_up()  # the host vanished: the camera's tty is hung up
    with pytest.raises(LinkClosedError):
        await asyncio.wait_for(link.read(), TIMEOUT)
    port.poll()  # sees the hang-up; its pty is gone for good, so the reopen fails
    error = port.tty_error
    assert error is not None
    assert str(error).startswith("gadget.tty: ")
    world.udc.set_state(UDC, "not attached")
    port.poll()

    host = world.gadget_port_appears()  # next docking: ttyGS0 is usable again
    world.udc.set_state(UDC, "configured")
    port.poll()
    assert port.tty_error is None
    assert seen == [(True, True), (False, False), (True, True)]
    link = await port.open_link()
    await exchange(link, host.link, b"after", within_s=TIMEOUT)


async def test_hang_up_and_reenumeration_between_two_polls(world: World) -> None:
    """The host reset the bus within one poll: still "configured", but the tty was hung up."""
    host = world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port()
    seen = _recorder(port)
    port.poll()
    old = await port.open_link()
    host.hang_up()
    host = world.gadget_port_appears()
    port.poll()
    with pytest.raises(LinkClosedError):
        await old.read()  # closed with the hung-up port it was a copy of
    link = await port.open_link()
    await exchange(link, host.link, b"again", within_s=TIMEOUT)
    assert seen == [(True, True)]


async def test_missing_tty_is_reported_once_and_recovers(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bodycam.drivers.gadget_dock")
    world.udc.set_state(UDC, "configured")
    port = world.port()
    for _ in range(3):
        assert port.poll() is True  # docked is the controller's word, tty or not
    error = port.tty_error
    assert error is not None
    assert "gadget.tty" in str(error)
    assert "bodycam-gadget.service" in str(error)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [str(error)]
    with pytest.raises(LinkClosedError, match=r"bodycam-gadget\.service"):
        await port.open_link()

    host = world.gadget_port_appears()  # the gadget service ran
    link = await port.open_link()  # opens the tty on demand, without waiting for a poll
    assert port.tty_error is None
    await exchange(link, host.link, b"late", within_s=TIMEOUT)


async def test_the_tty_is_held_exclusively(world: World) -> None:
    world.gadget_port_appears()
    first, second = world.port(), world.port()
    first.poll()
    second.poll()
    assert first.tty_error is None
    error = second.tty_error
    assert error is not None
    assert "held by another process" in str(error)


async def test_vanishing_udc_counts_as_undocked(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port(udc=UDC)
    seen = _recorder(port)
    port.poll()
    world.udc.remove(UDC)
    for _ in range(3):
        assert port.poll() is False
    gone = [r for r in caplog.records if "gone or unreadable" in r.getMessage()]
    assert len(gone) == 1
    assert "gadget.udc" in gone[0].getMessage()
    world.udc.add(UDC, state="configured")
    assert port.poll() is True
    assert seen == [(True, True), (False, False), (True, True)]


async def test_no_udc_at_all_is_undocked(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.udc.remove(UDC)
    port = world.port()
    assert port.poll() is False
    assert port.poll() is False
    assert sum("host mode" in r.getMessage() for r in caplog.records) == 1


async def test_only_the_named_udc_counts(world: World) -> None:
    world.udc.add("musb-hdrc.0", state="configured")
    port = world.port(udc=UDC)
    assert port.poll() is False
    world.udc.set_state(UDC, "configured")
    world.udc.set_state("musb-hdrc.0", "not attached")
    assert port.poll() is True


async def test_vbus_detection(world: World, caplog: pytest.LogCaptureFixture) -> None:
    vbus = world.supplies.add_supply("usb", type="USB", online=False)
    world.udc.set_state(UDC, "configured")  # ignored in vbus mode
    port = world.port(detect="vbus", vbus_supply=vbus)
    seen = _recorder(port)
    assert port.poll() is False
    world.supplies.set("usb", "online", 1)
    assert port.poll() is True
    world.supplies.set("usb", "online", 2)  # online, programmable: still VBUS
    assert port.poll() is True
    world.supplies.set("usb", "online", 0)
    assert port.poll() is False
    world.supplies.set("usb", "online", 1)
    port.poll()
    world.supplies.remove("usb")
    assert port.poll() is False
    assert port.poll() is False
    assert sum("gadget.vbus_supply" in r.getMessage() for r in caplog.records) == 1
    assert seen == [(True, True), (False, False), (True, True), (False, False)]


async def test_udc_or_vbus(world: World) -> None:
    vbus = world.supplies.add_supply("usb", online=False)
    port = world.port(detect="udc_or_vbus", vbus_supply=vbus)
    assert port.poll() is False
    world.supplies.set("usb", "online", 1)  # a charging-only cable
    assert port.poll() is True
    world.supplies.set("usb", "online", 0)
    world.udc.set_state(UDC, "configured")
    assert port.poll() is True
    world.udc.set_state(UDC, "not attached")
    assert port.poll() is False


@pytest.mark.parametrize("detect", ["vbus", "udc_or_vbus"])
def test_vbus_modes_need_a_supply(world: World, detect: str) -> None:
    with pytest.raises(ValueError, match=r"gadget\.vbus_supply"):
        world.port(detect=detect)


async def test_run_polls_and_notifies(world: World) -> None:
    host = world.gadget_port_appears()
    port = world.port()
    changes: asyncio.Queue[bool] = asyncio.Queue()
    port.set_handler(changes.put_nowait)  # called on the loop thread: no hop needed
    task = asyncio.create_task(port.run(), name="gadget-dock")
    try:
        world.udc.set_state(UDC, "configured")
        assert await asyncio.wait_for(changes.get(), TIMEOUT) is True
        link = await port.open_link()
        await exchange(link, host.link, b"run", within_s=TIMEOUT)
        world.udc.set_state(UDC, "not attached")
        assert await asyncio.wait_for(changes.get(), TIMEOUT) is False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert changes.empty()


async def test_close_ends_run_and_is_safe_twice(world: World) -> None:
    host = world.gadget_port_appears()
    world.udc.set_state(UDC, "configured")
    port = world.port()
    docked = asyncio.Event()
    port.set_handler(lambda _docked: docked.set())
    task = asyncio.create_task(port.run(), name="gadget-dock")
    await asyncio.wait_for(docked.wait(), TIMEOUT)
    link = await port.open_link()
    port.close()
    port.close()
    await asyncio.wait_for(task, TIMEOUT)  # returns by itself
    with pytest.raises(LinkClosedError):
        await link.read()
    with pytest.raises(LinkClosedError, match="closed"):
        await port.open_link()
    assert port.poll() is False
    # The tty (and its exclusive lock) was let go: another opener gets it now.
    other = world.port()
    other.poll()
    assert other.tty_error is None
    await exchange(await _docked_link(other, world), host.link, b"next owner", within_s=TIMEOUT)


async def _docked_link(port: GadgetDockPort, world: World) -> ByteLink:
    world.udc.set_state(UDC, "configured")
    port.poll()
    return await port.open_link()


async def test_a_failing_handler_does_not_stop_the_port(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    port = world.port()

    def broken(_docked: bool) -> None:
        raise RuntimeError("handler bug")

    port.set_handler(broken)
    world.udc.set_state(UDC, "configured")
    assert port.poll() is True
    assert port.docked
    assert any("handler failed" in r.getMessage() for r in caplog.records)
