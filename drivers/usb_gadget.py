"""The camera's USB port for the dock: a CDC-ACM gadget set up and torn down through configfs.

Kernel facts this follows (Documentation/usb/gadget_configfs.rst, drivers/usb/gadget/configfs.c,
drivers/usb/gadget/udc/core.c):

* ``<configfs>/usb_gadget`` exists once libcomposite is loaded. ``mkdir`` of a gadget, of
  ``strings/<lang>``, ``configs/<name>.<number>``, ``configs/*/strings/<lang>`` or
  ``functions/<function>.<instance>`` makes the kernel create that directory's attribute
  files (and default groups). Attribute files cannot be removed; ``rmdir`` takes a
  directory together with its attributes.
* ``idVendor``, ``idProduct``, ``bcdDevice`` and ``bcdUSB`` are parsed as C integers
  (``0x1209``) and shown as ``0x%04x``; the bcd values must be binary-coded decimal.
  String attributes hold at most 126 bytes (what a USB string descriptor can carry); one
  trailing newline is dropped. ``MaxPower`` is in mA.
* A function joins a configuration through a symlink ``configs/c.1/acm.usb0`` to
  ``functions/acm.usb0``; the kernel resolves the target itself, so it is passed absolute.
* Writing a controller's name (an entry of ``/sys/class/udc``) to ``UDC`` binds the gadget;
  writing a newline unbinds it (an empty write never reaches the kernel, and unbinding a
  gadget that is not bound fails with ENODEV). A controller another gadget holds fails with
  EBUSY; an unknown name fails with ENODEV before Linux 5.18 and EBUSY since ("couldn't
  find an available UDC or it's busy").
* Teardown order: unbind; remove the function links from each configuration; rmdir each
  configuration's strings, the configurations, the functions, the gadget's strings, the
  gadget.

Everything that changes configfs goes through a :class:`ConfigfsOps` (plain ``os`` calls by
default), so tests can put a fake that enforces configfs's rules in its place.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from bodycam.drivers.interfaces import HardwareError

log = logging.getLogger(__name__)

CONFIGFS = Path("/sys/kernel/config")
UDC_CLASS = Path("/sys/class/udc")
SERVICE = "bodycam-gadget.service"
LANG = "0x409"  # US English: the language every host asks for
CONFIG = "c.1"
FUNCTION = "acm.usb0"
SERIAL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_MAX_STRING_BYTES = 126
# USB 2.0: bMaxPower counts 2 mA units in one byte, so a high-speed device asks for 500 mA
# at most (the Pi's dwc2 is high-speed).
_MAX_POWER_MA = 500


class GadgetError(HardwareError):
    """The gadget cannot be set up or torn down; one line saying what to fix."""


class ConfigfsOps(Protocol):
    """The changes set-up and teardown make to configfs (reads are plain file reads)."""

    def mkdir(self, path: Path) -> None: ...

    def write(self, path: Path, value: str) -> None: ...

    def symlink(self, target: Path, link: Path) -> None: ...

    def unlink(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...


class OsConfigfsOps:
    """Implements ConfigfsOps with plain file-system calls on the real configfs."""

    def mkdir(self, path: Path) -> None:
        path.mkdir()

    def write(self, path: Path, value: str) -> None:
        # One write(2) per value: configfs hands each write to the attribute's store as a
        # whole. No O_CREAT: an attribute that is not there is an error, not a new file.
        data = value.encode()
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)", str(path))

    def symlink(self, target: Path, link: Path) -> None:
        link.symlink_to(target)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def rmdir(self, path: Path) -> None:
        path.rmdir()


@dataclass(frozen=True, slots=True)
class GadgetSpec:
    """What the dock host sees when the camera is plugged in.

    Raises:
        GadgetError: A value the kernel or USB would refuse (the message names its key).
    """

    serial: str
    vendor_id: int = 0x1209
    product_id: int = 0x0001
    manufacturer: str = "bodycam project"
    product: str = "bodycam camera"  # the dock's udev rule matches "bodycam*"
    max_power_ma: int = 500
    bcd_device: int = 0x0100
    bcd_usb: int = 0x0200
    configuration: str = "CDC ACM"
    name: str = "bodycam"

    def __post_init__(self) -> None:
        if not SERIAL_RE.fullmatch(self.serial):
            raise GadgetError(
                f"device.id: {self.serial!r} cannot be the USB serial number: "
                "1-64 characters of A-Z a-z 0-9 . _ -"
            )
        for key, number in (
            ("gadget.vendor_id", self.vendor_id),
            ("gadget.product_id", self.product_id),
        ):
            if not 0 <= number <= 0xFFFF:
                raise GadgetError(f"{key}: {number:#x} is not a 16-bit USB id")
        for key, bcd in (("bcd_device", self.bcd_device), ("bcd_usb", self.bcd_usb)):
            if not 0 <= bcd <= 0xFFFF or any((bcd >> s) & 0xF > 9 for s in (0, 4, 8, 12)):
                raise GadgetError(f"gadget {key}: {bcd:#06x} is not binary-coded decimal")
        for key, text in (
            ("gadget.manufacturer", self.manufacturer),
            ("gadget.product", self.product),
            ("gadget configuration", self.configuration),
        ):
            if not text or not text.isprintable() or len(text.encode()) > _MAX_STRING_BYTES:
                raise GadgetError(
                    f"{key}: {text!r} must be 1-{_MAX_STRING_BYTES} bytes of printable text"
                )
        if not 0 <= self.max_power_ma <= _MAX_POWER_MA:
            raise GadgetError(
                f"gadget max_power_ma: {self.max_power_ma} mA is outside 0-{_MAX_POWER_MA}"
            )
        if not _NAME_RE.fullmatch(self.name):
            raise GadgetError(f"gadget name: {self.name!r} is not a plain directory name")

    def attributes(self) -> dict[str, str]:
        """Every value set-up writes, by path under the gadget's directory, as configfs shows it."""
        strings = f"strings/{LANG}"
        return {
            "idVendor": f"0x{self.vendor_id:04x}",
            "idProduct": f"0x{self.product_id:04x}",
            "bcdDevice": f"0x{self.bcd_device:04x}",
            "bcdUSB": f"0x{self.bcd_usb:04x}",
            f"{strings}/serialnumber": self.serial,
            f"{strings}/manufacturer": self.manufacturer,
            f"{strings}/product": self.product,
            f"configs/{CONFIG}/MaxPower": str(self.max_power_ma),
            f"configs/{CONFIG}/{strings}/configuration": self.configuration,
        }


def setup_gadget(
    spec: GadgetSpec,
    *,
    configfs: Path = CONFIGFS,
    udc: str | None = None,
    udc_class: Path = UDC_CLASS,
    ops: ConfigfsOps | None = None,
) -> str:
    """Compose the CDC-ACM gadget and bind it to a controller; returns the controller's name.

    Idempotent: a gadget that already matches ``spec`` is left alone (bound if it was not);
    one that differs (another serial, a half-built tree) is torn down and built again.

    Args:
        spec: What the host will see.
        configfs: Where configfs is mounted.
        udc: The controller (``gadget.udc``); ``None``: the first in ``udc_class``.
        udc_class: The controllers' sysfs class directory.
        ops: The changes' backend; ``None``: the real configfs.

    Raises:
        GadgetError: One line saying what to fix (module, controller mode, busy controller,
            permissions).
    """
    ops = ops if ops is not None else OsConfigfsOps()
    gadgets = _gadgets_dir(configfs)
    wanted = _choose_udc(udc, udc_class)
    gadget = gadgets / spec.name
    if gadget.is_dir():
        if _matches(gadget, spec):
            bound = _bound_udc(gadget)
            if bound == wanted or (bound and udc is None and (udc_class / bound).is_dir()):
                log.info("gadget %s is already set up and bound to %s", spec.name, bound)
                return bound
            if bound:
                _unbind(ops, gadget)
            _bind(ops, gadget, wanted, udc_class)
            return wanted
        log.info("gadget %s differs from the one wanted: rebuilding it", spec.name)
        teardown_gadget(spec.name, configfs=configfs, ops=ops)
    _compose(ops, gadget, spec)
    _bind(ops, gadget, wanted, udc_class)
    log.info("gadget %s (serial %s) bound to %s", spec.name, spec.serial, wanted)
    return wanted


def teardown_gadget(
    name: str = "bodycam", *, configfs: Path = CONFIGFS, ops: ConfigfsOps | None = None
) -> bool:
    """Unbind and remove the gadget, in the order configfs requires.

    Returns:
        False when there was no such gadget (nothing to do), True when it was removed.

    Raises:
        GadgetError: A step failed (permissions, or something else holds the gadget).
    """
    ops = ops if ops is not None else OsConfigfsOps()
    gadget = configfs / "usb_gadget" / name
    if not gadget.is_dir():
        return False
    if _bound_udc(gadget):
        _unbind(ops, gadget)
    # Links first (os_desc may link a configuration, which pins it), then what they pinned.
    for link in _entries(gadget / "os_desc"):
        if link.is_symlink():
            _step("remove link", link, partial(ops.unlink, link))
    for config in _subdirs(gadget / "configs"):
        for link in _entries(config):
            if link.is_symlink():
                _step("remove link", link, partial(ops.unlink, link))
        for lang in _subdirs(config / "strings"):
            _step("remove", lang, partial(ops.rmdir, lang))
        _step("remove", config, partial(ops.rmdir, config))
    for function in _subdirs(gadget / "functions"):
        _step("remove", function, partial(ops.rmdir, function))
    for lang in _subdirs(gadget / "strings"):
        for custom in _subdirs(lang):
            _step("remove", custom, partial(ops.rmdir, custom))
        _step("remove", lang, partial(ops.rmdir, lang))
    _step("remove", gadget, partial(ops.rmdir, gadget))
    log.info("gadget %s torn down", name)
    return True


# --- steps ------------------------------------------------------------------------------


def _gadgets_dir(configfs: Path) -> Path:
    if not configfs.is_dir():
        raise GadgetError(
            f"configfs is not mounted at {configfs} (mount -t configfs none {configfs})"
        )
    gadgets = configfs / "usb_gadget"
    if not gadgets.is_dir():
        raise GadgetError(
            f"{gadgets} is missing: the libcomposite module is not loaded, or configfs is "
            "not mounted (modprobe libcomposite; on a Pi: dtoverlay=dwc2 in config.txt and "
            "modules-load=dwc2 in cmdline.txt)"
        )
    return gadgets


def _choose_udc(udc: str | None, udc_class: Path) -> str:
    found = sorted(p.name for p in _entries(udc_class))
    if udc is not None:
        if udc not in found:
            raise GadgetError(
                f"gadget.udc: no USB device controller {udc!r} in {udc_class} "
                f"(there: {', '.join(found) or 'none'})"
            )
        return udc
    if not found:
        raise GadgetError(
            f"no USB device controller in {udc_class}: the port is in host mode "
            "(dwc2 must run in peripheral or OTG mode: dtoverlay=dwc2 in config.txt, "
            "modules-load=dwc2 in cmdline.txt, and the data-capable USB port)"
        )
    if len(found) > 1:
        log.warning(
            "several USB device controllers (%s): using %s; name one with gadget.udc",
            ", ".join(found),
            found[0],
        )
    return found[0]


def _compose(ops: ConfigfsOps, gadget: Path, spec: GadgetSpec) -> None:
    """Build the gadget's tree: directories (the kernel makes their attributes), values, link."""
    config = gadget / "configs" / CONFIG
    function = gadget / "functions" / FUNCTION
    values = spec.attributes()
    _step("create", gadget, partial(ops.mkdir, gadget))
    for directory in (gadget / "strings" / LANG, config, config / "strings" / LANG, function):
        _step("create", directory, partial(ops.mkdir, directory))
    for relative, value in values.items():
        path = gadget / relative
        _step("write", path, partial(ops.write, path, value))
    link = config / FUNCTION
    _step("link", link, partial(ops.symlink, function, link))


def _bind(ops: ConfigfsOps, gadget: Path, udc: str, udc_class: Path) -> None:
    try:
        ops.write(gadget / "UDC", udc)
    except OSError as exc:
        if exc.errno == errno.EBUSY and (udc_class / udc).is_dir():
            raise GadgetError(
                f"USB device controller {udc} is busy: another gadget holds it (a legacy "
                f"g_serial/g_ether module, or another gadget in {gadget.parent}/*/UDC); "
                "remove it, then start the gadget again"
            ) from exc
        if exc.errno in (errno.ENODEV, errno.EBUSY):
            raise GadgetError(
                f"gadget.udc: USB device controller {udc} is gone from {udc_class}"
            ) from exc
        raise _error("bind to " + udc, gadget / "UDC", exc) from exc


def _unbind(ops: ConfigfsOps, gadget: Path) -> None:
    try:
        # A newline, not an empty write: configfs never passes a zero-length write on.
        ops.write(gadget / "UDC", "\n")
    except OSError as exc:
        if exc.errno != errno.ENODEV:  # not bound after all: that is what we wanted
            raise _error("unbind", gadget / "UDC", exc) from exc


def _step(what: str, path: Path, call: Callable[[], None]) -> None:
    try:
        call()
    except OSError as exc:
        raise _error(what, path, exc) from exc


def _error(what: str, path: Path, exc: OSError) -> GadgetError:
    code = exc.errno
    if code == errno.EACCES or (code == errno.EPERM and os.geteuid() != 0):
        return GadgetError(
            f"permission denied ({what} {path}): configuring the USB gadget needs root; "
            f"run it through {SERVICE}"
        )
    if code == errno.ENOENT and path.parent.name == "functions":
        return GadgetError(
            f"the kernel has no {path.name.split('.')[0]} gadget function (module usb_f_acm, "
            "CONFIG_USB_CONFIGFS_ACM)"
        )
    return GadgetError(f"USB gadget: {what} {path} failed: {exc.strerror or exc}")


# --- reading the tree -------------------------------------------------------------------


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _subdirs(directory: Path) -> list[Path]:
    return [p for p in _entries(directory) if p.is_dir() and not p.is_symlink()]


def _show(path: Path) -> str | None:
    try:
        return path.read_text().removesuffix("\n")
    except (OSError, UnicodeDecodeError):
        return None


def _bound_udc(gadget: Path) -> str:
    return _show(gadget / "UDC") or ""


def _matches(gadget: Path, spec: GadgetSpec) -> bool:
    """Whether the gadget there is exactly the one ``spec`` describes (and nothing more)."""
    config = gadget / "configs" / CONFIG
    function = gadget / "functions" / FUNCTION
    if [p.name for p in _subdirs(gadget / "configs")] != [CONFIG]:
        return False
    if [p.name for p in _subdirs(gadget / "functions")] != [FUNCTION]:
        return False
    links = [p for p in _entries(config) if p.is_symlink()]
    if len(links) != 1 or links[0].resolve() != function.resolve():
        return False
    return all(_show(gadget / rel) == value for rel, value in spec.attributes().items())
