"""The ``bodycam`` command: daemon, sim, verify, export, keygen.

Every error a user can cause (a bad config, a missing key, a tampered clip, a full disk)
ends as one clear line on stderr and a non-zero exit, never a traceback; ``--debug`` shows
the traceback for developers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bodycam.daemon.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from bodycam.daemon.dock.policy import PolicyError
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.drivers.interfaces import HardwareError

log = logging.getLogger("bodycam")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70


def _setup_logging(verbose: bool, *, stream: object = None) -> None:
    # Under systemd the journal adds its own timestamps.
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journal
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)


def _cmd_daemon(args: argparse.Namespace) -> int:
    from bodycam.daemon.app import load_keys, make_device, recover, serve
    from bodycam.daemon.notify import SystemdNotifier
    from bodycam.drivers.backends import load_board

    _setup_logging(args.verbose)
    path = (
        args.config
        if args.config is not None
        else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    )
    config = load_config(path)
    keys = load_keys(config)
    if args.check:
        # What an engineer runs after editing the config: nothing starts, nothing changes.
        print(
            f"config OK: camera {config.device.id} on the {config.device.board} board, "
            f"state in {config.device.state_dir}, keys loaded"
            + ("" if keys.authority else " (no authority key: no dock can take footage off)")
        )
        return EXIT_OK
    recover(config, keys)
    board = load_board(config)
    notifier = SystemdNotifier.from_environment()
    try:
        asyncio.run(serve(make_device(config, board, keys, notifier=notifier)))
        # Everything is sealed; only releasing the pins is left. Do not die half-way.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
    finally:
        board.close()
        if notifier is not None:
            notifier.close()
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from bodycam.daemon.evidence.keys import load_device_public_key
    from bodycam.daemon.evidence.verify import verify_path

    device_key = load_device_public_key(args.device_key) if args.device_key else None
    verdicts = verify_path(args.path, device_key=device_key)
    bad = 0
    for v in verdicts:
        name = v.clip_id or v.directory.name
        key = "pinned key" if v.pinned else "key recorded in the manifest (not pinned)"
        if v.ok:
            extra = f", {v.recovered_segments} recovered" if v.recovered_segments else ""
            signer = f"signed by {v.signer_fingerprint} ({key})"
            print(f"OK   {name}: {v.segments} segment(s){extra}; {signer}")
        else:
            bad += 1
            where = f" first bad segment: {v.first_bad_segment};" if v.first_bad_segment else ""
            print(f"BAD  {name}:{where} {'; '.join(v.problems)}")
    print(f"{len(verdicts) - bad} of {len(verdicts)} clip(s) verified")
    return EXIT_OK if bad == 0 else EXIT_FAILED


def _cmd_export(args: argparse.Namespace) -> int:
    from bodycam.daemon.evidence.export import export_clip
    from bodycam.daemon.evidence.keys import load_device_public_key, load_force_private_key

    force_key = load_force_private_key(args.force_key)
    device_key = load_device_public_key(args.device_key) if args.device_key else None
    result = export_clip(args.clip, force_key, args.output, device_key=device_key)
    print(f"exported {result.segments} segment(s), {result.bytes} bytes to {result.path}")
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    from bodycam.daemon.evidence.keys import (
        fingerprint,
        generate_device_key,
        generate_force_keypair,
    )

    if args.kind == "device":
        key = generate_device_key(args.path)
        print(
            f"device key {args.path} (public: {args.path.with_suffix('.pub')}), "
            f"fingerprint {fingerprint(key.public_key())}"
        )
    elif args.kind == "authority":
        key = generate_device_key(args.path / "authority.key")
        print(
            f"force authority key in {args.path}: authority.key (keep offline: it certifies "
            f"docks and signs policies) and authority.pub (for every camera), "
            f"fingerprint {fingerprint(key.public_key())}"
        )
    elif args.kind == "dock":
        from bodycam.daemon.dock.auth import create_dock_identity

        if args.authority is None or args.dock_id is None:
            raise ConfigError("keygen dock needs --authority KEY and --dock-id ID")
        cert = create_dock_identity(args.path, args.dock_id, args.authority, days=args.days)
        print(
            f"dock {cert.dock_id}: {args.path}/dock.key and dock.cert, valid for {args.days:g} days"
        )
    else:
        args.path.mkdir(parents=True, exist_ok=True)
        generate_force_keypair(args.path / "force.key", args.path / "force.pub")
        print(
            f"force key pair in {args.path}: force.key (keep offline) and force.pub (for cameras)"
        )
    return EXIT_OK


def _cmd_policy(args: argparse.Namespace) -> int:
    from bodycam.daemon.dock.policy import policy_from_toml, save_signed_policy, sign_policy
    from bodycam.daemon.evidence.keys import load_device_key

    policy = policy_from_toml(args.source)
    signed = sign_policy(load_device_key(args.authority, what="authority private key"), policy)
    save_signed_policy(args.output, signed)
    print(f"policy {policy.serial} signed: {args.output}/policy.json and policy.sig")
    return EXIT_OK


def _cmd_sim(args: argparse.Namespace) -> int:
    from bodycam.sim.run import run_sim_command

    return run_sim_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bodycam", description="Body-worn camera firmware: daemon, simulator and tools."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("daemon", help="run the camera (the device process)")
    p.add_argument("--config", type=Path, help=f"TOML config (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--check", action="store_true", help="check the config and keys, then exit (no camera)"
    )
    p.set_defaults(func=_cmd_daemon)

    from bodycam.sim.cli_args import add_sim_arguments

    p = sub.add_parser("sim", help="run a shift on the simulated board (no hardware needed)")
    add_sim_arguments(p)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("verify", help="check hashes, chain and signature of clips")
    p.add_argument("path", type=Path, help="a clip directory, a clips directory or a state dir")
    p.add_argument("--device-key", type=Path, help="the camera's public key (.pub) to pin")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("export", help="decrypt a verified clip into a playable file")
    p.add_argument("clip", type=Path, help="the clip directory")
    p.add_argument("--force-key", type=Path, required=True, help="the force's private key")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .ts or .mp4")
    p.add_argument("--device-key", type=Path, help="the camera's public key (.pub) to pin")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("keygen", help="create device, force, authority or dock keys")
    p.add_argument("kind", choices=["device", "force", "authority", "dock"])
    p.add_argument("path", type=Path, help="device: key file to create; others: a directory")
    p.add_argument("--authority", type=Path, help="dock: the force authority's private key")
    p.add_argument("--dock-id", help="dock: the name its certificate carries")
    p.add_argument("--days", type=float, default=365.0, help="dock: certificate lifetime")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("policy", help="sign a force policy for docks to push to cameras")
    p.add_argument("action", choices=["sign"])
    p.add_argument("source", type=Path, help="the policy as TOML")
    p.add_argument("--authority", type=Path, required=True, help="the authority's private key")
    p.add_argument("-o", "--output", type=Path, required=True, help="directory to write it to")
    p.set_defaults(func=_cmd_policy)

    from bodycam.dock.cli import add_dock_parser
    from bodycam.dock.store_cli import add_store_parser

    add_dock_parser(sub)
    add_store_parser(sub)
    from bodycam.daemon.deploy_cli import add_deploy_parsers
    from bodycam.sim.fleet.cli import add_fleet_parser

    add_deploy_parsers(sub)
    add_fleet_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, EvidenceError, HardwareError, PolicyError) as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, EvidenceError) else EXIT_USAGE
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"bodycam: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"bodycam: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main())
