"""``bodycam sim``: a whole shift on the simulated board, then every clip verified.

Everything is real but the hardware: H.264 from the simulated sensor, gpiozero drivers on
mock pins, fsynced encrypted segments, signed manifests. The run ends by verifying every
clip with the camera's public key and exporting each to a playable file with the force's
private key (which, on a real deployment, only the back office holds).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from bodycam.daemon.app import load_keys, make_device, recover, serve
from bodycam.daemon.config import Config, load_config
from bodycam.daemon.evidence.export import export_clip
from bodycam.daemon.evidence.keys import (
    generate_device_key,
    generate_force_keypair,
    load_device_public_key,
    load_force_private_key,
)
from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.evidence.verify import verify_path
from bodycam.dock.agent import DockReport
from bodycam.dock.cli import print_report
from bodycam.sim.actions import ActionError, perform
from bodycam.sim.board import SimBoard, build_sim_board
from bodycam.sim.docking import DockSetup, dock_and_offload, prepare_authority, prepare_dock
from bodycam.sim.scenario import Scenario, load_scenario
from bodycam.sim.view import LiveView

log = logging.getLogger(__name__)


class _TailHandler(logging.Handler):
    def __init__(self, view: LiveView) -> None:
        super().__init__(logging.INFO)
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        self._view.log_tail.append(f"{record.levelname.lower()}: {record.getMessage()}")


def prepare_keys(out: Path, config: Config) -> Path:
    """A force key pair (the back office's) and a device key, made once per output dir."""
    force_dir = out / "force"
    if not (force_dir / "force.key").exists():
        force_dir.mkdir(parents=True, exist_ok=True)
        generate_force_keypair(force_dir / "force.key", force_dir / "force.pub")
    prepare_authority(force_dir, config)
    device_key = config.key_path(config.keys.device_key)
    if not device_key.exists():
        device_key.parent.mkdir(parents=True, exist_ok=True)
        generate_device_key(device_key)
    force_pub = config.key_path(config.keys.force_public_key)
    if not force_pub.exists():
        force_pub.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(force_dir / "force.pub", force_pub)
    return force_dir


def build_config(args: argparse.Namespace, scenario: Scenario, out: Path) -> Config:
    base = load_config(args.config)
    overrides: dict[str, dict[str, Any]] = {
        section: dict(values) for section, values in scenario.config.items()
    }
    overrides.setdefault("device", {}).update(
        state_dir=str(out / "camera"), runtime_dir=str(out / "camera" / "run")
    )
    sim = overrides.setdefault("sim", {})
    sim["speed"] = args.speed or scenario.speed or base.sim.speed
    if args.control_socket is not None:
        sim["control_socket"] = str(args.control_socket)
    if args.resolution is not None:
        width, height = args.resolution
        overrides.setdefault("video", {}).update(width=width, height=height)
    if args.broker:
        overrides.setdefault("telemetry", {})["broker"] = args.broker
    return base.with_overrides(**overrides)


async def play_scenario(
    board: SimBoard,
    scenario: Scenario,
    stop: asyncio.Event,
    *,
    dock: DockSetup | None = None,
    view: LiveView | None = None,
) -> DockReport | None:
    """Play the steps; then (with ``dock``) end the shift in the dock; then stop the camera."""
    clock = board.sim_clock
    t0 = clock.monotonic()
    for step in scenario.steps:
        await clock.sleep(t0 + step.at - clock.monotonic())
        try:
            await perform(board, step.action)
        except ActionError as exc:
            log.error("scenario step at %.1f s: %s", step.at, exc)
    await clock.sleep(t0 + scenario.end - clock.monotonic())
    report = None
    if dock is not None:
        log.info("end of shift: the camera goes into the dock")
        report = await dock_and_offload(
            board, dock, on_progress=view.dock_progress if view is not None else None
        )
        if view is not None:
            view.dock_report = report
        await clock.sleep(1.0)
    stop.set()
    return report


async def _run(
    config: Config, scenario: Scenario, live: bool, dock: DockSetup | None
) -> DockReport | None:
    keys = load_keys(config)
    recover(config, keys)
    board = build_sim_board(config)
    view = LiveView(board, title=scenario.name, live=live)
    tail = _TailHandler(view)
    logging.getLogger().addHandler(tail)
    device = make_device(config, board, keys)
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(serve(device, stop=stop), name="device")
            script = tg.create_task(
                play_scenario(board, scenario, stop, dock=dock, view=view), name="scenario"
            )
            drawer = tg.create_task(view.run(device.status), name="view")
            await running
            drawer.cancel()
            if not script.done():
                script.cancel()
        view.draw(device.status)
    finally:
        logging.getLogger().removeHandler(tail)
        board.close()
    return None if script.cancelled() else script.result()


def run_sim_command(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = (args.out or Path("sim-output") / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(args, scenario, out)
    force_dir = prepare_keys(out, config)
    dock = None if args.no_dock else prepare_dock(out, config, force_dir / "authority.key")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=out / "sim.log",
    )
    live = sys.stdout.isatty() and not args.no_view
    print(f"bodycam sim: {scenario.name!r} at x{config.sim.speed:g}; output in {out}")
    dock_report = asyncio.run(_run(config, scenario, live, dock))
    if dock is None:
        return report(config, config.clips_dir, out, force_dir)
    if dock_report is None:
        print("the shift ended before the camera reached the dock")
        return 1
    print()
    print_report(dock_report)
    left = list_clips(config.clips_dir)
    print(f"camera card: {len(left)} clip(s) left (only verified, committed clips are deleted)")
    clips_dir = dock.store_dir / "clips" / config.device.id
    if not clips_dir.is_dir():
        print("the dock stored no clips")
        return 1 if dock_report.error or left else 0
    code = report(config, clips_dir, out, force_dir)
    return 1 if dock_report.error or dock_report.rejected else code


def report(config: Config, clips_dir: Path, out: Path, force_dir: Path) -> int:
    device_pub = config.key_path(config.keys.device_key).with_suffix(".pub")
    verdicts = verify_path(clips_dir, device_key=load_device_public_key(device_pub))
    exported = out / "exported"
    exported.mkdir(exist_ok=True)
    force_key = load_force_private_key(force_dir / "force.key")
    failures = 0
    print(f"\n{len(verdicts)} clip(s) in {clips_dir}")
    for v in verdicts:
        name = v.clip_id or v.directory.name
        if not v.ok:
            failures += 1
            print(f"  BAD {v.directory.name}: {'; '.join(v.problems)}")
            continue
        result = export_clip(v.directory, force_key, exported / f"{v.directory.name}.ts")
        print(
            f"  OK  {v.directory.name}: {v.segments} segments verified (signature, hashes, "
            f"chain); exported {result.frames} frames to {result.path.name}"
        )
        log.info("clip %s verified and exported", name)
    print(f"verify again:  bodycam verify {clips_dir} --device-key {device_pub}")
    print(f"exports (back office view, decrypted with {force_dir / 'force.key'}): {exported}")
    return 0 if failures == 0 else 1
