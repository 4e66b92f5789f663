"""Fake kernel trees for driver tests: power_supply and UDC classes, and a configfs that obeys.

All three build real files under a temporary directory, so drivers read them with ordinary
file calls. Builders (the world's hand in a test):

* ``FakePowerSupply(root)``: ``/sys/class/power_supply``.

  - ``add_battery(name, *, capacity=80, status="Discharging", present=True,
    voltage_now_uv=None, voltage_min_design_uv=None, voltage_max_design_uv=None,
    scope=None) -> Path``: a ``type`` = ``Battery`` supply; an argument left ``None`` is an
    attribute the driver does not provide (no file).
  - ``add_supply(name, *, type="USB", online=True) -> Path``: a charger (``Mains``, ``USB``,
    ``Wireless``) with ``online`` 1 or 0.
  - ``set(name, attr, value)``: write any attribute, garbage included; ``remove_attr(name,
    attr)``; ``remove(name)``: the device is gone (unplugged, driver unbound).

* ``FakeUdc(root)``: ``/sys/class/udc``.

  - ``add(name, state="not attached") -> Path``; ``set_state(name, state)`` (one of
    :data:`UDC_STATES`); ``remove(name)``.
  - ``claim(name, driver="g_serial")`` / ``release(name)``: a gadget outside configfs (a
    legacy module) holds the controller, so binding to it fails with EBUSY.
  - ``names() -> list[str]``, ``holder(name) -> str | None``: what the fake configfs asks.

* ``FakeConfigfs(root, udc=None, *, loaded=True, unknown_udc_errno=errno.ENODEV)``: a configfs
  mount at ``root`` (``loaded=False``: libcomposite not loaded, no ``usb_gadget``). It is a
  :class:`~bodycam.drivers.usb_gadget.ConfigfsOps`: pass it as ``ops=`` and every change the
  driver makes goes through its rules (a real configfs's, stricter where noted):

  - ``mkdir`` only where configfs has groups (a gadget, ``strings/<0xLANG>``,
    ``configs/<name>.<n>``, ``configs/*/strings/<0xLANG>``, ``functions/<fn>.<inst>`` with a
    known function, else ENOENT as for a missing module); it creates the attribute files
    and default groups, as the kernel does.
  - ``write`` only to existing attributes, parsed as the kernel does (C integers, BCD,
    126-byte strings, ``MaxPower``, ``UDC``): EINVAL/ERANGE/EOVERFLOW otherwise. ``UDC``:
    a newline unbinds (ENODEV when not bound); binding needs a configuration with a
    function, a known controller (``unknown_udc_errno`` otherwise: ENODEV before Linux 5.18,
    EBUSY after) that nobody holds (EBUSY), and a gadget not yet bound (EBUSY).
  - ``symlink`` only from a configuration to a function of the same gadget; ``unlink`` only
    links (attribute files: EPERM); ``rmdir`` refuses default groups (EPERM), directories
    holding user-made directories or links (ENOTEMPTY) and functions still linked (EBUSY).
  - Stricter than the kernel: links and ``rmdir`` inside a bound gadget fail with EBUSY, so
    a teardown that does not unbind first fails.
  - ``permission_denied = True``: every change fails with EACCES (not root).
  - ``calls``: every change in order, as ``(op, path relative to root)``; ``bound``:
    gadget name -> controller; ``gadgets``: ``root / "usb_gadget"``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

UDC_STATES = (
    "not attached",
    "attached",
    "powered",
    "reconnecting",
    "unauthenticated",
    "default",
    "addressed",
    "configured",
    "suspended",
)


def _os_error(code: int, path: Path) -> OSError:
    # OSError picks the matching subclass (FileNotFoundError for ENOENT, ...).
    return OSError(code, os.strerror(code), str(path))


# --- power_supply ---------------------------------------------------------------------


class FakePowerSupply:
    """A ``/sys/class/power_supply`` tree under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add_battery(
        self,
        name: str,
        *,
        capacity: int | None = 80,
        status: str | None = "Discharging",
        present: bool | None = True,
        voltage_now_uv: int | None = None,
        voltage_min_design_uv: int | None = None,
        voltage_max_design_uv: int | None = None,
        scope: str | None = None,
    ) -> Path:
        """A fuel gauge; ``None`` leaves that attribute out, as a driver that lacks it does."""
        attrs: dict[str, object] = {
            "type": "Battery",
            "capacity": capacity,
            "status": status,
            "present": None if present is None else int(present),
            "voltage_now": voltage_now_uv,
            "voltage_min_design": voltage_min_design_uv,
            "voltage_max_design": voltage_max_design_uv,
            "scope": scope,
        }
        return self._add(name, attrs)

    def add_supply(self, name: str, *, type: str = "USB", online: bool = True) -> Path:
        """A charger input (``Mains``, ``USB``, ``Wireless``) that is online or not."""
        return self._add(name, {"type": type, "online": int(online)})

    def set(self, name: str, attr: str, value: str | int) -> None:
        """Write one attribute as the driver would show it (any text, garbage included)."""
        (self.root / name / attr).write_text(f"{value}\n")

    def remove_attr(self, name: str, attr: str) -> None:
        (self.root / name / attr).unlink()

    def remove(self, name: str) -> None:
        """The device is gone: its whole directory disappears."""
        shutil.rmtree(self.root / name)

    def _add(self, name: str, attrs: dict[str, object]) -> Path:
        supply = self.root / name
        supply.mkdir()
        for attr, value in attrs.items():
            if value is not None:
                (supply / attr).write_text(f"{value}\n")
        return supply


# --- UDC class --------------------------------------------------------------------------


class FakeUdc:
    """A ``/sys/class/udc`` tree under ``root``: USB device controllers and their state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._holders: dict[str, str] = {}
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, state: str = "not attached") -> Path:
        udc = self.root / name
        udc.mkdir()
        self.set_state(name, state)
        return udc

    def set_state(self, name: str, state: str) -> None:
        """What the controller reports: ``configured`` once a host picked our configuration."""
        if state not in UDC_STATES:
            raise ValueError(f"not a UDC state: {state!r} (one of {UDC_STATES})")
        (self.root / name / "state").write_text(f"{state}\n")

    def remove(self, name: str) -> None:
        self._holders.pop(name, None)
        shutil.rmtree(self.root / name)

    def claim(self, name: str, driver: str = "g_serial") -> None:
        """A gadget driver outside configfs (a legacy module) now holds the controller."""
        self._holders[name] = driver

    def release(self, name: str) -> None:
        self._holders.pop(name, None)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def holder(self, name: str) -> str | None:
        return self._holders.get(name)


# --- configfs ---------------------------------------------------------------------------

_GADGET_ATTRS = {
    "bDeviceClass": "0x00",
    "bDeviceSubClass": "0x00",
    "bDeviceProtocol": "0x00",
    "bMaxPacketSize0": "0x40",
    "idVendor": "0x0000",
    "idProduct": "0x0000",
    "bcdDevice": "0x0606",  # the kernel's own version, until someone writes one
    "bcdUSB": "0x0200",
    "UDC": "",
}
_GADGET_GROUPS = ("configs", "functions", "strings", "os_desc")
_STRINGS_ATTRS = {"manufacturer": "", "product": "", "serialnumber": ""}
_CONFIG_ATTRS = {"MaxPower": "2", "bmAttributes": "0x80"}
_CONFIG_STRINGS_ATTRS = {"configuration": ""}
_FUNCTION_ATTRS = {"port_num": "0"}
_READ_ONLY = frozenset({"port_num"})
_KNOWN_FUNCTIONS = frozenset({"acm", "gser", "obex", "ecm", "ncm", "rndis", "mass_storage"})
_LANG_RE = re.compile(r"0[xX][0-9a-fA-F]{1,4}")
_CONFIG_RE = re.compile(r".+\.[0-9]+")
_FUNCTION_RE = re.compile(r"([^.]+)\..+")
_MAX_STRING_BYTES = 126


def _c_uint(value: str, bits: int, path: Path) -> int:
    """Parse like the kernel's kstrtou16/kstrtou8 with base 0 (one trailing newline allowed)."""
    text = value.removesuffix("\n").removeprefix("+")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        number = int(text, 16)
    elif re.fullmatch(r"0[0-7]*", text):
        number = int(text, 8)
    elif re.fullmatch(r"[1-9][0-9]*", text):
        number = int(text)
    else:
        raise _os_error(errno.EINVAL, path)
    if number >= 1 << bits:
        raise _os_error(errno.ERANGE, path)
    return number


class FakeConfigfs:
    """A configfs mount whose changes obey configfs's rules; see the module docstring."""

    def __init__(
        self,
        root: Path,
        udc: FakeUdc | None = None,
        *,
        loaded: bool = True,
        unknown_udc_errno: int = errno.ENODEV,
    ) -> None:
        self.root = root
        self.udc = udc
        self.unknown_udc_errno = unknown_udc_errno
        self.permission_denied = False
        self.calls: list[tuple[str, str]] = []
        self.bound: dict[str, str] = {}
        root.mkdir(parents=True, exist_ok=True)
        if loaded:
            (root / "usb_gadget").mkdir(exist_ok=True)

    @property
    def gadgets(self) -> Path:
        return self.root / "usb_gadget"

    # --- ConfigfsOps ---------------------------------------------------------------------

    def mkdir(self, path: Path) -> None:
        self._enter("mkdir", path)
        if not path.parent.is_dir():
            raise _os_error(errno.ENOENT, path)
        if path.exists() or path.is_symlink():
            raise _os_error(errno.EEXIST, path)
        kind = self._kind(path)
        name = path.name
        attrs: dict[str, str]
        groups: tuple[str, ...]
        if kind == "gadget":
            attrs, groups = _GADGET_ATTRS, _GADGET_GROUPS
        elif kind in ("gadget_strings", "config_strings"):
            if not _LANG_RE.fullmatch(name):
                raise _os_error(errno.EINVAL, path)
            attrs = _STRINGS_ATTRS if kind == "gadget_strings" else _CONFIG_STRINGS_ATTRS
            groups = ()
        elif kind == "config":
            if not _CONFIG_RE.fullmatch(name):
                raise _os_error(errno.EINVAL, path)
            attrs, groups = _CONFIG_ATTRS, ("strings",)
        elif kind == "function":
            match = _FUNCTION_RE.fullmatch(name)
            if match is None:
                raise _os_error(errno.EINVAL, path)
            if match.group(1) not in _KNOWN_FUNCTIONS:
                raise _os_error(errno.ENOENT, path)  # request_module found no such function
            attrs, groups = _FUNCTION_ATTRS, ()
        else:
            raise _os_error(errno.EPERM, path)  # not a group: nothing can be made here
        path.mkdir()
        for attr, value in attrs.items():
            (path / attr).write_text(f"{value}\n")
        for group in groups:
            (path / group).mkdir()

    def write(self, path: Path, value: str) -> None:
        self._enter("write", path)
        if path.is_dir():
            raise _os_error(errno.EISDIR, path)
        if not path.is_file():
            raise _os_error(errno.ENOENT, path)  # configfs files cannot be created
        attr = path.name
        if attr in _READ_ONLY:
            raise _os_error(errno.EACCES, path)
        if attr in ("idVendor", "idProduct"):
            shown = f"0x{_c_uint(value, 16, path):04x}"
        elif attr in ("bcdDevice", "bcdUSB"):
            number = _c_uint(value, 16, path)
            if any((number >> shift) & 0xF > 9 for shift in (0, 4, 8, 12)):
                raise _os_error(errno.EINVAL, path)
            shown = f"0x{number:04x}"
        elif attr in ("bDeviceClass", "bDeviceSubClass", "bDeviceProtocol", "bMaxPacketSize0"):
            shown = f"0x{_c_uint(value, 8, path):02x}"
        elif attr == "MaxPower":
            milliamps = _c_uint(value, 16, path)
            if -(-milliamps // 8) > 0xFF:
                raise _os_error(errno.ERANGE, path)
            shown = str(milliamps)
        elif attr == "bmAttributes":
            bits = _c_uint(value, 8, path)
            if not bits & 0x80 or bits & 0x1F:
                raise _os_error(errno.EINVAL, path)
            shown = f"0x{bits:02x}"
        elif attr == "UDC":
            shown = self._write_udc(path, value.removesuffix("\n"))
        else:
            text = value.removesuffix("\n")
            if len(text.encode()) > _MAX_STRING_BYTES:
                raise _os_error(errno.EOVERFLOW, path)
            shown = text
        path.write_text(f"{shown}\n")

    def symlink(self, target: Path, link: Path) -> None:
        self._enter("symlink", link)
        if self._kind(link.parent) != "config":
            raise _os_error(errno.EPERM, link)
        if link.exists() or link.is_symlink():
            raise _os_error(errno.EEXIST, link)
        gadget = self._gadget_of(link)
        if (
            not target.is_dir()
            or self._kind(target) != "function"
            or self._gadget_of(target) != gadget
        ):
            raise _os_error(errno.EINVAL, link)  # only this gadget's functions
        real = target.resolve()
        if any(p.resolve() == real for p in link.parent.iterdir() if p.is_symlink()):
            raise _os_error(errno.EEXIST, link)  # a function joins a configuration once
        self._refuse_while_bound(gadget, link)
        link.symlink_to(target)

    def unlink(self, path: Path) -> None:
        self._enter("unlink", path)
        if not path.is_symlink():
            if not path.exists():
                raise _os_error(errno.ENOENT, path)
            raise _os_error(errno.EPERM, path)  # attribute files cannot be removed
        self._refuse_while_bound(self._gadget_of(path), path)
        path.unlink()

    def rmdir(self, path: Path) -> None:
        self._enter("rmdir", path)
        if path.is_symlink() or not path.is_dir():
            raise _os_error(errno.ENOTDIR if path.exists() else errno.ENOENT, path)
        kind = self._kind(path)
        if kind not in ("gadget", "gadget_strings", "config", "config_strings", "function"):
            raise _os_error(errno.EPERM, path)  # default groups go with their parent only
        if self._user_made(path):
            raise _os_error(errno.ENOTEMPTY, path)
        gadget = self._gadget_of(path)
        if kind == "function":
            configs = gadget / "configs"
            for link in configs.glob("*/*"):
                if link.is_symlink() and link.resolve() == path.resolve():
                    raise _os_error(errno.EBUSY, path)  # still part of a configuration
        self._refuse_while_bound(gadget, path)
        shutil.rmtree(path)  # the attributes and default groups go with it

    # --- rules ---------------------------------------------------------------------------

    def _enter(self, op: str, path: Path) -> None:
        self.calls.append((op, path.relative_to(self.root).as_posix()))
        if self.permission_denied:
            raise _os_error(errno.EACCES, path)

    def _kind(self, path: Path) -> str:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return "outside"
        shape: tuple[int | str, ...] = (len(parts), *parts[2:3], *parts[4:5])
        if parts[:1] != ("usb_gadget",):
            return "other"
        kinds: dict[tuple[int | str, ...], str] = {
            (2,): "gadget",
            (4, "strings"): "gadget_strings",
            (4, "configs"): "config",
            (4, "functions"): "function",
            (6, "configs", "strings"): "config_strings",
        }
        return kinds.get(shape, "other")

    def _gadget_of(self, path: Path) -> Path:
        parts = path.relative_to(self.root).parts
        return self.root.joinpath(*parts[:2])

    def _user_made(self, path: Path) -> bool:
        """Whether a directory holds links or directories a user made (not default groups)."""
        kind = self._kind(path)
        groups = {"gadget": _GADGET_GROUPS, "config": ("strings",)}.get(kind, ())
        for child in path.iterdir():
            if child.is_symlink():
                return True
            if child.is_dir():
                if child.name not in groups:
                    return True
                if any(c.is_dir() or c.is_symlink() for c in child.iterdir()):
                    return True
        return False

    def _refuse_while_bound(self, gadget: Path, path: Path) -> None:
        if gadget.name in self.bound:
            raise _os_error(errno.EBUSY, path)

    def _write_udc(self, path: Path, name: str) -> str:
        gadget = path.parent.name
        if not name:
            if gadget not in self.bound:
                raise _os_error(errno.ENODEV, path)
            del self.bound[gadget]
            return ""
        if gadget in self.bound:
            raise _os_error(errno.EBUSY, path)
        configs = [c for c in (path.parent / "configs").iterdir() if c.is_dir()]
        if not configs or not all(any(p.is_symlink() for p in c.iterdir()) for c in configs):
            raise _os_error(errno.EINVAL, path)  # "needs at least one function"
        if self.udc is None or name not in self.udc.names():
            raise _os_error(self.unknown_udc_errno, path)
        if self.udc.holder(name) is not None or name in self.bound.values():
            raise _os_error(errno.EBUSY, path)
        self.bound[gadget] = name
        return name
