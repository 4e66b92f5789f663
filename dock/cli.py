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
import sys
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
from bodycam.dock.store import DockStore
from bodycam.dock.telemetry import DockTelemetry
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.serial_link import open_serial

_log = logging.getLogger(__name__)

_REOPEN_S = 1.0


def add_dock_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dock", help="run the reference dock: authenticate cameras, offload clips")
    p.add_argument(
        "--port", action="append", default=[], help="a bay's serial port (repeat for more bays)"
    )
    p.add_argument(
        "--watch", action="store_true", help="find docked cameras by USB id (needs libusb)"
    )
    p.add_argument("--store", type=Path, required=True, help="the dock's evidence store")
    p.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="directory with dock.key and dock.cert (bodycam keygen dock)",
    )
    p.add_argument("--policy", type=Path, help="directory with a signed policy.json/policy.sig")
    p.add_argument("--retention-days", type=float, default=31.0)
    p.add_argument("--once", action="store_true", help="serve one session per bay, then exit")
    p.add_argument(
        "--broker", help="publish bays, offloads and failures to this MQTT broker (mqtt[s]://)"
    )
    p.add_argument("--broker-username", help="MQTT user name (default: none)")
    p.add_argument("--broker-password-file", type=Path, help="file holding the MQTT password")
    p.add_argument("--broker-ca", type=Path, help="TLS: the broker's CA certificate")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run_dock_command)


def print_report(report: DockReport) -> None:
    who = report.device_id or "unknown camera"
    if report.error and not report.authenticated:
        print(f"{report.port}: {who}: refused: {report.error}")
        return
    offset = (
        f", clock corrected by {report.clock_offset_s:+.3f} s"
        if report.clock_offset_s is not None
        else ""
    )
    print(
        f"{report.port}: {who}: {len(report.committed)} clip(s) committed, "
        f"{len(report.rejected)} rejected, {report.bytes_received} bytes received"
        f" ({report.bytes_resumed} resumed){offset}"
    )
    for clip in report.clips:
        detail = f": {'; '.join(clip.problems)}" if clip.problems else ""
        print(f"  {clip.status.upper():9} {clip.name}{detail}")
    if report.error:
        print(f"  interrupted: {report.error} (the rest stays on the camera for next time)")


async def _wait_until_gone(link: ByteLink) -> None:
    with contextlib.suppress(LinkClosedError):
        while True:
            await link.read()


async def run_bay(
    port: str, agent: DockAgent, *, once: bool, telemetry: DockTelemetry | None = None
) -> list[DockReport]:
    """Serve the cameras that dock on ``port``; with ``once``, just the first one."""
    reports: list[DockReport] = []
    if telemetry is not None:
        telemetry.bay_open(port)
        agent.on_progress = telemetry.progress_for(port)
    while True:
        try:
            link = open_serial(port)
        except LinkClosedError as exc:
            if once:
                raise
            _log.debug("%s", exc)
            await asyncio.sleep(_REOPEN_S)
            continue
        try:
            if telemetry is not None:
                telemetry.camera_seated(port)
            report = await agent.serve(link)
            reports.append(report)
            print_report(report)
            if telemetry is not None:
                telemetry.finished(port, report)
            if once:
                return reports
            await _wait_until_gone(link)
            if telemetry is not None:
                telemetry.camera_left(port)
        finally:
            link.close()


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
        queue_path=args.store / "telemetry.sqlite",
    )
    topics = DockTopics(dock_id)
    return DockTelemetry(Telemetry(settings, topics), topics)


async def _serve(args: argparse.Namespace) -> int:
    store = DockStore(args.store, retention_days=args.retention_days)
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
                bays[path] = asyncio.create_task(
                    run_bay(path, agent(), once=True, telemetry=telemetry), name=path
                )

        await watch_cameras(on_new)
        return 0
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
    try:
        return asyncio.run(_serve(args))
    except ExceptionGroup as group:
        closed, rest = group.split(LinkClosedError)
        if closed is None or rest is not None:
            raise
        for exc in closed.exceptions:
            print(f"bodycam: error: {exc}", file=sys.stderr)
        return 1
