"""``bodycam store``: create and look after the dock's evidence store.

``init`` creates a store and its ``store.toml``; every other subcommand opens an existing
store (it never creates one: a mistyped ``--store`` must not leave an empty store behind),
prints plain lines a person reads (or, with ``--json`` on ``list`` and ``log``, one JSON
list), and returns 0 or 1. :class:`StoreError` propagates; the ``bodycam`` command prints it
as one line. A subcommand that changes a store runs only as the store's owner, the dock
agent's user (:mod:`~bodycam.dock.store_owner` says why).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bodycam.daemon.evidence.schema import format_utc, parse_utc
from bodycam.dock import store_ops
from bodycam.dock.custody import scan_log
from bodycam.dock.store import (
    CUSTODY_NAME,
    PREFIX_RE,
    DockStore,
    IncomingTransfer,
    StoredClip,
    StoreError,
    check_name,
)
from bodycam.dock.store_config import StoreConfig
from bodycam.dock.store_owner import default_user, require_owner, require_readable

_log = logging.getLogger(__name__)

__all__ = ["add_store_parser", "default_user"]

EXIT_OK, EXIT_FAILED = 0, 1


def _parse_now(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return when.astimezone(dt.UTC)


def _open(args: argparse.Namespace, *, changes: bool) -> DockStore:
    """Open ``--store``; one that ``changes`` it only as the store's owner (the agent's user)."""
    if changes:
        require_owner(args.store, args.store_command)
    else:
        require_readable(args.store, args.store_command)
    override = getattr(args, "retention_days", None)
    return DockStore(args.store, retention_days=override, create=False, read_only=not changes)


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def _short_utc(text: str) -> str:
    return f"{text[:19]}Z"


def _retention_state(clip: StoredClip, now: dt.datetime) -> str:
    if clip.flagged:
        return f"FLAGGED ({clip.flag_reason})"
    assert clip.expires_utc is not None  # unflagged clips always expire
    left = (parse_utc(clip.expires_utc) - now).total_seconds() / 86400
    if left <= 0:
        return "EXPIRED (deleted at the next prune)"
    if left < 1:
        return f"expires in {left * 24:.0f} h"
    return f"expires in {left:.0f} days"


def _age(transfer: IncomingTransfer, now: dt.datetime) -> float:
    return (now - parse_utc(transfer.modified_utc)).total_seconds() / 86400


def _clip_json(clip: StoredClip, store: DockStore, expired: bool) -> dict[str, Any]:
    return {
        "kind": "clip",
        "clip_id": clip.clip_id,
        "device_id": clip.device_id,
        "directory": clip.directory.relative_to(store.root).as_posix(),
        "received_utc": clip.received_utc,
        "expires_utc": clip.expires_utc,
        "expired": expired,
        "committed": clip.committed,
        "flagged": clip.flagged,
        "flag_reason": clip.flag_reason,
        "bytes": clip.bytes,
        "exported": clip.exported,
    }


def _incoming_json(transfer: IncomingTransfer, now: dt.datetime, stale: bool) -> dict[str, Any]:
    return {
        "kind": "incoming",
        "device_id": transfer.device_id,
        "name": transfer.name,
        "bytes": transfer.bytes,
        "modified_utc": transfer.modified_utc,
        "age_days": round(_age(transfer, now), 3),
        "stale": stale,
    }


def _cmd_list(args: argparse.Namespace) -> int:
    store = _open(args, changes=False)
    now = args.now or dt.datetime.now(dt.UTC)
    expired = {(clip.device_id, clip.clip_id) for clip in store.expired(now)}
    shown = [
        clip
        for clip in store.clips()
        if (args.device is None or clip.device_id == args.device)
        and (not args.flagged or clip.flagged)
        and (not args.expired or (clip.device_id, clip.clip_id) in expired)
    ]
    stale = {t.directory for t in store.prune_incoming(now=now, dry_run=True)}
    transfers = [t for t in store.incoming() if args.device in (None, t.device_id)]
    problems = store.audit()
    if args.json:
        print(
            json.dumps(
                [_clip_json(c, store, (c.device_id, c.clip_id) in expired) for c in shown]
                + [_incoming_json(t, now, t.directory in stale) for t in transfers],
                indent=1,
                ensure_ascii=False,
            )
        )
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return EXIT_FAILED if problems else EXIT_OK
    for clip in shown:
        committed = "committed" if clip.committed else "on camera"
        print(
            f"{clip.clip_id[:12]}  {clip.device_id}  {_short_utc(clip.received_utc)}  "
            f"{_size(clip.bytes):>10}  {committed:9}  {_retention_state(clip, now)}"
        )
    if transfers:
        print(
            f"incoming transfers ({len(transfers)}; "
            f"stale after {store.incoming_max_age_days:g} days):"
        )
    for transfer in transfers:
        note = "  STALE (prune removes it)" if transfer.directory in stale else ""
        print(
            f"  {transfer.device_id}  {transfer.name}  {_size(transfer.bytes):>10}  "
            f"{_age_text(_age(transfer, now))}{note}"
        )
    for problem in problems:
        print(f"problem: {problem}")
    flagged = sum(clip.flagged for clip in shown)
    count = f"{len(shown)} clip(s), {flagged} flagged, {_size(sum(c.bytes for c in shown))}"
    if problems:
        print(f"{count}; custody log or store BROKEN ({len(problems)} problem(s) above)")
        return EXIT_FAILED
    print(f"{count}; custody log intact ({len(store.custody.entries())} entries)")
    return EXIT_OK


def _age_text(days: float) -> str:
    if days < 1 / 24:
        return f"{max(days * 1440, 0):.0f} min old"
    if days < 1:
        return f"{days * 24:.0f} h old"
    return f"{days:.1f} days old"


def _cmd_flag(args: argparse.Namespace) -> int:
    store = _open(args, changes=True)
    if args.store_command == "flag":
        clip = store.flag(args.clip, reason=args.reason, by=args.by)
        print(f"flagged {clip.clip_id} ({clip.device_id}): kept beyond retention")
    else:
        clip = store.unflag(args.clip, reason=args.reason, by=args.by)
        print(f"unflagged {clip.clip_id} ({clip.device_id}): expires {clip.expires_utc}")
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    store = _open(args, changes=not args.dry_run)
    now = args.now or dt.datetime.now(dt.UTC)
    transfers = store.prune_incoming(now=now, dry_run=args.dry_run)
    clips = store.prune(now=now, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for clip in clips:
        print(
            f"{verb} {clip.clip_id} ({clip.device_id}, received "
            f"{_short_utc(clip.received_utc)}, {_size(clip.bytes)})"
        )
    freed = _size(sum(clip.bytes for clip in clips))
    print(
        f"{verb} {len(clips)} clip(s), {freed}; retention {store.retention_days:g} days "
        f"at {format_utc(now)}"
    )
    if transfers:
        verb = "would remove" if args.dry_run else "removed"
        for transfer in transfers:
            print(
                f"{verb} stale transfer incoming/{transfer.device_id}/{transfer.name} "
                f"({_size(transfer.bytes)}, last written {_short_utc(transfer.modified_utc)})"
            )
        total = _size(sum(t.bytes for t in transfers))
        print(
            f"{verb} {len(transfers)} stale transfer(s), {total}; "
            f"older than {store.incoming_max_age_days:g} days"
        )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    store = _open(args, changes=True)
    result = store.export(args.clip, force_key=args.force_key, output=args.output, by=args.by)
    print(f"exported {result.segments} segment(s), {result.bytes} bytes to {result.path}")
    return EXIT_OK


def _log_filter(text: str | None) -> tuple[str | None, str]:
    if text is None:
        return None, ""
    device, _, prefix = text.strip().rpartition("/")
    if device:
        check_name(device, "device id")
    if not PREFIX_RE.match(prefix.lower()):
        raise StoreError(f"clip id {text!r}: give 8 to 32 hex digits (or DEVICE/HEX)")
    return device or None, prefix.lower()


def _cmd_log(args: argparse.Namespace) -> int:
    require_readable(args.store, "log")
    path = args.store / CUSTODY_NAME
    if not path.is_file():
        raise StoreError(f"{args.store}: not a dock store (no {CUSTODY_NAME})")
    # Read without opening the store: a broken log is what this command must show.
    scan = scan_log(path)
    device, prefix = _log_filter(args.clip)
    entries = [
        entry
        for entry in scan.entries
        if entry.clip_id.startswith(prefix) and device in (None, entry.device_id)
    ]
    if args.json:
        print(
            json.dumps(
                [{**e.body(), "hash": e.hash} for e in entries], indent=1, ensure_ascii=False
            )
        )
    for entry in [] if args.json else entries:
        print(
            f"{entry.seq:6d}  {entry.utc}  {entry.event:16}  {entry.clip_id[:12] or '-':12}  "
            f"{entry.device_id}  {store_ops.note_summary(entry)}"
        )
    out = sys.stderr if args.json else sys.stdout
    if scan.torn:
        print(
            "note: the last line is incomplete (a power cut); it is dropped at the next open",
            file=out,
        )
    if scan.problems:
        print(f"custody log BROKEN ({len(scan.problems)} problem(s)):", file=out)
        for problem in scan.problems:
            print(f"  {problem}", file=out)
        return EXIT_FAILED
    if not args.json:
        head = scan.entries[-1].hash if scan.entries else "0" * 64
        print(f"custody log intact ({len(scan.entries)} entries, head {head})")
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    config = StoreConfig(
        retention_days=args.retention_days,
        min_free_mib=args.min_free_mib,
        incoming_max_age_days=args.incoming_max_age_days,
    )
    store = DockStore.init(args.store, config)
    print(f"created dock store {store.root}:")
    for part in ("devices", "incoming", "clips", "quarantine"):
        print(f"  {part}/")
    print(f"  {CUSTODY_NAME} (empty custody log)")
    print(
        f"  store.toml: retention_days = {config.retention_days:g}, "
        f"min_free_mib = {config.min_free_mib:g}, "
        f"incoming_max_age_days = {config.incoming_max_age_days:g}"
    )
    print(f"next: bodycam store enrol --store {store.root} <device-id>.pub ...")
    return EXIT_OK


def _cmd_enrol(args: argparse.Namespace) -> int:
    store = _open(args, changes=True)
    for key in args.keys:
        device_id = key.name.removesuffix(".pub")
        registered = store.device_key_path(device_id)
        if registered.exists() and registered.read_bytes() != key.read_bytes() and not args.replace:
            # A new key for a known camera is a re-provisioned camera, or an impostor.
            raise StoreError(
                f"{device_id} is enrolled with another key; check the camera, then --replace"
            )
        store.register_device(device_id, key)
        print(f"enrolled {device_id}: {registered}")
    return EXIT_OK


def add_store_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store`` and its subcommands; each sets ``func`` (returns the exit code)."""
    parser = sub.add_parser(
        "store", help="the dock's evidence store: init, list, flag, prune, export, log, enrol"
    )
    commands = parser.add_subparsers(dest="store_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--store", type=Path, required=True, help="the store directory")
        p.add_argument(
            "--retention-days",
            type=float,
            default=None,
            help="override the store's retention_days (store.toml) for this command",
        )
        return p

    defaults = StoreConfig()
    p = commands.add_parser("init", help="create a new store and its store.toml")
    p.add_argument("--store", type=Path, required=True, help="the store directory to create")
    for option, key, text in (
        ("--retention-days", "retention_days", "days an unflagged clip is kept"),
        ("--min-free-mib", "min_free_mib", "MiB always left free on the file system"),
        (
            "--incoming-max-age-days",
            "incoming_max_age_days",
            "days before prune removes a stale transfer",
        ),
    ):
        default = getattr(defaults, key)
        p.add_argument(option, type=float, default=default, help=f"{text} (default {default:g})")
    p.set_defaults(func=_cmd_init)

    def clip_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("clip", help="clip id, or a unique prefix of at least 8 hex digits")

    def by_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", default=default_user(), help="who does it (default: login name)")

    now_help = "the time to judge retention at (ISO 8601 with zone; default now)"
    p = command("list", "list stored clips and incoming transfers; check the custody log")
    p.add_argument("--device", help="only this camera's clips")
    p.add_argument("--flagged", action="store_true", help="only clips flagged as evidence")
    p.add_argument("--expired", action="store_true", help="only clips past retention")
    p.add_argument("--now", type=_parse_now, help=now_help)
    p.add_argument("--json", action="store_true", help="print one JSON list (see docs)")
    p.set_defaults(func=_cmd_list)

    for name, text in (("flag", "keep a clip as evidence"), ("unflag", "remove the flag")):
        p = command(name, text)
        clip_argument(p)
        p.add_argument("--reason", required=True, help="why (recorded in the custody log)")
        by_argument(p)
        p.set_defaults(func=_cmd_flag)

    p = command("prune", "delete unflagged clips past retention and stale transfers")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--now", type=_parse_now, help=now_help)
    p.set_defaults(func=_cmd_prune)

    p = command("export", "decrypt a stored clip into a playable file")
    clip_argument(p)
    p.add_argument("--force-key", type=Path, required=True, help="the force's private key")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .ts or .mp4")
    by_argument(p)
    p.set_defaults(func=_cmd_export)

    p = command("enrol", "register cameras' public keys (from bodycam provision)")
    p.add_argument("keys", type=Path, nargs="+", help="<device-id>.pub files")
    p.add_argument("--replace", action="store_true", help="accept a changed key")
    p.set_defaults(func=_cmd_enrol)

    p = command("log", "print the custody log and check its chain")
    p.add_argument("--clip", help="only entries of this clip (id or prefix, or DEVICE/PREFIX)")
    p.add_argument("--json", action="store_true", help="print the entries as one JSON list")
    p.set_defaults(func=_cmd_log)
