"""``bodycam dock``: the reference dock, one bay per port, several bays in one process.

Each bay opens its port exclusively (a second agent, or ModemManager, cannot grab it), runs a
session as soon as a camera answers, prints what happened, and then waits for the camera to
leave before serving the next one. ``--watch`` finds cameras by USB id and serial instead of
fixed ports; under systemd, udev starts one ``bodycam-dock@<tty>.service`` per camera
instead (see udev/ and systemd/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from bodycam.daemon.dock.auth import DockIdentity, load_dock_identity
from bodycam.daemon.dock.policy import SignedPolicy, load_signed_policy
from bodycam.daemon.telemetry import (
    DockTopics,
    Telemetry,
    TelemetrySettings,
    parse_broker_url,
)
from bodycam.daemon.telemetry.settings import read_password_file
from bodycam.dock.agent import DockAgent, DockReport
from bodycam.dock.bay import log_task_failure, print_report, run_bay
from bodycam.dock.store import DockStore
from bodycam.dock.telemetry import DockTelemetry

__all__ = ["add_dock_parser", "print_report", "run_bay", "run_dock_command"]

_log = logging.getLogger(__name__)


def add_dock_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dock", help="run the reference dock: authenticate cameras, offload clips")
    p.add_argument(
        "--port", action="append", default=[], help="a bay's serial port (repeat for more bays)"
    )
    p.add_argument(
        "--watch", action="store_true", help="find docked cameras by USB id (needs libusb)"
    )
    p.add_argument(
        "--store",
        type=Path,
        required=True,
        help="the dock's evidence store (made by: bodycam store init --store DIR)",
    )
    p.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="directory with dock.key and dock.cert (bodycam keygen dock)",
    )
    p.add_argument("--policy", type=Path, help="directory with a signed policy.json/policy.sig")
    p.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="keep unflagged clips this long (default: the store's own store.toml, 31 days)",
    )
    p.add_argument("--once", action="store_true", help="serve one session per bay, then exit")
    p.add_argument(
        "--broker", help="publish bays, offloads and failures to this MQTT broker (mqtt[s]://)"
    )
    p.add_argument("--broker-username", help="MQTT user name (default: none)")
    p.add_argument("--broker-password-file", type=Path, help="file holding the MQTT password")
    p.add_argument("--broker-ca", type=Path, help="TLS: the broker's CA certificate")
    p.add_argument(
        "--broker-cert", type=Path, help="TLS: this dock's client certificate (mutual TLS)"
    )
    p.add_argument("--broker-key", type=Path, help="TLS: the client certificate's private key")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run_dock_command)


def _load_policy(directory: Path | None) -> SignedPolicy | None:
    if directory is None:
        return None
    signed = load_signed_policy(directory, None)
    if signed is None:
        raise FileNotFoundError(f"{directory}: no policy.json (bodycam policy sign)")
    return signed


def _dock_telemetry(args: argparse.Namespace, dock_id: str) -> DockTelemetry | None:
    if not args.broker:
        return None
    if (args.broker_cert is None) != (args.broker_key is None):
        raise SystemExit("bodycam dock: --broker-cert and --broker-key go together")
    for option, path in (("--broker-cert", args.broker_cert), ("--broker-key", args.broker_key)):
        if path is not None and not path.is_file():
            raise SystemExit(f"bodycam dock: {option}: {path}: no such file")
    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        raise SystemExit(f"bodycam dock: --broker: {exc}") from None
    settings = TelemetrySettings(
        broker=broker,
        client_id=dock_id,
        username=args.broker_username,
        password=read_password_file(args.broker_password_file, what="--broker-password-file"),
        ca_file=args.broker_ca,
        cert_file=args.broker_cert,
        key_file=args.broker_key,
        queue_path=args.store / "telemetry.sqlite",
    )
    topics = DockTopics(dock_id)
    return DockTelemetry(Telemetry(settings, topics), topics)


async def _serve(args: argparse.Namespace, store: DockStore) -> int:
    identity = load_dock_identity(args.credentials)
    policy = _load_policy(args.policy)
    telemetry = _dock_telemetry(args, identity.dock_id)
    if telemetry is None:
        return await _serve_bays(args, store, identity, policy, None)
    publisher = asyncio.create_task(telemetry.telemetry.run(), name="telemetry")
    try:
        return await _serve_bays(args, store, identity, policy, telemetry)
    finally:
        publisher.cancel()  # publishes online=0 on the way out
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        telemetry.telemetry.close()


async def _serve_bays(
    args: argparse.Namespace,
    store: DockStore,
    identity: DockIdentity,
    policy: SignedPolicy | None,
    telemetry: DockTelemetry | None,
) -> int:
    def agent() -> DockAgent:
        return DockAgent(store, identity, policy=policy)

    print(f"bodycam dock {identity.dock_id}: store {store.root}")
    if args.watch:
        from bodycam.dock.discovery import DockedCamera, watch_cameras

        bays: dict[str, asyncio.Task[list[DockReport]]] = {}

        def on_new(camera: DockedCamera) -> None:
            if camera.tty is None:
                _log.warning("camera %s has no serial port yet", camera.serial)
                return
            path = str(camera.tty)
            if path not in bays or bays[path].done():
                print(f"camera {camera.serial} on {path}")
                task = asyncio.create_task(
                    run_bay(path, agent(), once=True, telemetry=telemetry), name=path
                )
                task.add_done_callback(log_task_failure)
                bays[path] = task

        await watch_cameras(on_new)
        return 0
    # run_bay never raises (each bay's faults end in its own report), so one bay can never
    # cancel the others through the TaskGroup.
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(run_bay(p, agent(), once=args.once, telemetry=telemetry), name=p)
            for p in args.port
        ]
    failed = any(r.error for t in tasks for r in t.result())
    return 1 if failed else 0


def run_dock_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.port and not args.watch:
        raise SystemExit("bodycam dock: give --port PATH (one per bay) or --watch")
    # Never created here: its retention is the force's decision, made once by `bodycam store
    # init`. A mistyped --store fails now (a StoreError, one line from `bodycam`), before any
    # port is opened, instead of quietly making a store with the default retention.
    store = DockStore(args.store, retention_days=args.retention_days, create=False)
    return asyncio.run(_serve(args, store))
