"""Polling the battery, the card and the clock, turned into state-machine events."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bodycam.daemon import state_machine as sm
from bodycam.daemon.config import BatterySection, StorageSection
from bodycam.drivers.interfaces import HardwareError

if TYPE_CHECKING:
    from bodycam.daemon.device import Device

log = logging.getLogger(__name__)


async def watch_battery(device: Device, cfg: BatterySection) -> None:
    last: tuple[float, bool] | None = None
    while True:
        try:
            reading = await asyncio.to_thread(device.board.battery.read)
        except HardwareError as exc:
            device.report_fault("battery", str(exc))
        except OSError as exc:
            device.report_fault("battery", f"battery: cannot read the fuel gauge: {exc}")
        else:
            device.report_fault("battery", None)
            device.status.battery_percent = reading.percent
            device.status.charging = reading.charging
            current = (reading.percent, reading.charging)
            if current != last:
                last = current
                device.post(
                    sm.BatteryChanged(device.clock.monotonic(), reading.percent, reading.charging)
                )
        await device.clock.sleep(cfg.poll_s)


async def watch_storage(device: Device, cfg: StorageSection) -> None:
    reserve = int(cfg.reserve_mb * 1024 * 1024)
    last_full: bool | None = None
    while True:
        try:
            usage = await asyncio.to_thread(device.board.storage.usage)
        except OSError as exc:
            log.warning("storage: cannot read free space: %s", exc)
        else:
            device.status.storage_free_bytes = usage.free_bytes
            device.status.storage_total_bytes = usage.total_bytes
            full = usage.free_bytes <= reserve
            if full != last_full:
                last_full = full
                device.post(sm.StorageChanged(device.clock.monotonic(), full))
        await device.clock.sleep(cfg.poll_s)


async def watch_clock(device: Device) -> None:
    last = device.clock.is_set()
    while True:
        await device.clock.sleep(5.0)
        now_set = device.clock.is_set()
        device.status.clock_set = now_set
        if now_set != last:
            last = now_set
            device.post(sm.ClockChanged(device.clock.monotonic(), now_set))


# How often the parts that report their own faults are asked; a fault is a warning to the
# officer, so a few seconds of delay is fine, and the checks are cheap attribute reads.
PART_CHECK_S = 2.0


async def watch_parts(device: Device) -> None:
    checks = device.board.fault_checks
    while True:
        for part, check in checks:
            device.report_fault(part, check())
        await device.clock.sleep(PART_CHECK_S)
