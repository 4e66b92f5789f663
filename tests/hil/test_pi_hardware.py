"""The Pi board's parts on a real Raspberry Pi bench camera: ``BODYCAM_HIL=1``.

Run on the camera itself (``BODYCAM_HIL=1 pytest tests/hil/test_pi_hardware.py``), as the
user the daemon runs as, with the daemon stopped (it holds the camera, the pins and the
gadget port). The checks are the ones CI runs against the fakes: the camera's stream goes
through ``tests.camera_checks.assert_stream``, the same function the fake-picamera2 tests
use. The bench describes its wiring in the environment:

- ``BODYCAM_HIL_CONFIG``: the camera's config (default ``/etc/bodycam/config.toml``);
- ``BODYCAM_HIL_LOOPBACK=OUT:IN``: a jumper from an output pin (e.g. the red LED's) to a
  spare input pin, so the test can see the LED driver switch the pin;
- ``BODYCAM_HIL_DOCKED=1``: the camera is plugged into a dock host now.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bodycam.daemon.config import Config, load_config
from bodycam.drivers.gadget_dock import GadgetDockPort
from bodycam.drivers.gpio_parts import build_gpio_parts
from bodycam.drivers.interfaces import VideoFormat
from bodycam.drivers.picamera import PiCamera
from bodycam.drivers.power_supply import PowerSupplyBattery
from tests.camera_checks import assert_stream, take_frames

pytestmark = [
    pytest.mark.hil,
    pytest.mark.skipif(
        os.environ.get("BODYCAM_HIL") != "1",
        reason="needs a Raspberry Pi bench camera: run on the camera with BODYCAM_HIL=1",
    ),
]


@pytest.fixture
def config() -> Config:
    return load_config(Path(os.environ.get("BODYCAM_HIL_CONFIG", "/etc/bodycam/config.toml")))


async def test_camera_delivers_a_good_stream(config: Config) -> None:
    fmt = VideoFormat(width=640, height=480, fps=30, bitrate=2_000_000, gop=15)
    camera = PiCamera(fmt, camera_index=config.camera.index)
    t_on = time.monotonic()
    async with camera:
        frames = await take_frames(camera, 45)
    t_off = time.monotonic()
    assert_stream(frames, fmt, t_on=t_on, t_off=t_off)
    assert camera.stats.frames_dropped == 0


async def test_camera_restarts_after_being_closed(config: Config) -> None:
    fmt = config.video.format()
    camera = PiCamera(fmt, camera_index=config.camera.index)
    for _ in range(2):
        async with camera:
            frames = await take_frames(camera, fmt.gop + 1)
        assert frames[0].keyframe
    assert camera.stats.sessions == 2


def test_gpio_parts_open_from_the_config(config: Config) -> None:
    parts = build_gpio_parts(config.pins, debounce_s=config.buttons.debounce_s)
    try:
        assert parts.faults == []
        for output in (parts.red_led, parts.green_led):
            output.on()
            assert output.is_lit
            output.off()
            assert not output.is_lit
    finally:
        for close in parts.closers:
            close()


def test_loopback_sees_the_led_driver() -> None:
    loopback = os.environ.get("BODYCAM_HIL_LOOPBACK")
    if not loopback:
        pytest.skip("no BODYCAM_HIL_LOOPBACK=OUT:IN jumper on this bench")
    from bodycam.drivers.gpio import GpioInput, GpioLed

    out_pin, in_pin = (int(p) for p in loopback.split(":"))
    led = GpioLed("loopback out", out_pin)
    probe = GpioInput("loopback in", in_pin)  # pull-up: reads active when driven low
    try:
        led.on()
        time.sleep(0.01)
        assert not probe.is_active
        led.off()
        time.sleep(0.01)
        assert probe.is_active
    finally:
        led.close()
        probe.close()


def test_fuel_gauge_reads_sane_values(config: Config) -> None:
    gauge = PowerSupplyBattery(
        supply=config.battery.supply or None, charger=config.battery.charger or None
    )
    reading = gauge.read()
    assert 0.0 <= reading.percent <= 100.0
    assert reading.present


async def test_dock_detection_and_the_gadget_port(config: Config) -> None:
    g = config.gadget
    port = GadgetDockPort(tty=g.tty, udc=g.udc or None, detect=g.detect, poll_s=g.poll_s)
    try:
        docked = port.poll()
        assert port.tty_error is None, port.tty_error
        if os.environ.get("BODYCAM_HIL_DOCKED") == "1":
            assert docked
            link = await port.open_link()
            link.close()
        else:
            assert isinstance(docked, bool)
    finally:
        port.close()
    await asyncio.sleep(0)
