"""The dock store after issue 12: (device, clip) identity, store.toml, incoming/, free space.

Also ``bodycam store init``/``enrol`` on a fresh store through the real ``bodycam`` command,
``--json`` output, and the custody kinds that name no stored clip (refused, clock, conflict).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from bodycam.daemon.cli import main
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.dock.custody_format import replay
from bodycam.dock.store import DockStore, StoreError, check_name
from tests.unit.dock_helpers import DEVICE, T0, Clock, camera_clip, deliver, receive
from tests.unit.evidence_helpers import START, Keys

DAY = dt.timedelta(days=1)
OTHER = "BODYCAM-TEST-0002"


@pytest.fixture
def store(tmp_path: Path) -> DockStore:
    return DockStore(tmp_path / "store", clock=Clock())


def _bodycam(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _age(path: Path, when: dt.datetime) -> None:
    """Set the modification time of ``path`` and everything in it (a transfer last written then)."""
    stamp = when.timestamp()
    for child in [*path.rglob("*"), path]:
        os.utime(child, (stamp, stamp))


# ----- identity: (device id, clip id) ---------------------------------------------------------


def test_two_devices_holding_one_clip_id_are_two_records(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    # Another camera lists the very same clip (it copied and re-signed it): stored as its own.
    copy = store.accept(OTHER, clip.clip_id, deliver(store, clip, OTHER), segments=2)
    assert copy == store.root / "clips" / OTHER / clip.directory.name
    assert store.stored_clip_dir(DEVICE, clip.clip_id) == clip.directory
    assert store.stored_clip_dir(OTHER, clip.clip_id) == copy
    assert {(c.device_id, c.clip_id) for c in store.clips()} == {
        (DEVICE, clip.clip_id),
        (OTHER, clip.clip_id),
    }
    assert set(replay(store.custody.entries())) == {(DEVICE, clip.clip_id), (OTHER, clip.clip_id)}
    (held,) = store.other_holders(OTHER, clip.clip_id)
    assert (held.device_id, held.directory) == (DEVICE, clip.directory)
    with pytest.raises(StoreError, match=f"ambiguous: matches .*{OTHER}/{clip.clip_id}"):
        store.find(clip.clip_id[:8])
    assert store.find(f"{OTHER}/{clip.clip_id[:8]}").directory == copy
    assert store.find(f"{DEVICE}/{clip.clip_id}").directory == clip.directory
    # Commit, flag and accepting again each touch one camera's copy only.
    store.mark_committed(OTHER, clip.clip_id)
    assert store.is_committed(OTHER, clip.clip_id)
    assert not store.is_committed(DEVICE, clip.clip_id)
    store.flag(f"{DEVICE}/{clip.clip_id[:8]}", reason="case 9", by="sgt")
    assert [c.flagged for c in store.clips()] == [True, False]
    again = store.accept(OTHER, clip.clip_id, deliver(store, clip, OTHER))
    assert again == copy
    assert store.audit() == []


def test_a_conflict_entry_names_both_devices_and_both_chain_heads(
    store: DockStore, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    stored_head = load_manifest(clip.directory)[1].chain_head
    others = store.other_holders(OTHER, clip.clip_id)
    store.record_conflict(OTHER, clip.clip_id, chain_head="ab" * 32, others=others)
    entry = store.custody.entries()[-1]
    assert (entry.event, entry.clip_id, entry.device_id) == (
        "clip_id_conflict",
        clip.clip_id,
        OTHER,
    )
    assert entry.detail["devices"] == [OTHER, DEVICE]
    assert entry.detail["chain_heads"] == ["ab" * 32, stored_head]
    assert entry.detail["same_chain_head"] is False
    assert store.custody.verify() == []
    # Not a clip record: the stored clip is unchanged and nothing is stored for OTHER.
    assert store.stored_clip_dir(OTHER, clip.clip_id) is None
    assert [c.device_id for c in store.clips()] == [DEVICE]
    code, out, _ = _bodycam(["store", "log", "--store", str(store.root)], capsys)
    assert code == 0
    (line,) = [line for line in out.splitlines() if "clip_id_conflict" in line]
    assert f"CONFLICT: one clip id listed by {OTHER} (head {'ab' * 8})" in line
    assert f"{DEVICE} (head {stored_head[:16]})" in line


def test_a_name_taken_by_another_clip_of_the_camera_gets_a_unique_name(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    first = receive(store, keys, tmp_path / "camera")
    second = camera_clip(tmp_path / "camera2", keys, started=START + DAY)
    # The camera lists a different clip under the first one's directory name.
    incoming = store.incoming_dir(DEVICE, first.directory.name)
    for child in second.directory.iterdir():
        (incoming / child.name).write_bytes(child.read_bytes())
    stored = store.accept(DEVICE, second.clip_id, incoming)
    assert stored == first.directory.with_name(f"{first.directory.name}~{second.clip_id[:8]}")
    assert load_manifest(stored)[1].clip_id == second.clip_id
    assert load_manifest(first.directory)[1].clip_id == first.clip_id
    assert store.stored_clip_dir(DEVICE, second.clip_id) == stored
    assert len(store.clips()) == 2
    assert store.audit() == []


def test_check_name_is_the_store_rule_and_names_the_value() -> None:
    assert check_name("20261122T101500Z-0f0d386a", "clip name") == "20261122T101500Z-0f0d386a"
    for bad in ("..", "../../x", "/abs", "é", "a" * 65, "", ".hidden"):
        with pytest.raises(StoreError, match=r"invalid clip name '"):
            check_name(bad, "clip name")
    with pytest.raises(StoreError) as caught:
        check_name("x" * 10_000, "clip name")
    assert len(str(caught.value)) < 200  # a peer's string never floods the log


# ----- refused and clock: entries that name no stored clip ------------------------------------


def test_refused_and_clock_entries_chain_verify_and_are_sanitised(
    store: DockStore, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    store.refuse(DEVICE, "not hex!", "../../" + "x" * 200, ["name breaks the store's rule"])
    store.refuse(DEVICE, clip.clip_id, "20261122T101500Z-0f0d386a", ["needs 9 GiB; 1 GiB free"])
    store.record_clock(DEVICE, dock_id="bay-1", offset_s=-0.25, was_set=True)
    store.record_clock(DEVICE, dock_id="bay-1", offset_s=float("nan"), was_set=False, refused="x")
    entries = store.custody.entries()
    assert [e.event for e in entries[2:]] == ["refused", "refused", "clock", "clock"]
    bad, good, clock, refused = entries[2:]
    assert bad.clip_id == ""
    assert bad.detail["name"].startswith("'../../xxx")
    assert len(bad.detail["name"]) <= 80
    assert (good.clip_id, good.detail["name"]) == (clip.clip_id, "20261122T101500Z-0f0d386a")
    assert good.detail["problems"] == ["needs 9 GiB; 1 GiB free"]
    assert (clock.clip_id, clock.device_id) == ("", DEVICE)
    assert clock.detail == {"dock_id": "bay-1", "offset_s": -0.25, "was_set": True, "refused": None}
    assert refused.detail["offset_s"] is None  # NaN is not JSON; the fact is kept as unknown
    assert [e.prev for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert store.custody.verify() == []
    assert store.audit() == []
    # They change no clip: the refused clip id is still stored, not committed.
    (stored,) = store.clips()
    assert (stored.clip_id, stored.committed) == (clip.clip_id, False)
    assert DockStore(store.root, create=False).custody.head() == entries[-1].hash
    code, out, _ = _bodycam(["store", "log", "--store", str(store.root)], capsys)
    assert code == 0
    assert "dock bay-1: offset -0.250 s, clock set" in out
    assert "dock bay-1: camera refused the time: x" in out
    assert "refused 20261122T101500Z-0f0d386a: needs 9 GiB; 1 GiB free" in out


# ----- store init, store.toml, enrol --------------------------------------------------------


def test_init_then_enrol_on_a_fresh_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "var" / "store"
    generate_device_key(tmp_path / "CAM-1.key")
    code, _, err = _bodycam(
        ["store", "enrol", "--store", str(root), str(tmp_path / "CAM-1.pub")], capsys
    )
    assert code == 1
    assert err.count("\n") == 1
    assert f"create one with: bodycam store init --store {root}" in err
    assert not root.exists()

    argv = [
        "store",
        "init",
        "--store",
        str(root),
        "--retention-days",
        "90",
        "--min-free-mib",
        "512",
    ]
    code, out, _ = _bodycam(argv, capsys)
    assert code == 0
    assert out.startswith(f"created dock store {root}:")
    assert "retention_days = 90, min_free_mib = 512, incoming_max_age_days = 7" in out
    for part in ("devices", "incoming", "clips", "quarantine"):
        assert (root / part).is_dir()
    store = DockStore(root, create=False)
    assert (store.retention_days, store.min_free_bytes, store.incoming_max_age_days) == (
        90.0,
        512 * 1024 * 1024,
        7.0,
    )
    assert DockStore(root, create=False, retention_days=3).retention_days == 3.0

    code, out, _ = _bodycam(
        ["store", "enrol", "--store", str(root), str(tmp_path / "CAM-1.pub")], capsys
    )
    assert code == 0
    assert out == f"enrolled CAM-1: {root / 'devices' / 'CAM-1.pub'}\n"

    before = (root / "store.toml").read_bytes()
    code, out, err = _bodycam(
        ["store", "init", "--store", str(root), "--retention-days", "5"], capsys
    )
    assert code == 1
    assert (
        err == f"bodycam: error: {root}: already a dock store (custody.jsonl exists); not changed\n"
    )
    assert (root / "store.toml").read_bytes() == before


def test_prune_reads_retention_from_store_toml(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    assert main(["store", "init", "--store", str(root), "--retention-days", "7"]) == 0
    capsys.readouterr()
    clip = receive(DockStore(root, create=False, clock=Clock()), keys, tmp_path / "camera")
    later = (T0 + 8 * DAY).isoformat()
    code, out, _ = _bodycam(["store", "prune", "--store", str(root), "--now", later], capsys)
    assert code == 0
    assert out.startswith(f"deleted {clip.clip_id}")
    assert "retention 7 days" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retention_days = 0\n", "retention_days must be a finite number above 0, not 0"),
        ("retention_days = -3.5\n", "retention_days must be a finite number above 0"),
        ("retention_days = nan\n", "retention_days must be a finite number above 0, not nan"),
        ("min_free_mib = inf\n", "min_free_mib must be a finite number above 0, not inf"),
        ("incoming_max_age_days = true\n", "incoming_max_age_days must be a number, not True"),
        ('min_free_mib = "256"\n', "min_free_mib must be a number, not '256'"),
        ("retention_days = 1e9\n", "retention_days = 1000000000.0 is too large"),
        ("retention = 31\n", "unknown key 'retention'"),
        ("retention_days = \n", "not valid TOML"),
    ],
)
def test_bad_store_toml_is_one_line_naming_the_key(
    store: DockStore, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (store.root / "store.toml").write_text(text)
    with pytest.raises(StoreError, match=message.replace("(", r"\(")):
        DockStore(store.root, create=False)
    code, _, err = _bodycam(["store", "list", "--store", str(store.root)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert message in err


def test_a_store_without_store_toml_uses_the_defaults(store: DockStore) -> None:
    (store.root / "store.toml").unlink()  # a store made before the file existed
    again = DockStore(store.root, create=False)
    assert (again.retention_days, again.min_free_bytes, again.incoming_max_age_days) == (
        31.0,
        256 * 1024 * 1024,
        7.0,
    )


# ----- incoming/: listing, stale transfers, cleaning -------------------------------------------


def _transfer(store: DockStore, device: str, name: str, size: int, when: dt.datetime) -> Path:
    path = store.incoming_dir(device, name)
    (path / "seg-000000.bcs").write_bytes(b"x" * size)
    _age(path, when)
    return path


def test_list_shows_incoming_transfers_and_json_parses(
    store: DockStore, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    _transfer(store, DEVICE, "20261201T070000Z-aaaaaaaa", 3000, T0 - 10 * DAY)
    _transfer(store, OTHER, "20261201T075000Z-bbbbbbbb", 100, T0 - dt.timedelta(hours=2))
    now = ["--now", T0.isoformat()]
    code, out, _ = _bodycam(["store", "list", "--store", str(store.root), *now], capsys)
    assert code == 0
    lines = out.splitlines()
    heading = lines.index("incoming transfers (2; stale after 7 days):")
    assert lines[heading + 1] == (
        f"  {DEVICE}  20261201T070000Z-aaaaaaaa     2.9 KiB  10.0 days old"
        "  STALE (prune removes it)"
    )
    assert lines[heading + 2] == f"  {OTHER}  20261201T075000Z-bbbbbbbb       100 B  2 h old"

    code, out, _ = _bodycam(["store", "list", "--store", str(store.root), "--json", *now], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [row["kind"] for row in rows] == ["clip", "incoming", "incoming"]
    assert rows[0]["clip_id"] == clip.clip_id
    assert rows[0]["directory"] == f"clips/{DEVICE}/{clip.directory.name}"
    assert (rows[0]["committed"], rows[0]["flagged"], rows[0]["expired"]) == (False, False, False)
    assert rows[1] == {
        "kind": "incoming",
        "device_id": DEVICE,
        "name": "20261201T070000Z-aaaaaaaa",
        "bytes": 3000,
        "modified_utc": "2026-11-21T08:00:00.000000Z",
        "age_days": 10.0,
        "stale": True,
    }
    code, out, _ = _bodycam(["store", "log", "--store", str(store.root), "--json"], capsys)
    assert code == 0
    entries = json.loads(out)
    assert [e["event"] for e in entries] == ["received", "verified"]
    assert entries[1]["prev"] == entries[0]["hash"]
    assert set(entries[0]) == {
        "seq",
        "utc",
        "event",
        "clip_id",
        "device_id",
        "detail",
        "prev",
        "hash",
    }


def test_prune_removes_stale_transfers_but_not_fresh_ones(
    store: DockStore, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = _transfer(store, DEVICE, "20261101T070000Z-aaaaaaaa", 5, T0 - 8 * DAY)
    fresh = _transfer(store, DEVICE, "20261130T070000Z-bbbbbbbb", 5, T0 - 6 * DAY)
    argv = ["store", "prune", "--store", str(store.root), "--now", T0.isoformat()]
    code, out, _ = _bodycam([*argv, "--dry-run"], capsys)
    assert code == 0
    assert f"would remove stale transfer incoming/{DEVICE}/{stale.name} (5 B" in out
    assert stale.exists()
    code, out, _ = _bodycam(argv, capsys)
    assert code == 0
    assert f"removed stale transfer incoming/{DEVICE}/{stale.name}" in out
    assert "removed 1 stale transfer(s), 5 B; older than 7 days" in out
    assert not stale.exists()
    assert fresh.is_dir()
    assert [t.name for t in store.incoming()] == [fresh.name]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [".lock"]


def test_clean_incoming_keeps_the_names_the_camera_still_lists(store: DockStore) -> None:
    keep = _transfer(store, DEVICE, "20261130T070000Z-aaaaaaaa", 5, T0)
    gone = _transfer(store, DEVICE, "20261130T080000Z-bbbbbbbb", 5, T0)
    other = _transfer(store, OTHER, "20261130T090000Z-cccccccc", 5, T0)
    assert store.clean_incoming(DEVICE, {keep.name, "20261130T100000Z-dddddddd"}) == [gone.name]
    assert keep.is_dir()
    assert not gone.exists()
    assert other.is_dir()  # another camera's transfers are never touched
    assert store.clean_incoming(DEVICE, {keep.name}) == []
    with pytest.raises(StoreError, match="invalid device id"):
        store.clean_incoming("../x", set())


def test_a_power_cut_while_removing_leaves_a_store_that_works(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    # A prune cut short after its rename (the new name carries the device), and a transfer
    # removal cut short after its rename: both leftovers are finished by the next prune.
    leftover = store.root / f".deleting-{DEVICE}-{clip.clip_id}"
    clip.directory.rename(leftover)
    trash = store.root / f".discarding-incoming-{DEVICE}-20261130T070000Z-aaaaaaaa"
    trash.mkdir()
    (trash / "seg-000000.bcs").write_bytes(b"partial")
    assert store.audit() == [
        f"clip {clip.clip_id} ({DEVICE}): recorded as stored but deletion interrupted; "
        "prune finishes it"
    ]
    assert store.prune(now=T0 + DAY) == []
    assert not leftover.exists()
    assert not trash.exists()
    last = store.custody.entries()[-1]
    assert (last.event, last.device_id, last.detail["interrupted"]) == ("deleted", DEVICE, True)
    assert store.audit() == []
    again = receive(store, keys, tmp_path / "camera2")  # and the next docking works
    assert store.stored_clip_dir(DEVICE, again.clip_id) == again.directory


# ----- free space ------------------------------------------------------------------------------


def test_free_bytes_is_the_file_systems_space_less_the_reserve(store: DockStore) -> None:
    fs = os.statvfs(store.root)
    free = store.free_bytes()
    assert 0 <= free <= fs.f_bavail * fs.f_frsize
    assert free <= max(0, fs.f_bavail * fs.f_frsize - 256 * 1024 * 1024)
    (store.root / "store.toml").write_text("min_free_mib = 16777216\n")  # 16 TiB
    assert DockStore(store.root, create=False).free_bytes() == 0
