"""Find docked cameras on the dock host: USB ids and strings with pyusb, tty through sysfs.

A camera enumerates as a USB CDC-ACM gadget with the project's vendor/product id, a product
string starting with ``bodycam`` and its device id as serial number. The id pair alone is
not enough (until the project has its own product id, other pid.codes test devices share
it), hence the product string. Each camera is mapped to its tty through sysfs
(``/sys/bus/usb/devices/<bus>-<ports>:<config>.<interface>/tty/ttyACM*``) and, when the udev
rule made it, to the stable ``/dev/bodycam/<serial>``.

pyusb is imported only when a search runs, so a dock started with an explicit ``--port``
never needs libusb.
"""

from __future__ import annotations

import asyncio
import glob
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.drivers.interfaces import HardwareError

log = logging.getLogger(__name__)

# pid.codes' vendor id for open hardware, and its test product id until the project is
# assigned its own: change both here (and in udev/70-bodycam-dock.rules) when it is.
DEFAULT_VENDOR_ID = 0x1209
DEFAULT_PRODUCT_ID = 0x0001
PRODUCT_PREFIX = "bodycam"

# What udev keeps unchanged in a symlink name built from a USB serial (usb_id's
# ID_SERIAL_SHORT); a serial outside this set gets no /dev/bodycam link we could predict.
_UDEV_SAFE = re.compile(r"[0-9A-Za-z#+\-.:=@_]+")


class _BusListError(HardwareError):
    """The bus could not be listed this time (a device left mid-enumeration)."""


@dataclass(frozen=True)
class DockedCamera:
    """One camera seen on the USB bus.

    Attributes:
        serial: The camera's device id (its USB serial number).
        bus: USB bus number.
        address: Device address on that bus (changes at every replug).
        port_path: The USB topology name in sysfs (``1-1.2``), None if unknown.
        tty: The port to open: ``/dev/bodycam/<serial>`` if udev made it, else
            ``/dev/ttyACM<n>``; None while the kernel has not created the tty yet.
    """

    serial: str
    bus: int
    address: int
    port_path: str | None
    tty: Path | None


def _backend_or_raise(backend: object | None) -> object:
    if backend is not None:
        return backend
    import usb.backend.libusb1

    found: object | None = usb.backend.libusb1.get_backend()
    if found is None:
        raise HardwareError("libusb 1.0 not found: install libusb-1.0-0 (needed only for --watch)")
    return found


def find_cameras(
    *,
    vendor_id: int = DEFAULT_VENDOR_ID,
    product_id: int = DEFAULT_PRODUCT_ID,
    backend: object | None = None,
    sysfs: Path = Path("/sys"),
    dev: Path = Path("/dev"),
) -> list[DockedCamera]:
    """The cameras on the USB bus now, in bus/address order.

    Blocking (USB control transfers): call it from a worker thread in async code.

    Args:
        vendor_id: USB vendor id to look for.
        product_id: USB product id to look for.
        backend: A pyusb backend (tests pass a fake); libusb 1.0 by default.
        sysfs: Where sysfs is mounted.
        dev: Where device nodes and the udev symlinks live.

    Raises:
        HardwareError: libusb is missing, or the bus cannot be listed.
    """
    import usb.core
    import usb.util

    chosen = _backend_or_raise(backend)
    cameras: list[DockedCamera] = []
    try:
        devices = list(
            usb.core.find(find_all=True, idVendor=vendor_id, idProduct=product_id, backend=chosen)
        )
    except usb.core.NoBackendError as exc:
        raise HardwareError(
            "libusb 1.0 not found: install libusb-1.0-0 (needed only for --watch)"
        ) from exc
    except usb.core.USBError as exc:
        raise _BusListError(f"cannot list USB devices: {exc}") from exc
    for device in devices:
        bus, address = int(device.bus), int(device.address)
        port_path = _port_path(bus, device.port_numbers)
        label = f"USB device {vendor_id:04x}:{product_id:04x} at bus {bus} address {address}"
        try:
            product = usb.util.get_string(device, device.iProduct)
            serial = usb.util.get_string(device, device.iSerialNumber)
        except (usb.core.USBError, ValueError) as exc:
            # ValueError is how pyusb reports a device whose language ids it could not
            # read, which on Linux almost always means no permission on its usbfs node.
            log.warning(
                "%s: cannot read its product and serial strings (%s); skipped. The dock "
                "user needs access to the USB device (see udev/70-bodycam-dock.rules).",
                label,
                exc,
            )
            continue
        finally:
            usb.util.dispose_resources(device)
        if not isinstance(product, str) or not product.startswith(PRODUCT_PREFIX):
            log.debug("%s: product %r is not a camera", label, product)
            continue
        if not serial:
            log.warning("%s: a camera without a serial number; skipped", label)
            continue
        sysfs_name = port_path or _sysfs_name_by_address(sysfs, bus, address)
        tty = _tty_for(sysfs, dev, sysfs_name, serial)
        cameras.append(DockedCamera(serial, bus, address, sysfs_name, tty))
    cameras.sort(key=lambda camera: (camera.bus, camera.address))
    return cameras


def _port_path(bus: int, port_numbers: Any) -> str | None:
    if not port_numbers:
        return None
    return f"{bus}-" + ".".join(str(int(port)) for port in port_numbers)


def _sysfs_name_by_address(sysfs: Path, bus: int, address: int) -> str | None:
    """The sysfs name of a device when libusb could not give its port numbers."""
    devices = sysfs / "bus" / "usb" / "devices"
    try:
        candidates = sorted(devices.iterdir())
    except OSError:
        return None
    for entry in candidates:
        try:
            busnum = int((entry / "busnum").read_text())
            devnum = int((entry / "devnum").read_text())
        except (OSError, ValueError):
            continue  # an interface directory, or a device that just left
        if (busnum, devnum) == (bus, address):
            return entry.name
    return None


def _tty_for(sysfs: Path, dev: Path, sysfs_name: str | None, serial: str) -> Path | None:
    kernel_tty: Path | None = None
    if sysfs_name is not None:
        devices = sysfs / "bus" / "usb" / "devices"
        # Interfaces are "<device>:<config>.<interface>"; the ACM tty hangs off the control
        # interface, the lowest one that has a tty.
        for interface in sorted(devices.glob(f"{glob.escape(sysfs_name)}:*")):
            ttys = sorted((interface / "tty").glob("ttyACM*"))
            if ttys:
                kernel_tty = dev / ttys[0].name
                break
    if _UDEV_SAFE.fullmatch(serial) is None or serial in (".", ".."):
        return kernel_tty
    link = dev / "bodycam" / serial
    if not link.exists():
        return kernel_tty
    if kernel_tty is not None and link.resolve().name != kernel_tty.name:
        # Two devices claim this serial (a stale link, or a device posing as a camera):
        # trust the kernel's name for the device we are looking at.
        log.warning(
            "%s points to %s, not to %s: using the latter", link, link.resolve(), kernel_tty
        )
        return kernel_tty
    return link


async def watch_cameras(
    on_new: Callable[[DockedCamera], Awaitable[None] | None],
    *,
    interval_s: float = 1.0,
    **find_kwargs: Any,
) -> None:
    """Poll for cameras until cancelled; call ``on_new`` for each newly seen serial.

    A camera is reported once its tty exists (the kernel names it a moment after the USB
    device appears), and again after it has disappeared and come back. ``on_new`` may be a
    plain function or a coroutine function; it should hand the camera to its own task and
    return quickly. Its exceptions end the watch.

    Args:
        on_new: Called with each newly docked camera.
        interval_s: Seconds between two looks at the bus.
        **find_kwargs: Passed to :func:`find_cameras` (ids, backend, sysfs, dev).

    Raises:
        HardwareError: libusb is missing (transient USB errors are logged and retried).
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    seen: set[str] = set()
    while True:
        try:
            cameras = await asyncio.to_thread(find_cameras, **find_kwargs)
        except _BusListError as exc:
            log.warning("camera watch: %s; retrying", exc)
            cameras = None
        if cameras is not None:
            present = {camera.serial: camera for camera in cameras if camera.tty is not None}
            for serial, camera in present.items():
                if serial not in seen:
                    log.info("camera %s docked on %s", serial, camera.tty)
                    result = on_new(camera)
                    if inspect.isawaitable(result):
                        await result
            for serial in seen - present.keys():
                log.info("camera %s left the dock", serial)
            seen = set(present)
        await asyncio.sleep(interval_s)
