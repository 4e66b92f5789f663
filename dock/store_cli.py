"""``bodycam store``: look after the dock's evidence store (list, flag, prune, export, log).

Each subcommand opens an existing store (it never creates one: a mistyped ``--store`` must
not leave an empty store behind), prints plain lines a person reads, and returns 0 or 1.
:class:`StoreError` propagates; the ``bodycam`` command prints it as one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
from pathlib import Path

from bodycam.daemon.evidence.schema import format_utc, parse_utc
from bodycam.dock.custody import scan_log
from bodycam.dock.store import CUSTODY_NAME, PREFIX_RE, DockStore, StoredClip, StoreError

_log = logging.getLogger(__name__)

__all__ = ["add_store_parser", "default_user"]

EXIT_OK, EXIT_FAILED = 0, 1


def default_user() -> str:
    """The login name, for ``--by`` (``unknown`` when the system cannot tell)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"


def _parse_now(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +00:00)")
    return when.astimezone(dt.UTC)


def _open(args: argparse.Namespace) -> DockStore:
    return DockStore(args.store, retention_days=args.retention_days, create=False)


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


def _cmd_list(args: argparse.Namespace) -> int:
    store = _open(args)
    now = args.now or dt.datetime.now(dt.UTC)
    expired = {clip.clip_id for clip in store.expired(now)}
    shown = [
        clip
        for clip in store.clips()
        if (args.device is None or clip.device_id == args.device)
        and (not args.flagged or clip.flagged)
        and (not args.expired or clip.clip_id in expired)
    ]
    for clip in shown:
        committed = "committed" if clip.committed else "on camera"
        print(
            f"{clip.clip_id[:12]}  {clip.device_id}  {_short_utc(clip.received_utc)}  "
            f"{_size(clip.bytes):>10}  {committed:9}  {_retention_state(clip, now)}"
        )
    problems = store.audit()
    for problem in problems:
        print(f"problem: {problem}")
    flagged = sum(clip.flagged for clip in shown)
    count = f"{len(shown)} clip(s), {flagged} flagged, {_size(sum(c.bytes for c in shown))}"
    if problems:
        print(f"{count}; custody log or store BROKEN ({len(problems)} problem(s) above)")
        return EXIT_FAILED
    print(f"{count}; custody log intact ({len(store.custody.entries())} entries)")
    return EXIT_OK


def _cmd_flag(args: argparse.Namespace) -> int:
    store = _open(args)
    if args.store_command == "flag":
        clip = store.flag(args.clip, reason=args.reason, by=args.by)
        print(f"flagged {clip.clip_id} ({clip.device_id}): kept beyond retention")
    else:
        clip = store.unflag(args.clip, reason=args.reason, by=args.by)
        print(f"unflagged {clip.clip_id} ({clip.device_id}): expires {clip.expires_utc}")
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    store = _open(args)
    now = args.now or dt.datetime.now(dt.UTC)
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
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    store = _open(args)
    result = store.export(args.clip, force_key=args.force_key, output=args.output, by=args.by)
    print(f"exported {result.segments} segment(s), {result.bytes} bytes to {result.path}")
    return EXIT_OK


def _cmd_log(args: argparse.Namespace) -> int:
    path = args.store / CUSTODY_NAME
    if not path.is_file():
        raise StoreError(f"{args.store}: not a dock store (no {CUSTODY_NAME})")
    # Read without opening the store: a broken log is what this command must show.
    scan = scan_log(path)
    prefix = None
    if args.clip is not None:
        prefix = args.clip.strip().lower()
        if not PREFIX_RE.match(prefix):
            raise StoreError(f"clip id {args.clip!r}: give 8 to 32 hex digits")
    for entry in scan.entries:
        if prefix is not None and not entry.clip_id.startswith(prefix):
            continue
        detail = json.dumps(entry.detail, sort_keys=True, ensure_ascii=False)
        print(
            f"{entry.seq:6d}  {entry.utc}  {entry.event:10}  {entry.clip_id[:12] or '-':12}  "
            f"{entry.device_id}  {detail}"
        )
    if scan.torn:
        print("note: the last line is incomplete (a power cut); it is dropped at the next open")
    if scan.problems:
        print(f"custody log BROKEN ({len(scan.problems)} problem(s)):")
        for problem in scan.problems:
            print(f"  {problem}")
        return EXIT_FAILED
    head = scan.entries[-1].hash if scan.entries else "0" * 64
    print(f"custody log intact ({len(scan.entries)} entries, head {head})")
    return EXIT_OK


def _cmd_enrol(args: argparse.Namespace) -> int:
    store = _open(args)
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
    parser = sub.add_parser("store", help="the dock's evidence store: list, flag, prune, export")
    commands = parser.add_subparsers(dest="store_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--store", type=Path, required=True, help="the store directory")
        p.add_argument(
            "--retention-days",
            type=float,
            default=31.0,
            help="days an unflagged clip is kept after it was stored (default 31)",
        )
        return p

    def clip_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("clip", help="clip id, or a unique prefix of at least 8 hex digits")

    def by_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", default=default_user(), help="who does it (default: login name)")

    now_help = "the time to judge retention at (ISO 8601 with zone; default now)"
    p = command("list", "list stored clips and check the custody log")
    p.add_argument("--device", help="only this camera's clips")
    p.add_argument("--flagged", action="store_true", help="only clips flagged as evidence")
    p.add_argument("--expired", action="store_true", help="only clips past retention")
    p.add_argument("--now", type=_parse_now, help=now_help)
    p.set_defaults(func=_cmd_list)

    for name, text in (("flag", "keep a clip as evidence"), ("unflag", "remove the flag")):
        p = command(name, text)
        clip_argument(p)
        p.add_argument("--reason", required=True, help="why (recorded in the custody log)")
        by_argument(p)
        p.set_defaults(func=_cmd_flag)

    p = command("prune", "delete unflagged clips past retention")
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
    p.add_argument("--clip", help="only entries of this clip (id or prefix)")
    p.set_defaults(func=_cmd_log)
