"""The battery as the Linux power_supply class shows it (``/sys/class/power_supply``).

Kernel facts this follows (Documentation/ABI/testing/sysfs-class-power,
Documentation/power/power_supply_class.rst):

* ``type``: ``Battery``, ``UPS``, ``Mains``, ``USB``, ``Wireless`` (older kernels also
  ``USB_DCP``, ``USB_PD`` and the like). ``scope`` ``Device`` marks the battery of a
  peripheral (a wireless mouse), never the one powering us.
* ``capacity``: 0-100 (percent). ``status``: ``Unknown``, ``Charging``, ``Discharging``,
  ``Not charging``, ``Full``. ``present``: 0 or 1. ``online`` (chargers): 0 offline, 1 online
  (fixed voltage), 2 online (programmable), so anything but 0 is online.
* ``voltage_now``: microvolts. ``voltage_min_design``/``voltage_max_design``: the voltages at
  which the battery counts as empty/full under normal conditions, in microvolts; the class
  documentation names them as what simple batteries use for a rough capacity estimate, and
  ``voltage_min``/``voltage_max`` as the same thresholds when the hardware can only guess.
* An attribute a driver does not support has no file. A value the driver cannot get now
  fails to read (EIO, ENODATA...); a removed device takes its whole directory with it, and a
  descriptor still open on it reads ENODEV.

The daemon calls :meth:`PowerSupplyBattery.read` in a worker thread every few seconds; each
call is a handful of small sysfs reads.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
from pathlib import Path

from bodycam.drivers.interfaces import BatteryReading, HardwareError

log = logging.getLogger(__name__)

POWER_SUPPLY_CLASS = Path("/sys/class/power_supply")
SUPPLY_KEY = "battery.supply"
CHARGER_KEY = "battery.charger"
_STATUSES = frozenset({"Unknown", "Charging", "Discharging", "Not charging", "Full"})
_INT_RE = re.compile(r"-?[0-9]+")
_MAX_ATTR_BYTES = 4096  # one page: what sysfs shows at most
_GONE = frozenset({errno.ENODEV, errno.ENXIO})

# Resting voltage of one Li-ion cell against its charge, from 3.0 V (empty) to 4.2 V (full):
# a typical curve, scaled onto the pack's own design window. Only an estimate: the voltage
# sags under load and rises while charging, and cells age; a gauge's ``capacity`` is always
# preferred when there is one.
_CELL_EMPTY_V = 3.0
_CELL_FULL_V = 4.2
_LI_ION_CURVE: tuple[tuple[float, float], ...] = (
    (3.00, 0.0),
    (3.45, 5.0),
    (3.61, 10.0),
    (3.69, 20.0),
    (3.74, 30.0),
    (3.77, 40.0),
    (3.80, 50.0),
    (3.84, 60.0),
    (3.90, 70.0),
    (3.97, 80.0),
    (4.06, 90.0),
    (4.20, 100.0),
)


def _read_bytes(path: Path) -> bytes:
    """One small read of a sysfs attribute (a page at most)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, _MAX_ATTR_BYTES)
    finally:
        os.close(fd)


def estimate_percent(voltage_uv: int, empty_uv: int, full_uv: int) -> float:
    """Charge estimated from a resting voltage and the pack's empty/full design voltages.

    The single-cell curve is stretched over ``empty_uv``..``full_uv``, so packs of several
    cells in series work too. Monotonic in ``voltage_uv``; clamped to 0-100.
    """
    fraction = (voltage_uv - empty_uv) / (full_uv - empty_uv)
    cell_v = _CELL_EMPTY_V + fraction * (_CELL_FULL_V - _CELL_EMPTY_V)
    if cell_v <= _LI_ION_CURVE[0][0]:
        return 0.0
    for (v0, p0), (v1, p1) in itertools.pairwise(_LI_ION_CURVE):
        if cell_v <= v1:
            return round(p0 + (cell_v - v0) / (v1 - v0) * (p1 - p0), 1)
    return 100.0


class PowerSupplyBattery:
    """Implements Battery over one power_supply device (the fuel gauge).

    Args:
        root: The power_supply class directory.
        supply: The gauge's name (``battery.supply``); ``None``: the first one, by name,
            whose ``type`` is ``Battery`` (peripherals' batteries left out).
        charger: The supply whose ``online`` means external power (``battery.charger``);
            ``None``: any online supply that is not a battery.

    ``charging`` in a reading is True when the gauge says ``Charging`` or a charger is
    online: on the dock a full battery reports ``Full`` or ``Not charging``, and the online
    charger still marks it as not running down.

    Raises:
        HardwareError: No such gauge (or no battery at all), or the named charger is missing.
            Raised here, at start, so the board can run without a battery reading and say
            why; a gauge that later vanishes makes :meth:`read` raise instead.
    """

    def __init__(
        self,
        root: Path = POWER_SUPPLY_CLASS,
        supply: str | None = None,
        charger: str | None = None,
    ) -> None:
        self._root = root
        self._wanted = supply
        self._charger = charger
        self._warned: set[str] = set()
        self._dir = self._find()
        if charger is not None and not (root / charger).is_dir():
            raise HardwareError(
                f"{CHARGER_KEY}: no power supply {charger!r} in {root} (there: {self._listing()})"
            )
        log.info("battery: fuel gauge %s", self._dir.name)

    @property
    def name(self) -> str:
        """The gauge's power_supply name (``bq27441-0``)."""
        return self._dir.name

    def read(self) -> BatteryReading:
        """The charge now.

        Raises:
            HardwareError: The gauge vanished, does not answer, or shows something that is not
                a reading; one line naming it and ``battery.supply``.
        """
        supply = self._current()
        present = self._int(supply, "present")
        if present == 0:
            # A camera running without its battery runs on external power; 0 % with
            # "charging" keeps the low-battery logic from shutting it down.
            return BatteryReading(percent=0.0, charging=True, present=False)
        status = self._text(supply, "status")
        if status is not None and status not in _STATUSES and status not in self._warned:
            self._warned.add(status)
            log.warning("battery: %s reports an unknown status %r", supply.name, status)
        percent = self._percent(supply)
        charging = status == "Charging" or self._external_power(supply)
        return BatteryReading(percent=percent, charging=charging)

    # --- finding the gauge ------------------------------------------------------------

    def _find(self) -> Path:
        if self._wanted is not None:
            supply = self._root / self._wanted
            if not supply.is_dir():
                raise HardwareError(
                    f"{SUPPLY_KEY}: no power supply {self._wanted!r} in {self._root} "
                    f"(there: {self._listing()}); is the fuel gauge's driver loaded?"
                )
            return supply
        for supply in self._supplies():
            if _peek(supply, "type") == "Battery" and _peek(supply, "scope") != "Device":
                return supply
        raise HardwareError(
            f"{SUPPLY_KEY}: no battery in {self._root} (there: {self._listing()}); name the "
            "fuel gauge's power supply, or load its driver (device-tree overlay)"
        )

    def _current(self) -> Path:
        if self._dir.is_dir():
            return self._dir
        if self._wanted is None:
            # Found by type at start: a gauge re-probed after an I2C glitch may come back
            # under another name.
            try:
                self._dir = self._find()
            except HardwareError:
                pass
            else:
                log.info("battery: fuel gauge is now %s", self._dir.name)
                return self._dir
        raise self._gone(self._dir)

    def _supplies(self) -> list[Path]:
        try:
            return sorted(p for p in self._root.iterdir() if p.is_dir())
        except OSError:
            return []

    def _listing(self) -> str:
        return ", ".join(p.name for p in self._supplies()) or "nothing"

    # --- values -----------------------------------------------------------------------

    def _percent(self, supply: Path) -> float:
        capacity = self._int(supply, "capacity")
        if capacity is not None:
            if not 0 <= capacity <= 100:
                raise self._garbage(supply, "capacity", str(capacity))
            return float(capacity)
        voltage = self._int(supply, "voltage_now")
        if voltage is not None:
            for low, high in (
                ("voltage_min_design", "voltage_max_design"),
                ("voltage_min", "voltage_max"),
            ):
                empty, full = self._int(supply, low), self._int(supply, high)
                if empty is not None and full is not None:
                    if not 0 < empty < full:
                        raise self._garbage(supply, f"{low}/{high}", f"{empty}/{full}")
                    return estimate_percent(voltage, empty, full)
        raise HardwareError(
            f"{SUPPLY_KEY}: power supply {supply.name} shows no charge: neither capacity nor "
            "voltage_now with voltage_min_design/voltage_max_design; is it the fuel gauge?"
        )

    def _external_power(self, battery: Path) -> bool:
        if self._charger is not None:
            charger = self._root / self._charger
            state = self._int(charger, "online", key=CHARGER_KEY, part="charger")
            if state is None:
                raise HardwareError(
                    f"{CHARGER_KEY}: power supply {self._charger} has no 'online' attribute"
                )
            return state != 0
        for supply in self._supplies():
            # Other supplies are only a hint: one that misbehaves must not cost the reading.
            if supply.name == battery.name or _peek(supply, "type") in (None, "Battery"):
                continue
            online = _peek(supply, "online")
            if online is not None and _INT_RE.fullmatch(online) and int(online) != 0:
                return True
        return False

    def _int(
        self, supply: Path, attr: str, *, key: str = SUPPLY_KEY, part: str = "fuel gauge"
    ) -> int | None:
        text = self._text(supply, attr, key=key, part=part)
        if text is None:
            return None
        if not _INT_RE.fullmatch(text):
            raise self._garbage(supply, attr, text, key=key, part=part)
        return int(text)

    def _text(
        self, supply: Path, attr: str, *, key: str = SUPPLY_KEY, part: str = "fuel gauge"
    ) -> str | None:
        """An attribute's value; None if the driver does not provide it."""
        try:
            raw = _read_bytes(supply / attr)
        except FileNotFoundError:
            if supply.is_dir():
                return None
            raise self._gone(supply, key=key, part=part) from None
        except OSError as exc:
            if exc.errno in _GONE:
                raise self._gone(supply, key=key, part=part) from None
            raise HardwareError(
                f"{key}: {part} {supply.name} does not answer: reading {attr} failed "
                f"({exc.strerror or exc})"
            ) from None
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise self._garbage(supply, attr, repr(raw[:32]), key=key, part=part) from None
        if not text or not text.isprintable():
            raise self._garbage(supply, attr, repr(text[:32]), key=key, part=part)
        return text

    def _gone(
        self, supply: Path, *, key: str = SUPPLY_KEY, part: str = "fuel gauge"
    ) -> HardwareError:
        return HardwareError(
            f"{key}: {part} {supply.name} is gone from {self._root} "
            "(unplugged, or its driver was unbound)"
        )

    def _garbage(
        self,
        supply: Path,
        attr: str,
        shown: str,
        *,
        key: str = SUPPLY_KEY,
        part: str = "fuel gauge",
    ) -> HardwareError:
        return HardwareError(
            f"{key}: {part} {supply.name} shows {attr} = {shown[:40]}, which is not a reading"
        )


def _peek(supply: Path, attr: str) -> str | None:
    """An attribute read for a hint (which supply is which): any problem is just None."""
    try:
        return _read_bytes(supply / attr).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
