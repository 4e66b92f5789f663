"""The camera's clock on a real board: the kernel's clocks plus the dock's correction.

A Pi without a battery-backed RTC boots with the time ``fake-hwclock`` saved at the last
shutdown: hours or days wrong. The dock knows the right time and sends it at docking. The
daemon does not set the system clock with it (that needs ``CAP_SYS_TIME``, and the unit runs
with no capabilities and ``ProtectClock=yes``); it keeps the correction as an offset over the
system clock, in the state directory, tagged with the kernel's boot id:

* within one boot (daemon restarts included) the offset stays valid, so evidence timestamps
  are the dock's time plus the drift since docking;
* after a reboot the system clock may have jumped back, so the offset is dropped and the
  clock counts as "not set" until the next docking, unless the system clock is itself
  synchronised (``systemd-timesyncd`` marks that with ``/run/systemd/timesync/synchronized``,
  as on a Pi 5 whose RTC has a battery, or any camera with a network time source).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path

from bodycam.drivers.interfaces import HardwareError

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def _read_boot_id(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


class SystemClock:
    """Implements ``Clock`` over CLOCK_MONOTONIC and CLOCK_REALTIME plus a stored offset.

    Args:
        offset_file: Where the dock's correction is kept (``<state_dir>/clock.json``).
        boot_id_path: The kernel's boot id (a test points it at its own file).
        synchronized_flag: The file whose presence says the system clock is synchronised.
    """

    def __init__(
        self,
        offset_file: Path,
        *,
        boot_id_path: Path = BOOT_ID_PATH,
        synchronized_flag: Path = TIMESYNC_FLAG,
    ) -> None:
        self._offset_file = offset_file
        self._boot_id = _read_boot_id(boot_id_path)
        self._synchronized_flag = synchronized_flag
        self._offset_s: float | None = self._load_offset()

    def _load_offset(self) -> float | None:
        try:
            data = json.loads(self._offset_file.read_text(encoding="utf-8"))
            boot_id, offset = data["boot_id"], float(data["offset_s"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("clock: ignoring %s: %s", self._offset_file, exc)
            return None
        if not self._boot_id or boot_id != self._boot_id:
            log.info("clock: the dock's correction was from another boot; waiting for a dock")
            return None
        return offset

    def monotonic(self) -> float:
        return time.monotonic()

    def utc_now(self) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        return now + dt.timedelta(seconds=self._offset_s or 0.0)

    def is_set(self) -> bool:
        return self._offset_s is not None or self._synchronized_flag.exists()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def set_utc(self, utc: dt.datetime) -> float:
        """Take the dock's time: store the offset (fsynced), return the correction applied.

        Raises:
            HardwareError: The offset cannot be stored (it is then not applied either, so
                the recorded timestamps never depend on a correction that a restart loses).
        """
        correction = (utc - self.utc_now()).total_seconds()
        offset = (utc - dt.datetime.now(dt.UTC)).total_seconds()
        record = json.dumps({"boot_id": self._boot_id, "offset_s": offset})
        tmp = self._offset_file.with_name(self._offset_file.name + ".tmp")
        try:
            self._offset_file.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self._offset_file)
        except OSError as exc:
            raise HardwareError(f"clock: cannot store the dock's time in {tmp}: {exc}") from exc
        self._offset_s = offset
        return correction
