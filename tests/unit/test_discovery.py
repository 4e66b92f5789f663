"""Camera discovery against a fake pyusb backend and a fake sysfs tree."""

from __future__ import annotations

import array
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import usb.backend.libusb1
import usb.core

from bodycam.dock import discovery
from bodycam.dock.discovery import (
    DEFAULT_PRODUCT_ID,
    DEFAULT_VENDOR_ID,
    DockedCamera,
    find_cameras,
    watch_cameras,
)
from bodycam.drivers.interfaces import HardwareError

STRING_DESCRIPTOR = 3
GET_DESCRIPTOR = 0x06
EN_US = 0x0409


@dataclass
class FakeDevice:
    """What the fake backend knows about one device."""

    vendor: int
    product_id: int
    bus: int
    address: int
    ports: tuple[int, ...] | None
    product: str | None
    serial: str | None
    deny_open: bool = False  # as usbfs answers a user without access
    fail_serial: bool = False  # a string request that stalls


@dataclass
class _Descriptor:
    """The fields pyusb copies from a backend's device descriptor."""

    idVendor: int  # noqa: N815 - pyusb's field names
    idProduct: int  # noqa: N815
    bus: int
    address: int
    port_numbers: tuple[int, ...] | None
    bLength: int = 18  # noqa: N815
    bDescriptorType: int = 1  # noqa: N815
    bcdUSB: int = 0x0200  # noqa: N815
    bDeviceClass: int = 0xEF  # noqa: N815
    bDeviceSubClass: int = 2  # noqa: N815
    bDeviceProtocol: int = 1  # noqa: N815
    bMaxPacketSize0: int = 64  # noqa: N815
    bcdDevice: int = 0x0100  # noqa: N815
    iManufacturer: int = 1  # noqa: N815
    iProduct: int = 2  # noqa: N815
    iSerialNumber: int = 3  # noqa: N815
    bNumConfigurations: int = 1  # noqa: N815
    port_number: int | None = None
    speed: int | None = 3


@dataclass
class FakeBackend:
    """Implements the few IBackend calls that ``find`` and ``get_string`` make.

    ``snapshots`` are successive states of the bus: each enumeration moves to the next one
    and the last one stays.
    """

    snapshots: list[list[FakeDevice]]
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    enumerations: int = 0
    on_enumerate: Callable[[int], None] | None = None  # called from the worker thread

    def enumerate_devices(self) -> list[FakeDevice]:
        index = min(self.enumerations, len(self.snapshots) - 1)
        self.enumerations += 1
        if self.on_enumerate is not None:
            self.on_enumerate(self.enumerations)
        return self.snapshots[index]

    def get_device_descriptor(self, dev: FakeDevice) -> _Descriptor:
        # String index 0 means "no such string", which is how a device without a serial says so.
        serial_index = 3 if dev.serial is not None else 0
        return _Descriptor(
            dev.vendor, dev.product_id, dev.bus, dev.address, dev.ports, iSerialNumber=serial_index
        )

    def open_device(self, dev: FakeDevice) -> FakeDevice:
        if dev.deny_open:
            raise usb.core.USBError("Access denied (insufficient permissions)", -3, 13)
        self.opened.append(dev.address)
        return dev

    def close_device(self, handle: FakeDevice) -> None:
        self.closed.append(handle.address)

    def ctrl_transfer(
        self,
        handle: FakeDevice,
        bm_request_type: int,
        b_request: int,
        w_value: int,
        w_index: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        del timeout
        assert bm_request_type == 0x80  # IN, standard, device
        assert b_request == GET_DESCRIPTOR
        assert w_value >> 8 == STRING_DESCRIPTOR
        index = w_value & 0xFF
        if index == 0:
            payload = bytes([4, STRING_DESCRIPTOR]) + EN_US.to_bytes(2, "little")
        else:
            assert w_index == EN_US
            strings = {1: "maker", 2: handle.product, 3: handle.serial}
            if index == 3 and handle.fail_serial:
                raise usb.core.USBError("Pipe error", -9, 32)
            text = strings[index]
            assert text is not None
            encoded = text.encode("utf-16-le")
            payload = bytes([2 + len(encoded), STRING_DESCRIPTOR]) + encoded
        size = min(len(data), len(payload))
        data[:size] = array.array("B", payload[:size])
        return size


CAMERA_A = FakeDevice(0x1209, 0x0001, 1, 5, (1, 2), "bodycam v1", "CAM-A-0001")
CAMERA_B = FakeDevice(0x1209, 0x0001, 1, 7, (1, 3), "bodycam v1", "CAM-B-0002")
# Another pid.codes test device: same ids, different product string.
STRANGER = FakeDevice(0x1209, 0x0001, 1, 9, (1, 4), "someone's gadget", "XYZ")
OTHER_VENDOR = FakeDevice(0x046D, 0xC52B, 1, 2, (2,), "USB Receiver", "000")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A fake /sys and /dev: A on ttyACM0 with its udev link, B on ttyACM1 without."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    devices = sysfs / "bus" / "usb" / "devices"
    (devices / "1-1.2:1.0" / "tty" / "ttyACM0").mkdir(parents=True)
    (devices / "1-1.2:1.1").mkdir(parents=True)  # the ACM data interface: no tty
    (devices / "1-1.3:1.0" / "tty" / "ttyACM1").mkdir(parents=True)
    (devices / "1-1.4:1.0" / "tty" / "ttyACM2").mkdir(parents=True)
    (dev / "bodycam").mkdir(parents=True)
    for name in ("ttyACM0", "ttyACM1", "ttyACM2"):
        (dev / name).touch()
    (dev / "bodycam" / "CAM-A-0001").symlink_to("../ttyACM0")
    return sysfs, dev


def test_finds_cameras_and_maps_their_ttys(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    backend = FakeBackend([[OTHER_VENDOR, CAMERA_B, STRANGER, CAMERA_A]])
    cameras = find_cameras(backend=backend, sysfs=sysfs, dev=dev)
    assert cameras == [
        DockedCamera("CAM-A-0001", 1, 5, "1-1.2", dev / "bodycam" / "CAM-A-0001"),
        DockedCamera("CAM-B-0002", 1, 7, "1-1.3", dev / "ttyACM1"),
    ]
    # The unrelated vendor is never opened; every handle that was opened is closed again.
    assert OTHER_VENDOR.address not in backend.opened
    assert sorted(backend.opened) == sorted(set(backend.closed))


def test_ids_are_configurable(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    assert (DEFAULT_VENDOR_ID, DEFAULT_PRODUCT_ID) == (0x1209, 0x0001)
    own = FakeDevice(0x1209, 0xB0DC, 1, 5, (1, 2), "bodycam v2", "CAM-C")
    backend = FakeBackend([[CAMERA_A, own]])
    cameras = find_cameras(product_id=0xB0DC, backend=backend, sysfs=sysfs, dev=dev)
    assert [camera.serial for camera in cameras] == ["CAM-C"]


def test_unreadable_devices_are_skipped_with_a_warning(
    tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, dev = tree
    denied = FakeDevice(0x1209, 0x0001, 1, 11, (1, 5), "bodycam v1", "CAM-D", deny_open=True)
    stalls = FakeDevice(0x1209, 0x0001, 1, 12, (1, 6), "bodycam v1", "CAM-E", fail_serial=True)
    backend = FakeBackend([[denied, CAMERA_A, stalls]])
    with caplog.at_level(logging.WARNING, logger=discovery.__name__):
        cameras = find_cameras(backend=backend, sysfs=sysfs, dev=dev)
    assert [camera.serial for camera in cameras] == ["CAM-A-0001"]
    warnings = [record.getMessage() for record in caplog.records]
    assert any("bus 1 address 11" in text and "skipped" in text for text in warnings)
    assert any("bus 1 address 12" in text and "skipped" in text for text in warnings)


def test_camera_without_serial_is_skipped(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    anonymous = FakeDevice(0x1209, 0x0001, 1, 13, (1, 7), "bodycam v1", None)
    assert find_cameras(backend=FakeBackend([[anonymous]]), sysfs=sysfs, dev=dev) == []


def test_tty_unknown_until_the_kernel_makes_it(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    fresh = FakeDevice(0x1209, 0x0001, 3, 2, (9,), "bodycam v1", "CAM-F")
    [camera] = find_cameras(backend=FakeBackend([[fresh]]), sysfs=sysfs, dev=dev)
    assert camera.port_path == "3-9"
    assert camera.tty is None


def test_port_path_from_bus_and_address_when_libusb_has_no_ports(
    tree: tuple[Path, Path],
) -> None:
    sysfs, dev = tree
    devices = sysfs / "bus" / "usb" / "devices"
    for name, busnum, devnum in (("1-1.1", 1, 4), ("2-4", 2, 7)):
        (devices / name).mkdir()
        (devices / name / "busnum").write_text(f"{busnum}\n")
        (devices / name / "devnum").write_text(f"{devnum}\n")
    (devices / "2-4:1.0" / "tty" / "ttyACM3").mkdir(parents=True)
    old = FakeDevice(0x1209, 0x0001, 2, 7, None, "bodycam v1", "CAM-G")
    [camera] = find_cameras(backend=FakeBackend([[old]]), sysfs=sysfs, dev=dev)
    assert camera.port_path == "2-4"
    assert camera.tty == dev / "ttyACM3"


def test_a_link_pointing_elsewhere_is_not_trusted(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    # A second device claiming B's serial left a link to its own tty.
    (dev / "bodycam" / "CAM-B-0002").symlink_to("../ttyACM2")
    [camera] = find_cameras(backend=FakeBackend([[CAMERA_B]]), sysfs=sysfs, dev=dev)
    assert camera.tty == dev / "ttyACM1"


def test_a_serial_unsafe_as_a_file_name_is_not_used_as_one(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    # No tty in sysfs for this one: a naive join would land on /dev/bodycam/../ttyACM2.
    sneaky = FakeDevice(0x1209, 0x0001, 1, 20, (1, 8), "bodycam v1", "../ttyACM2")
    [camera] = find_cameras(backend=FakeBackend([[sneaky]]), sysfs=sysfs, dev=dev)
    assert camera.serial == "../ttyACM2"
    assert camera.tty is None


def test_missing_libusb_is_a_clear_hardware_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usb.backend.libusb1, "get_backend", lambda *_a, **_k: None)
    with pytest.raises(HardwareError, match=r"libusb 1\.0 not found: install libusb-1\.0-0"):
        find_cameras()


async def test_watch_reports_each_arrival_once(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    backend = FakeBackend(
        [[CAMERA_A], [CAMERA_A], [CAMERA_A, CAMERA_B], [CAMERA_B], [CAMERA_B, CAMERA_A]]
    )
    seen: list[str] = []
    done = asyncio.Event()
    quiet = asyncio.Event()
    loop = asyncio.get_running_loop()
    settled_at: list[int] = []

    def enumerated(count: int) -> None:
        # Three more looks at the final bus after the third report, and still nothing new.
        if settled_at and count >= settled_at[0] + 3:
            loop.call_soon_threadsafe(quiet.set)

    backend.on_enumerate = enumerated

    async def on_new(camera: DockedCamera) -> None:
        seen.append(camera.serial)
        if len(seen) == 3:
            settled_at.append(backend.enumerations)
            done.set()

    watcher = asyncio.create_task(
        watch_cameras(on_new, interval_s=0.01, backend=backend, sysfs=sysfs, dev=dev)
    )
    try:
        async with asyncio.timeout(10):
            await done.wait()
            await quiet.wait()
    finally:
        watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert seen == ["CAM-A-0001", "CAM-B-0002", "CAM-A-0001"]


async def test_watch_accepts_a_plain_callback(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    seen: list[DockedCamera] = []
    got_one = asyncio.Event()

    def on_new(camera: DockedCamera) -> None:
        seen.append(camera)
        got_one.set()

    backend: Any = FakeBackend([[CAMERA_B]])
    watcher = asyncio.create_task(
        watch_cameras(on_new, interval_s=0.01, backend=backend, sysfs=sysfs, dev=dev)
    )
    try:
        async with asyncio.timeout(10):
            await got_one.wait()
    finally:
        watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert [camera.tty for camera in seen] == [dev / "ttyACM1"]
