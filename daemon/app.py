"""Starting and stopping the device process: keys, recovery, signals, the run itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import logging
import signal
from collections.abc import Callable

from bodycam.daemon.config import Config
from bodycam.daemon.device import Device, DeviceKeys
from bodycam.daemon.evidence.keys import load_device_key, load_force_public_key
from bodycam.daemon.evidence.recovery import RecoveryReport, recover_clips
from bodycam.daemon.notify import SystemdNotifier
from bodycam.daemon.status import DeviceStatus
from bodycam.drivers.interfaces import Board

log = logging.getLogger(__name__)


def firmware_version() -> str:
    try:
        return importlib.metadata.version("bodycam")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def load_keys(config: Config) -> DeviceKeys:
    """The device's signing key and the force's public key (EvidenceError if missing)."""
    return DeviceKeys(
        signing_key=load_device_key(config.key_path(config.keys.device_key)),
        force_key=load_force_public_key(config.key_path(config.keys.force_public_key)),
    )


def recover(config: Config, keys: DeviceKeys) -> list[RecoveryReport]:
    """Seal what a power cut left behind, before anything records."""
    config.clips_dir.mkdir(parents=True, exist_ok=True)
    reports = recover_clips(
        config.clips_dir, signing_key=keys.signing_key, now_utc=dt.datetime.now(dt.UTC)
    )
    for report in reports:
        log.warning(
            "recovered clip %s: %d segment(s) recovered, %d discarded%s",
            report.clip_id or report.directory.name,
            len(report.recovered_segments),
            len(report.discarded),
            "".join(f"; {p}" for p in report.problems),
        )
    return reports


def make_device(
    config: Config,
    board: Board,
    keys: DeviceKeys,
    *,
    notifier: SystemdNotifier | None = None,
    on_change: Callable[[DeviceStatus], None] | None = None,
) -> Device:
    return Device(
        config,
        board,
        keys,
        firmware_version=firmware_version(),
        notifier=notifier,
        on_change=on_change,
    )


async def serve(
    device: Device, *, stop: asyncio.Event | None = None, handle_signals: bool = True
) -> None:
    """Run the camera until SIGTERM/SIGINT (or ``stop``); every clip is sealed on the way out."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await device.run(stop)
    finally:
        # A second SIGTERM while the last clip is sealed must not kill the process: keep
        # a handler (not the default action) until the loop itself closes.
        for signum in signals:
            loop.add_signal_handler(signum, log.info, "stopping already")
