"""Commands for putting bodycam on a device: ``install``, ``provision`` and ``gadget``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bodycam.daemon.config import DEFAULT_CONFIG_PATH, load_config

EXIT_OK = 0


def _cmd_install(args: argparse.Namespace) -> int:
    from bodycam.daemon.install import install

    report = install(
        args.root,
        role=args.role,
        venv=not args.no_venv,
        packages=args.package or None,
        pip_args=args.pip_arg or [],
    )
    for path in report.written:
        print(f"wrote   {path}")
    for path in report.kept:
        print(f"kept    {path} (exists; not overwritten)")
    for path in report.enabled:
        print(f"enabled {path} -> {path.readlink()}")
    for note in report.notes:
        print(f"note: {note}")
    for number, step in enumerate(report.next_steps, start=1):
        print(f"next {number}: {step}")
    return EXIT_OK


def _cmd_provision(args: argparse.Namespace) -> int:
    from bodycam.daemon.provision import provision

    identity = provision(
        args.config,
        device_id=args.device_id,
        force_key=args.force_key,
        authority_key=args.authority_key,
        root=args.root,
        enrol_dir=args.enrol_dir,
        replace_key=args.replace_key,
    )
    made = "created" if identity.key_created else "kept (already provisioned)"
    print(f"camera {identity.device_id}: device key {made}, {identity.device_key_fingerprint}")
    print(f"  force key {identity.force_key_fingerprint}")
    print(f"  authority key {identity.authority_key_fingerprint}")
    if identity.enrol_file is not None:
        # Run as the store's owner on each dock host (docs/hardware.md, "The dock host").
        print(
            "  enrol with each dock host (copy the file there): sudo -u bodycam-dock "
            f"/opt/bodycam/venv/bin/bodycam store enrol --store /var/lib/bodycam-dock "
            f"{identity.enrol_file.name}"
        )
    return EXIT_OK


def _cmd_gadget(args: argparse.Namespace) -> int:
    from bodycam.drivers.usb_gadget import GadgetSpec, setup_gadget, teardown_gadget

    if args.action == "down":
        removed = teardown_gadget(configfs=args.configfs)
        print("USB gadget removed" if removed else "no USB gadget to remove")
        return EXIT_OK
    config = load_config(args.config)
    g = config.gadget
    # The USB serial number is the device id: the dock names the port after it.
    spec = GadgetSpec(
        serial=config.device.id,
        vendor_id=g.vendor_id,
        product_id=g.product_id,
        manufacturer=g.manufacturer,
        product=g.product,
    )
    bound = setup_gadget(spec, configfs=args.configfs, udc=g.udc or None, udc_class=args.udc_class)
    print(f"USB gadget {spec.name}: CDC-ACM, serial {spec.serial}, bound to {bound}")
    return EXIT_OK


def add_deploy_parsers(sub: Any) -> None:
    """Add ``install``, ``provision`` and ``gadget`` to the ``bodycam`` command."""
    p = sub.add_parser("install", help="lay out a camera or dock root filesystem (images)")
    p.add_argument("--root", type=Path, required=True, help="the root to fill ('/' in a chroot)")
    p.add_argument("--role", choices=["camera", "dock"], default="camera")
    p.add_argument("--no-venv", action="store_true", help="skip /opt/bodycam/venv")
    p.add_argument(
        "--package",
        action="append",
        help="what to pip install into the venv (a wheel path or requirement; repeatable; "
        "default: this source checkout)",
    )
    p.add_argument(
        "--pip-arg", action="append", help="extra pip argument, e.g. --pip-arg=--no-index"
    )
    p.set_defaults(func=_cmd_install)

    p = sub.add_parser("provision", help="create this camera's key and identity")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.add_argument("--root", type=Path, default=Path("/"), help="a mounted card's root")
    p.add_argument("--device-id", required=True, help="e.g. the force's asset number")
    p.add_argument("--force-key", type=Path, required=True, help="the force's force.pub")
    p.add_argument(
        "--authority-key", type=Path, required=True, help="the force authority's authority.pub"
    )
    p.add_argument("--enrol-dir", type=Path, help="write <device-id>.pub here for the docks")
    p.add_argument("--replace-key", action="store_true", help="make a new device key (re-enrol!)")
    p.set_defaults(func=_cmd_provision)

    p = sub.add_parser("gadget", help="set up or remove the USB gadget (root; systemd runs it)")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.add_argument("--configfs", type=Path, default=Path("/sys/kernel/config"))
    p.add_argument("--udc-class", type=Path, default=Path("/sys/class/udc"))
    p.set_defaults(func=_cmd_gadget)
