"""``bodycam store``: every subcommand through argparse, its output and exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import pwd
import sys
import tempfile
from pathlib import Path

import pytest

from bodycam.dock.store import DockStore, StoreError
from bodycam.dock.store_cli import add_store_parser, default_user
from bodycam.dock.store_owner import Owner, refusal, require_owner
from tests.unit.dock_helpers import (
    DEVICE,
    T0,
    CameraClip,
    Clock,
    count_frames,
    receive,
    register_device,
    write_force_key,
)
from tests.unit.evidence_helpers import H264_FRAMES, START, Keys

DAY = dt.timedelta(days=1)


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="bodycam")
    add_store_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["store", *argv])
    code: int = args.func(args)
    return code, capsys.readouterr().out


@pytest.fixture
def store(tmp_path: Path) -> DockStore:
    return DockStore(tmp_path / "store", clock=Clock())


@pytest.fixture
def two(store: DockStore, keys: Keys, tmp_path: Path) -> tuple[CameraClip, CameraClip]:
    first = receive(store, keys, tmp_path / "camera")
    second = receive(store, keys, tmp_path / "camera", started=START + DAY, h264=True)
    return first, second


def test_list_shows_each_clip_a_count_and_the_custody_verdict(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two
    code, out = run(["list", "--store", str(store.root), "--now", _iso(T0 + DAY)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{first.clip_id[:12]}  {DEVICE}  2026-12-01T08:00:00Z")
    assert lines[0].endswith("on camera  expires in 30 days")
    assert lines[1].startswith(second.clip_id[:12])
    assert len(lines) == 3
    assert lines[2].startswith("2 clip(s), 0 flagged, ")
    assert lines[2].endswith(" KiB; custody log intact (4 entries)")


def test_list_filters(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two
    root = str(store.root)
    store.flag(second.clip_id, reason="complaint", by="sgt")
    _, out = run(["list", "--store", root, "--flagged"], capsys)
    assert out.splitlines()[0].startswith(second.clip_id[:12])
    assert "FLAGGED (complaint)" in out
    assert "1 clip(s), 1 flagged" in out
    _, out = run(["list", "--store", root, "--expired", "--now", _iso(T0 + 32 * DAY)], capsys)
    assert out.splitlines()[0].startswith(first.clip_id[:12])
    assert "EXPIRED" in out
    assert "1 clip(s), 0 flagged" in out
    _, out = run(["list", "--store", root, "--device", "OTHER-CAM"], capsys)
    assert out == "0 clip(s), 0 flagged, 0 B; custody log intact (5 entries)\n"  # + the flag


def test_list_reports_a_clip_missing_from_disk(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = two
    for child in first.directory.iterdir():
        child.unlink()
    first.directory.rmdir()
    code, out = run(["list", "--store", str(store.root)], capsys)
    assert code == 1
    lines = out.splitlines()
    missing = f"problem: clip {first.clip_id} ({DEVICE}): recorded as stored but directory missing"
    assert missing in lines
    assert lines[-1].endswith("; custody log or store BROKEN (1 problem(s) above)")


def test_commands_refuse_a_directory_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["list"], ["log"], ["prune"]):
        with pytest.raises(StoreError, match="not a dock store"):
            run([*argv, "--store", str(tmp_path)], capsys)
    assert not (tmp_path / "custody.jsonl").exists()


def test_flag_and_unflag(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = two
    root = str(store.root)
    argv = ["flag", first.clip_id[:8], "--store", root, "--reason", "case 117", "--by", "sgt"]
    code, out = run(argv, capsys)
    assert (code, out) == (0, f"flagged {first.clip_id} ({DEVICE}): kept beyond retention\n")
    with pytest.raises(StoreError, match="already flagged"):
        run(argv, capsys)
    code, out = run(["unflag", first.clip_id, "--store", root, "--reason", "closed"], capsys)
    assert code == 0
    assert out.startswith(f"unflagged {first.clip_id} ({DEVICE}): expires 2027-01-01T08:00")
    entry = store.custody.entries()[-1]
    assert entry.detail == {"reason": "closed", "by": default_user()}


def test_prune_dry_run_then_for_real(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two
    root = str(store.root)
    store.flag(second.clip_id, reason="evidence", by="sgt")
    later = _iso(T0 + 32 * DAY)
    code, out = run(["prune", "--store", root, "--dry-run", "--now", later], capsys)
    assert code == 0
    assert out.startswith(f"would delete {first.clip_id} ({DEVICE}, received 2026-12-01T08:00")
    assert "would delete 1 clip(s)" in out
    assert first.directory.exists()
    code, out = run(["prune", "--store", root, "--now", later], capsys)
    assert code == 0
    assert out.startswith(f"deleted {first.clip_id}")
    assert not first.directory.exists()
    _, out = run(["prune", "--store", root, "--now", _iso(T0 + 400 * DAY)], capsys)
    assert out.startswith("deleted 0 clip(s), 0 B; retention 31 days at 2028-01-05T08:00")


def test_now_needs_a_time_zone(store: DockStore, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run(["prune", "--store", str(store.root), "--now", "2026-12-01T08:00:00"], capsys)
    assert "has no time zone" in capsys.readouterr().err


def test_export_writes_a_playable_file(
    store: DockStore,
    keys: Keys,
    two: tuple[CameraClip, CameraClip],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, second = two
    register_device(store, keys)
    force_key = write_force_key(tmp_path / "force.key", keys)
    out_path = tmp_path / "exhibit.mp4"
    argv = ["export", second.clip_id[:8], "--store", str(store.root)]
    code, out = run([*argv, "--force-key", str(force_key), "-o", str(out_path)], capsys)
    assert code == 0
    assert out.startswith("exported 2 segment(s), ")
    assert out.endswith(f"bytes to {out_path}\n")
    assert count_frames(out_path) == H264_FRAMES
    assert store.custody.entries()[-1].event == "exported"


def test_log_prints_entries_and_the_verdict(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = two
    root = str(store.root)
    code, out = run(["log", "--store", root], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[:4] == [
        "1",
        "2026-12-01T08:00:00.000000Z",
        "received",
        first.clip_id[:12],
    ]
    assert lines[-1] == f"custody log intact (4 entries, head {store.custody.head()})"
    _, out = run(["log", "--store", root, "--clip", first.clip_id[:8]], capsys)
    assert [line.split()[2] for line in out.splitlines()[:-1]] == ["received", "verified"]


def test_log_names_the_damage_and_fails(
    store: DockStore, two: tuple[CameraClip, CameraClip], capsys: pytest.CaptureFixture[str]
) -> None:
    log = store.root / "custody.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    code, out = run(["log", "--store", str(store.root)], capsys)
    assert code == 1
    assert "custody log BROKEN" in out
    assert "  custody.jsonl line 2: seq 3, expected 2" in out


def test_by_defaults_to_the_login_name_or_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "pc4711")
    assert default_user() == "pc4711"

    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert default_user() == "unknown"


# --- only the store's owner (the agent's user) may change it ---------------------------------

DOCK = Owner(uid=990, name="bodycam-dock")


def test_refusal_names_the_owner_and_the_command_to_run() -> None:
    assert refusal(Path("/var/lib/bodycam-dock"), "enrol", euid=990, owner=DOCK) is None
    reason = refusal(Path("/var/lib/bodycam-dock"), "enrol", euid=0, owner=DOCK)
    assert reason == (
        "/var/lib/bodycam-dock belongs to bodycam-dock, not root; "
        "run: sudo -u bodycam-dock bodycam store enrol ..."
    )
    # Root owning the store is its owner like any other user; an owner with no passwd
    # entry is named by uid, quoted so the shell does not take "#" for a comment.
    assert refusal(Path("/s"), "prune", euid=0, owner=Owner(0, "root")) is None
    reason = refusal(Path("/s"), "flag", euid=0, owner=Owner(4242, "#4242"))
    assert reason is not None
    assert reason.endswith("run: sudo -u '#4242' bodycam store flag ...")


def test_require_owner_judges_the_store_roots_owner(tmp_path: Path) -> None:
    me = os.geteuid()
    require_owner(tmp_path, "enrol", euid=me)  # the owner may
    require_owner(tmp_path / "missing", "enrol", euid=me + 1)  # opening says "no store"
    with pytest.raises(StoreError, match=rf"^{tmp_path} belongs to .*store enrol \.\.\.$"):
        require_owner(tmp_path, "enrol", euid=me + 1)


def test_only_commands_that_change_the_store_need_its_owner(
    store: DockStore,
    two: tuple[CameraClip, CameraClip],
    keys: Keys,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _ = two
    root = str(store.root)
    entries = len(store.custody.entries())
    other = os.geteuid() + 1
    monkeypatch.setattr(os, "geteuid", lambda: other)  # as a user who is not the owner
    # Reading is for anyone who can read; so is a prune that changes nothing.
    assert run(["list", "--store", root, "--now", _iso(T0)], capsys)[0] == 0
    assert run(["log", "--store", root], capsys)[0] == 0
    assert run(["prune", "--store", root, "--dry-run"], capsys)[0] == 0
    pub = register_device(store, keys).read_bytes()
    (tmp_path / "CAM-9.pub").write_bytes(pub)
    force = write_force_key(tmp_path / "force.pem", keys)
    clip = first.clip_id
    for argv in (
        ["enrol", str(tmp_path / "CAM-9.pub")],
        ["flag", clip, "--reason", "case 1"],
        ["unflag", clip, "--reason", "closed"],
        ["prune"],
        ["export", clip, "--force-key", str(force), "-o", str(tmp_path / "out.ts")],
    ):
        with pytest.raises(StoreError, match=rf"run: sudo -u \S+ bodycam store {argv[0]} \.\.\."):
            run([*argv, "--store", root], capsys)
    assert len(store.custody.entries()) == entries
    assert not (store.root / "devices" / "CAM-9.pub").exists()
    assert not (tmp_path / "out.ts").exists()


def _as_nobody(argv: list[str]) -> tuple[int, str]:
    """``bodycam ARGV`` in a forked child that switched to uid 65534: (exit code, output).

    A fork, not a new interpreter: this one lives under /root, which uid 65534 may not
    enter. Everything ``bodycam`` imports is imported here first, for the same reason.
    """
    from bodycam.daemon.cli import build_parser, main

    build_parser()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            sys.stdout = sys.stderr = os.fdopen(write, "w")
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = main(argv)
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        output = pipe.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), output


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_another_user_cannot_change_a_store_and_is_told_how(keys: Keys) -> None:
    # A temporary directory in /tmp (not pytest's, which only root may enter), so that the
    # other user can reach the store's root directory and see who owns it.
    with tempfile.TemporaryDirectory(prefix="bodycam-owner-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        store = DockStore(base / "store")  # owned by root, like a store after `sudo init`
        key = base / "CAM-9.pub"
        key.write_bytes(register_device(store, keys).read_bytes())
        key.chmod(0o644)
        code, output = _as_nobody(["store", "enrol", "--store", str(store.root), str(key)])
        try:
            nobody = pwd.getpwuid(65534).pw_name
        except KeyError:
            nobody = "uid 65534"
        assert (code, output) == (
            1,
            f"bodycam: error: {store.root} belongs to root, not {nobody}; "
            "run: sudo -u root bodycam store enrol ...\n",
        )
        assert not (store.root / "devices" / "CAM-9.pub").exists()
        # Reading needs only read access; without it the line says whose store it is (not
        # "no custody.jsonl", which would send the operator after the wrong problem).
        code, output = _as_nobody(["store", "list", "--store", str(store.root)])
        assert (code, output) == (
            1,
            f"bodycam: error: {store.root} belongs to root and this user cannot read it; "
            "run: sudo -u root bodycam store list ...\n",
        )
