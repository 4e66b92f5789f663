"""Starting and stopping the device process: keys, recovery, signals, the run itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from bodycam.daemon.config import Config
from bodycam.daemon.device import Device, DeviceKeys
from bodycam.daemon.dock.auth import load_authority_public_key
from bodycam.daemon.dock.outbox import finish_deletions
from bodycam.daemon.dock.policy import PolicyError, load_signed_policy
from bodycam.daemon.evidence.keys import load_device_key, load_force_public_key
from bodycam.daemon.evidence.recovery import RecoveryReport, recover_clips
from bodycam.daemon.notify import SystemdNotifier
from bodycam.daemon.status import DeviceStatus
from bodycam.daemon.telemetry.broker import parse_broker_url
from bodycam.daemon.telemetry.publisher import Telemetry
from bodycam.daemon.telemetry.settings import TelemetrySettings, read_password_file
from bodycam.daemon.telemetry.topics import CameraTopics
from bodycam.drivers.interfaces import Board

log = logging.getLogger(__name__)


def firmware_version() -> str:
    try:
        return importlib.metadata.version("bodycam")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def load_keys(config: Config) -> DeviceKeys:
    """The device's signing key, the force's public key (EvidenceError if missing), and the
    force authority's key when provisioned (without it the camera refuses every dock)."""
    authority_path = config.key_path(config.keys.authority_public_key)
    authority = None
    if authority_path.exists():
        authority = load_authority_public_key(authority_path)
    else:
        log.warning(
            "%s (keys.authority_public_key) missing: no dock can authenticate, footage stays "
            "on this camera",
            authority_path,
        )
    return DeviceKeys(
        signing_key=load_device_key(config.key_path(config.keys.device_key)),
        force_key=load_force_public_key(config.key_path(config.keys.force_public_key)),
        authority=authority,
    )


def apply_stored_policy(config: Config, keys: DeviceKeys) -> Config:
    """The config with the force policy a dock pushed earlier laid over it (if any)."""
    try:
        signed = load_signed_policy(config.device.state_dir, keys.authority)
    except PolicyError as exc:
        log.error("stored policy ignored: %s", exc)
        return config
    if signed is None:
        return config
    if keys.authority is None:
        log.error("stored policy ignored: no authority key to check it with")
        return config
    log.info("force policy %d in force", signed.policy.serial)
    return config.with_overrides(**signed.policy.config_overrides(config.device.id))


def recover(config: Config, keys: DeviceKeys) -> list[RecoveryReport]:
    """Seal what a power cut left behind, before anything records."""
    config.clips_dir.mkdir(parents=True, exist_ok=True)
    finish_deletions(config.clips_dir)
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


def build_telemetry(config: Config) -> Telemetry | None:
    """The camera's MQTT publisher when ``telemetry.broker`` is set, else None.

    Events wait in ``<state_dir>/telemetry.sqlite`` while the broker is out of reach, so a
    shift's events survive a restart of the daemon too.

    Raises:
        ConfigError: The password file cannot be read.
    """
    t = config.telemetry
    if not t.broker:
        return None

    def optional(path: Path | None) -> Path | None:
        return None if path is None else config.key_path(path)

    settings = TelemetrySettings(
        broker=parse_broker_url(t.broker),
        client_id=config.device.id,
        username=t.username or None,
        password=read_password_file(optional(t.password_file), what="telemetry.password_file"),
        ca_file=optional(t.ca_file),
        cert_file=optional(t.cert_file),
        key_file=optional(t.key_file),
        keepalive_s=t.keepalive_s,
        state_interval_s=t.state_interval_s,
        queue_path=config.device.state_dir / "telemetry.sqlite",
        queue_max=t.queue_max,
    )
    return Telemetry(settings, CameraTopics(config.device.id))


def make_device(
    config: Config,
    board: Board,
    keys: DeviceKeys,
    *,
    notifier: SystemdNotifier | None = None,
    on_change: Callable[[DeviceStatus], None] | None = None,
) -> Device:
    config = apply_stored_policy(config, keys)
    return Device(
        config,
        board,
        keys,
        firmware_version=firmware_version(),
        notifier=notifier,
        on_change=on_change,
        telemetry=build_telemetry(config),
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
