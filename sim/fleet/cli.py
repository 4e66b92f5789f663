"""``bodycam fleet``: thousands of simulated cameras publishing telemetry to one broker.

A force's device team watches its cameras over MQTT and its back-end team must load-test
with a fleet that behaves like the real one; this runs such a fleet (or one shard of it,
``--shard I/N``, so several processes or machines share a 22,000-camera fleet) and shows
what a dashboard subscribed to the broker would see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from bodycam.daemon.config import ConfigError
from bodycam.daemon.telemetry.settings import read_password_file
from bodycam.sim.fleet.scenario import load_fleet_scenario
from bodycam.sim.fleet.shift import Shard, parse_shard

if TYPE_CHECKING:
    # MQTT loads only when the command runs, not whenever ``bodycam`` builds its parser.
    from bodycam.daemon.telemetry.broker import BrokerAddress
    from bodycam.sim.fleet.runner import Fleet, FleetOptions
    from bodycam.sim.fleet.view import FleetSummary

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_PROBE_S = 5.0
_VIEW_RETRY_S = 2.0


class FleetError(Exception):
    """A problem the user can fix; printed as one line."""


def add_fleet_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bodycam fleet``."""
    p = sub.add_parser(
        "fleet", help="simulate a fleet of cameras publishing telemetry to an MQTT broker"
    )
    add_fleet_arguments(p)
    p.set_defaults(func=run_fleet_command)


def add_fleet_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``bodycam fleet`` (also used by ``python -m bodycam.sim.fleet``)."""
    p.add_argument("--cameras", type=int, required=True, help="size of the whole fleet")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", help="mqtt://host[:port] or mqtts://host[:port]")
    where.add_argument(
        "--local-broker", action="store_true", help="start a throwaway local mosquitto"
    )
    p.add_argument(
        "--shard", default="0/1", help="run cameras i with i %% N == I (default 0/1: all)"
    )
    p.add_argument("--scenario", type=Path, help="fleet scenario TOML (default: fleet-day)")
    p.add_argument("--speed", type=float, help="simulated seconds per real second")
    p.add_argument("--duration", type=float, help="stop after this many real seconds")
    p.add_argument("--seed", type=int, default=0, help="shifts are reproducible per seed")
    p.add_argument("--connect-rate", type=float, default=500.0, help="new connections per second")
    p.add_argument("--username", help="broker user name (all cameras)")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--no-view", action="store_true", help="no summary view")
    p.add_argument("--view-every", type=float, default=5.0, help="seconds between summaries")
    p.add_argument("--json", action="store_true", help="print the totals as one JSON line")
    p.add_argument("-v", "--verbose", action="store_true", help="log every camera's failures")


def _options(args: argparse.Namespace, url: str) -> FleetOptions:
    from bodycam.daemon.telemetry.broker import parse_broker_url
    from bodycam.sim.fleet.runner import FleetOptions

    if args.cameras < 1:
        raise FleetError("--cameras must be at least 1")
    if args.speed is not None and args.speed <= 0:
        raise FleetError("--speed must be positive")
    if args.duration is not None and args.duration <= 0:
        raise FleetError("--duration must be positive")
    if args.connect_rate <= 0:
        raise FleetError("--connect-rate must be positive")
    try:
        broker = parse_broker_url(url)
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise FleetError(str(exc)) from None
    password = read_password_file(args.password_file, what="--password-file")
    return FleetOptions(
        cameras=args.cameras,
        broker=broker,
        scenario=load_fleet_scenario(args.scenario),
        shard=shard,
        speed=args.speed,
        duration_s=args.duration,
        seed=args.seed,
        connect_rate=args.connect_rate,
        username=args.username,
        password=password,
    )


async def probe(broker: BrokerAddress) -> None:
    """Fail early, with one line, when nothing accepts connections at ``broker``."""
    try:
        async with asyncio.timeout(_PROBE_S):
            _reader, writer = await asyncio.open_connection(broker.host, broker.port)
    except TimeoutError:
        raise FleetError(f"broker {broker.url} did not answer within {_PROBE_S:g} s") from None
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc.strerror
        raise FleetError(f"cannot reach broker {broker.url}: {why or exc}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _view(broker: BrokerAddress, summary: FleetSummary, every_s: float) -> None:
    import aiomqtt

    from bodycam.sim.fleet.view import watch

    while True:
        try:
            await watch(broker, summary, every_s=every_s)
        except aiomqtt.MqttError as exc:
            print(f"view: broker connection lost ({exc}); retrying", file=sys.stderr)
        await asyncio.sleep(_VIEW_RETRY_S)


def _describe(fleet: Fleet, shard: Shard) -> str:
    o = fleet.options
    hours = o.scenario.duration_s / 3600
    minutes = o.scenario.duration_s / fleet.speed / 60
    return (
        f"fleet: {len(fleet.cameras)} of {o.cameras} cameras (shard {shard.index}/"
        f"{shard.count}) -> {o.broker.url}; scenario {o.scenario.name!r}, speed "
        f"{fleet.speed:g}x: {hours:.1f} h of shifts in {minutes:.1f} min, seed {o.seed}"
    )


async def _run(options: FleetOptions, args: argparse.Namespace) -> int:
    from bodycam.sim.fleet.runner import Fleet
    from bodycam.sim.fleet.view import FleetSummary

    await probe(options.broker)
    fleet = Fleet(options)
    print(_describe(fleet, options.shard), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    summary = FleetSummary(speed=fleet.speed)
    viewer = None
    if not args.no_view:
        viewer = asyncio.create_task(_view(options.broker, summary, args.view_every), name="view")
    try:
        totals = await fleet.run(stop=stop)
    finally:
        if viewer is not None:
            viewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await viewer
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if not args.no_view:
        print(summary.snapshot().line())
    for line in totals.lines():
        print(line)
    if args.json:
        print(json.dumps(asdict(totals), sort_keys=True))
    if totals.published == 0:
        print("bodycam fleet: error: nothing was published (see the failures above)")
        return EXIT_FAILED
    return EXIT_OK


def run_fleet_command(args: argparse.Namespace) -> int:
    """Run ``bodycam fleet``; every user error is one line on stderr, never a traceback."""
    from bodycam.sim.fleet.runner import raise_fd_limit

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Each camera's telemetry logs its own first failure: 22,000 copies of one line when
        # the broker goes away. The totals count failures by kind instead.
        logging.getLogger("bodycam.daemon.telemetry").setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            per_process = len(parse_shard(args.shard).indices(max(args.cameras, 0)))
            # Before the broker starts: a local mosquitto gets this process's hard limit, and
            # it holds every camera's connection, not only this shard's.
            if args.local_broker:
                raise_fd_limit(args.cameras, "a local mosquitto has the same limit: use --broker")
            else:
                raise_fd_limit(per_process)
            url = args.broker
            if args.local_broker:
                from bodycam.sim.broker import LocalMosquitto, MosquittoError

                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                broker = LocalMosquitto(workdir / "mosquitto")
                try:
                    broker.start()
                except MosquittoError as exc:
                    raise FleetError(str(exc).splitlines()[0]) from None
                stack.callback(broker.stop)
                url = broker.url
            options = _options(args, url)
            return asyncio.run(_run(options, args))
    except (FleetError, ConfigError, OSError, ValueError) as exc:
        print(f"bodycam fleet: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, FleetError | ConfigError | ValueError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
