"""The whole camera on the Pi board, with only the hardware edge faked.

The daemon, the recorder, the dock session and the reference dock are the real ones; the
Pi backend (``bodycam.drivers.pi``) drives a fake picamera2 (real H.264, camera threads),
gpiozero's MockFactory pins, fake power_supply and UDC sysfs trees, and a pseudo-terminal
standing in for ``/dev/ttyGS0`` with the test holding the host's end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from bodycam.daemon.app import load_keys, make_device, recover, serve
from bodycam.daemon.config import Config
from bodycam.daemon.device import Device
from bodycam.daemon.evidence.keys import (
    generate_device_key,
    generate_force_keypair,
    load_device_public_key,
)
from bodycam.daemon.evidence.verify import verify_path
from bodycam.dock.agent import DockAgent
from bodycam.drivers.interfaces import Board
from bodycam.drivers.pi import PiPaths, build_pi_board
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair
from bodycam.sim.docking import prepare_authority, prepare_dock
from tests.fakes.picamera2_fixture import FakeWorld, install_fake_picamera2
from tests.fakes.sysfs import FakePowerSupply, FakeUdc

UDC = "fe980000.usb"
GAUGE = "bq27441-0"


@dataclass
class PiRig:
    config: Config
    paths: PiPaths
    pins: MockFactory
    camera: FakeWorld
    supplies: FakePowerSupply
    udc: FakeUdc
    host: PtyPair  # the test is the dock host: it holds the master


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PiRig]:
    camera = install_fake_picamera2(monkeypatch)
    supplies = FakePowerSupply(tmp_path / "sys/class/power_supply")
    supplies.add_battery(GAUGE, capacity=80, status="Discharging")
    udc = FakeUdc(tmp_path / "sys/class/udc")
    udc.add(UDC, state="not attached")
    host = open_pty_pair()
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("test-boot\n")
    paths = PiPaths(
        power_supply=tmp_path / "sys/class/power_supply",
        udc_class=tmp_path / "sys/class/udc",
        boot_id=boot_id,
        timesync_flag=tmp_path / "no-timesync",
    )
    config = Config().with_overrides(
        device={
            "id": "PI-CAM-0001",
            "board": "pi",
            "state_dir": str(tmp_path / "state"),
            "runtime_dir": str(tmp_path / "run"),
        },
        video={"width": 160, "height": 120, "bitrate": 200_000},
        recording={"pre_event_s": 1.0, "segment_s": 1.0},
        battery={"supply": GAUGE, "poll_s": 0.2},
        gadget={"tty": host.slave_path, "udc": UDC, "poll_s": 0.05},
    )
    keys = config.key_path(config.keys.device_key)
    generate_device_key(keys)
    generate_force_keypair(tmp_path / "force.key", config.key_path(config.keys.force_public_key))
    yield PiRig(config, paths, MockFactory(), camera, supplies, udc, host)
    for fd in (host.master_fd, host.slave_fd):
        with suppress(OSError):
            os.close(fd)


@asynccontextmanager
async def running(rig: PiRig) -> AsyncIterator[tuple[Device, Board]]:
    keys = load_keys(rig.config)
    recover(rig.config, keys)
    board = build_pi_board(rig.config, pin_factory=rig.pins, paths=rig.paths)
    # The officer's power switch is on (closed to ground).
    if rig.config.pins.power_switch is not None:
        rig.pins.pin(rig.config.pins.power_switch).drive_low()
    device = make_device(rig.config, board, keys)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(device, stop=stop, handle_signals=False))
    try:
        async with asyncio.timeout(60):
            yield device, board
    finally:
        stop.set()
        await task
        board.close()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    """Poll ``condition`` (status fields have no events to wait on) until true or timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


async def press(pins: MockFactory, pin: int, seconds: float = 0.1) -> None:
    pins.pin(pin).drive_low()
    await asyncio.sleep(seconds)
    pins.pin(pin).drive_high()


async def double_press(rig: PiRig) -> None:
    pin = rig.config.pins.record_button
    await press(rig.pins, pin)
    await asyncio.sleep(0.1)
    await press(rig.pins, pin)


async def test_records_and_docks_on_the_pi_board(rig: PiRig, tmp_path: Path) -> None:
    authority = prepare_authority(tmp_path / "force", rig.config)
    dock = prepare_dock(tmp_path, rig.config, authority)
    async with running(rig) as (device, _board):
        await until(lambda: device.status.state == "BUFFERING", "buffering")
        await until(lambda: device.status.battery_percent == 80, "fuel gauge read")
        await double_press(rig)
        await until(lambda: device.status.recording, "recording after a double press")
        red = rig.pins.pin(rig.config.pins.red_led)
        await until(lambda: device.status.segments_sealed >= 2, "segments sealed", 20)
        # The red light flashes while recording (the LED driver is on the config's pin).
        assert any(s.state for s in red.states)
        # The host enumerates the camera: the UDC is configured, the daemon is docked.
        rig.udc.set_state(UDC, "configured")
        await until(lambda: device.status.docked, "docked from the UDC state")
        agent = DockAgent(dock.store(), dock.identity())
        link = FdLink(os.dup(rig.host.master_fd), "host")
        try:
            report = await agent.serve(link)
        finally:
            link.close()
        assert report.error is None, report.error
        assert report.authenticated
        assert len(report.committed) == 1
        assert report.clock_offset_s is not None
        assert device.clock.is_set()
        # The dock holds the clip, verified against the camera's registered key.
        stored = dock.store().clips()
        assert len(stored) == 1
        device_pub = load_device_public_key(
            rig.config.key_path(rig.config.keys.device_key).with_suffix(".pub")
        )
        verdicts = verify_path(dock.store_dir / "clips" / "PI-CAM-0001", device_key=device_pub)
        assert [v.ok for v in verdicts] == [True]
        assert device.status.hardware_faults == []
    # The camera thread is gone once the daemon stopped.
    assert rig.camera.all_joined()


async def test_a_vanishing_fuel_gauge_warns_and_recovers(rig: PiRig) -> None:
    async with running(rig) as (device, _board):
        await until(lambda: device.status.battery_percent == 80, "fuel gauge read")
        rig.supplies.remove(GAUGE)
        await until(lambda: "HARDWARE_FAULT" in device.status.warnings, "warning on loss")
        assert any("battery.supply" in f for f in device.status.hardware_faults)
        # The beeper plays the hardware-fault pattern (two long beeps) while on.
        beeper = rig.pins.pin(rig.config.pins.beeper)
        await until(lambda: any(s.state for s in beeper.states), "beeper sounded")
        rig.supplies.add_battery(GAUGE, capacity=60, status="Charging")
        await until(lambda: device.status.hardware_faults == [], "recovered")
        await until(lambda: device.status.battery_percent == 60, "new reading")
        assert device.status.charging
        assert "HARDWARE_FAULT" not in device.status.warnings


async def test_no_camera_module_is_a_camera_fault_not_a_crash(rig: PiRig) -> None:
    rig.camera.cameras = 0
    async with running(rig) as (device, _board):
        await until(lambda: "CAMERA_FAULT" in device.status.warnings, "camera fault")
        # Everything else runs: the dock can still take what is on the card.
        rig.udc.set_state(UDC, "configured")
        await until(lambda: device.status.docked, "docked without a camera")
        rig.udc.set_state(UDC, "not attached")
        await until(lambda: not device.status.docked, "undocked")
        # The ribbon cable reseated: the daemon's retry (with back-off) finds the camera.
        rig.camera.cameras = 1
        await until(lambda: "CAMERA_FAULT" not in device.status.warnings, "recovered", 30)


async def test_a_pin_in_use_is_a_hardware_fault_and_the_camera_still_records(
    rig: PiRig,
) -> None:
    from gpiozero import LED

    squatter = LED(rig.config.pins.green_led, pin_factory=rig.pins)
    try:
        async with running(rig) as (device, _board):
            await until(lambda: device.status.state == "BUFFERING", "buffering")
            assert "HARDWARE_FAULT" in device.status.warnings
            assert any("pins.green_led" in f for f in device.status.hardware_faults)
            await double_press(rig)
            await until(lambda: device.status.segments_sealed >= 1, "recording anyway", 20)
    finally:
        squatter.close()
