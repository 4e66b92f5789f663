"""The dock store: accept, quarantine, commit, flags, retention, export, all with real clips."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.daemon.evidence.schema import format_utc
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.store import DockStore, StoreError
from tests.unit.dock_helpers import (
    DEVICE,
    T0,
    Clock,
    camera_clip,
    count_frames,
    deliver,
    receive,
    register_device,
    write_force_key,
)
from tests.unit.evidence_helpers import H264_FRAMES, START, Keys, flip_byte, make_keys

DAY = dt.timedelta(days=1)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> DockStore:
    return DockStore(tmp_path / "store", clock=clock)


def _events(store: DockStore, clip_id: str | None = None) -> list[str]:
    return [e.event for e in store.custody.entries() if clip_id in (None, e.clip_id)]


def test_a_new_store_has_its_layout_and_reopens(tmp_path: Path) -> None:
    root = tmp_path / "store"
    DockStore(root)
    for part in ("devices", "incoming", "clips", "quarantine"):
        assert (root / part).is_dir()
    assert (root / "custody.jsonl").read_bytes() == b""
    assert DockStore(root, create=False).clips() == []


def test_opening_something_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"not a dock store \(no custody.jsonl\)"):
        DockStore(tmp_path, create=False)
    with pytest.raises(StoreError, match="retention_days must be a finite number above 0"):
        DockStore(tmp_path, retention_days=0)


def test_accept_moves_a_verified_clip_and_logs_received_then_verified(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = camera_clip(tmp_path / "camera", keys)
    incoming = deliver(store, clip)
    assert incoming == store.root / "incoming" / DEVICE / clip.directory.name
    stored = store.accept(DEVICE, clip.clip_id, incoming, segments=2, dock_id="bay-1")
    assert stored == store.root / "clips" / DEVICE / clip.directory.name
    assert not incoming.exists()
    assert verify_clip(stored, device_key=keys.device.public_key()).ok
    entries = store.custody.entries()
    assert [e.event for e in entries] == ["received", "verified"]
    assert entries[0].detail == {"name": clip.directory.name}
    assert entries[1].detail == {"segments": 2, "dock_id": "bay-1"}
    assert store.stored_clip_dir(DEVICE, clip.clip_id) == stored
    assert store.stored_clip_dir("OTHER-CAM", clip.clip_id) is None
    (listed,) = store.clips()
    assert listed.clip_id == clip.clip_id
    assert (listed.device_id, listed.directory) == (DEVICE, stored)
    assert listed.received_utc == format_utc(T0)
    assert listed.expires_utc == format_utc(T0 + 31 * DAY)
    assert not listed.committed
    assert not listed.flagged
    assert listed.exported == 0
    assert listed.bytes == sum(f.stat().st_size for f in stored.iterdir())


def test_accept_is_idempotent(store: DockStore, keys: Keys, tmp_path: Path) -> None:
    clip = camera_clip(tmp_path / "camera", keys)
    first = store.accept(DEVICE, clip.clip_id, deliver(store, clip))
    again = deliver(store, clip)  # the camera sent it twice (no COMMIT reached it)
    assert store.accept(DEVICE, clip.clip_id, again, segments=2) == first
    assert not again.exists()
    assert _events(store) == ["received", "verified"]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [".lock"]


def test_accept_after_a_power_cut_between_rename_and_custody(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = camera_clip(tmp_path / "camera", keys)
    leftover = store.root / "clips" / DEVICE / clip.directory.name
    leftover.parent.mkdir()
    shutil.copytree(clip.directory, leftover)  # renamed into place, custody not yet written
    assert store.audit() == [
        f"clips/{DEVICE}/{clip.directory.name}: not recorded in the custody log"
    ]
    assert store.clips() == []
    stored = store.accept(DEVICE, clip.clip_id, deliver(store, clip))
    assert stored == leftover
    assert _events(store) == ["received", "verified"]
    assert store.audit() == []


def test_accept_refuses_a_directory_holding_another_clip(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = camera_clip(tmp_path / "camera", keys)
    incoming = deliver(store, clip)
    with pytest.raises(StoreError, match=f"holds clip {clip.clip_id}, not 0+$"):
        store.accept(DEVICE, "0" * 32, incoming)
    (incoming / "manifest.json").unlink()
    with pytest.raises(StoreError, match="no valid manifest"):
        store.accept(DEVICE, clip.clip_id, incoming)
    assert store.custody.entries() == []


@pytest.mark.parametrize("device_id", ["", ".", "..", "../etc", "a/b", ".hidden", "x" * 65, "é"])
def test_bad_device_ids_are_store_errors(store: DockStore, device_id: str) -> None:
    with pytest.raises(StoreError, match="invalid device id"):
        store.device_key_path(device_id)
    with pytest.raises(StoreError, match="invalid device id"):
        store.incoming_dir(device_id, "20261122T101500Z-0f0d386a")


def test_bad_clip_names_and_ids_are_store_errors(store: DockStore) -> None:
    with pytest.raises(StoreError, match="invalid clip directory name"):
        store.incoming_dir(DEVICE, ".20261122T101500Z-0f0d386a.creating")
    for bad in ("0f0d386a", "X" * 32, "../" + "0" * 29):
        with pytest.raises(StoreError, match="invalid clip id"):
            store.stored_clip_dir(DEVICE, bad)
    with pytest.raises(StoreError, match="give 8 to 32 hex digits"):
        store.find("0f0d")
    with pytest.raises(StoreError, match="no stored clip has an id starting with 0f0d386a"):
        store.find("0f0d386a")


def test_register_device_enrols_a_key_and_refuses_anything_else(
    store: DockStore, tmp_path: Path
) -> None:
    generate_device_key(tmp_path / "cam.key")
    path = store.register_device("CAM-1", tmp_path / "cam.pub")
    assert path == store.device_key_path("CAM-1")
    assert path.read_bytes() == (tmp_path / "cam.pub").read_bytes()
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(EvidenceError):
        store.register_device("CAM-2", junk)
    assert not store.device_key_path("CAM-2").exists()


def test_incoming_dir_keeps_what_is_there_to_resume(store: DockStore) -> None:
    path = store.incoming_dir(DEVICE, "20261122T101500Z-0f0d386a")
    assert path.stat().st_mode & 0o777 == 0o700
    (path / "seg-000000.bcs").write_bytes(b"partial")
    assert store.incoming_dir(DEVICE, "20261122T101500Z-0f0d386a") == path
    assert (path / "seg-000000.bcs").read_bytes() == b"partial"


def test_quarantine_keeps_the_files_and_logs_the_problems(
    store: DockStore, keys: Keys, tmp_path: Path, clock: Clock
) -> None:
    clip = camera_clip(tmp_path / "camera", keys)
    incoming = deliver(store, clip)
    flip_byte(incoming / "seg-000001.bcs", 100)
    verdict = verify_clip(incoming, device_key=keys.device.public_key())
    assert not verdict.ok
    before = {p.name: p.read_bytes() for p in incoming.iterdir()}
    kept = store.quarantine(DEVICE, clip.clip_id, incoming, verdict.problems)
    stamp = f"{clock.now:%Y%m%dT%H%M%SZ}"
    assert kept == store.root / "quarantine" / DEVICE / f"{clip.directory.name}-{stamp}"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    assert not incoming.exists()
    (entry,) = store.custody.entries()
    assert entry.event == "rejected"
    assert entry.detail["problems"] == verdict.problems
    assert entry.detail["directory"] == f"quarantine/{DEVICE}/{kept.name}"
    assert store.clips() == []
    again = store.quarantine(DEVICE, "", deliver(store, clip), ["manifest: missing"])
    assert again.name == f"{kept.name}-2"


def test_commit_is_logged_once_and_only_for_stored_clips(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    assert not store.is_committed(DEVICE, clip.clip_id)
    store.mark_committed(DEVICE, clip.clip_id, dock_id="bay-1")
    store.mark_committed(DEVICE, clip.clip_id, dock_id="bay-1")
    assert store.is_committed(DEVICE, clip.clip_id)
    assert not store.is_committed("OTHER-CAM", clip.clip_id)
    assert _events(store) == ["received", "verified", "committed"]
    assert store.clips()[0].committed
    with pytest.raises(StoreError, match="is not stored here; it must not be committed"):
        store.mark_committed(DEVICE, "ab" * 16)


def test_flag_and_unflag_are_logged_and_misuse_is_explained(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    with pytest.raises(StoreError, match="is not flagged; nothing to unflag"):
        store.unflag(clip.clip_id, reason="oops", by="sgt")
    with pytest.raises(StoreError, match="a reason is required"):
        store.flag(clip.clip_id, reason="  ", by="sgt")
    flagged = store.flag(clip.clip_id[:8], reason="case 2026/117", by="sgt")
    assert (flagged.flagged, flagged.flag_reason, flagged.expires_utc) == (
        True,
        "case 2026/117",
        None,
    )
    with pytest.raises(StoreError, match=r"already flagged \(case 2026/117\)"):
        store.flag(clip.clip_id, reason="again", by="sgt")
    unflagged = store.unflag(clip.clip_id, reason="case closed", by="insp")
    assert not unflagged.flagged
    assert unflagged.expires_utc == format_utc(T0 + 31 * DAY)
    flag_entry = store.custody.entries()[2]
    assert (flag_entry.event, flag_entry.detail) == (
        "flagged",
        {"reason": "case 2026/117", "by": "sgt"},
    )


def test_prune_deletes_only_expired_unflagged_clips(
    store: DockStore, keys: Keys, tmp_path: Path, clock: Clock
) -> None:
    ordinary = receive(store, keys, tmp_path / "camera")
    evidence = receive(store, keys, tmp_path / "camera", started=START + DAY)
    store.flag(evidence.clip_id, reason="assault, case 117", by="sgt")

    assert store.prune(now=T0 + 30 * DAY) == []
    assert store.prune(now=T0 + 32 * DAY, dry_run=True)[0].clip_id == ordinary.clip_id
    assert ordinary.directory.is_dir()
    (deleted,) = store.prune(now=T0 + 32 * DAY)
    assert deleted.clip_id == ordinary.clip_id
    assert not ordinary.directory.exists()
    assert evidence.directory.is_dir()
    assert store.prune(now=T0 + 400 * DAY) == []
    assert [clip.clip_id for clip in store.clips()] == [evidence.clip_id]
    last = store.custody.entries()[-1]
    assert (last.event, last.clip_id, last.detail["reason"]) == (
        "deleted",
        ordinary.clip_id,
        "retention",
    )
    assert not [p for p in store.root.iterdir() if p.name.startswith(".deleting-")]
    assert store.audit() == []
    with pytest.raises(StoreError, match="no stored clip"):
        store.find(ordinary.clip_id)


def test_retention_is_configurable_and_counts_from_verification(
    tmp_path: Path, keys: Keys, clock: Clock
) -> None:
    store = DockStore(tmp_path / "store", retention_days=7, clock=clock)
    clip = receive(store, keys, tmp_path / "camera")
    assert store.prune(now=T0 + 7 * DAY - dt.timedelta(seconds=1)) == []
    assert [c.clip_id for c in store.prune(now=T0 + 7 * DAY)] == [clip.clip_id]


def test_prune_finishes_a_deletion_a_power_cut_interrupted(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    leftover = store.root / f".deleting-{clip.clip_id}"
    clip.directory.rename(leftover)  # prune's first step, then the power went
    (leftover / "seg-000000.bcs").unlink()  # and it had started removing files
    assert store.clips() == []
    assert store.audit() == [
        f"clip {clip.clip_id} ({DEVICE}): recorded as stored but deletion interrupted; "
        "prune finishes it"
    ]
    assert store.prune(now=T0 + DAY) == []
    assert not leftover.exists()
    last = store.custody.entries()[-1]
    assert (last.event, last.detail["reason"], last.detail["interrupted"]) == (
        "deleted",
        "retention",
        True,
    )
    assert store.audit() == []


def test_export_writes_a_playable_file_and_logs_it(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    register_device(store, keys)
    clip = receive(store, keys, tmp_path / "camera", h264=True)
    force_key = write_force_key(tmp_path / "force.key", keys)
    out = tmp_path / "exhibit-1.ts"
    result = store.export(clip.clip_id[:10], force_key=force_key, output=out, by="dc-smith")
    assert result.path == out
    assert count_frames(out) == H264_FRAMES
    mp4 = store.export(clip.clip_id, force_key=force_key, output=tmp_path / "e.mp4", by="dc")
    assert count_frames(mp4.path) == H264_FRAMES
    first = next(e for e in store.custody.entries() if e.event == "exported")
    assert first.detail["by"] == "dc-smith"
    assert first.detail["output"] == str(out.resolve())
    assert first.detail["bytes"] == out.stat().st_size
    assert first.detail["pinned"] is True
    assert len(first.detail["sha256"]) == 64
    assert store.find(clip.clip_id).exported == 2
    with pytest.raises(StoreError, match="already exists; refusing to overwrite"):
        store.export(clip.clip_id, force_key=force_key, output=out, by="dc")


def test_export_pins_the_registered_device_key(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    generate_device_key(tmp_path / "other.key")
    shutil.copy(tmp_path / "other.pub", store.device_key_path(DEVICE))
    force_key = write_force_key(tmp_path / "force.key", keys)
    with pytest.raises(StoreError, match="not by the pinned key"):
        store.export(clip.clip_id, force_key=force_key, output=tmp_path / "x.ts", by="dc")
    register_device(store, keys)
    wrong_force = write_force_key(tmp_path / "wrong.key", make_keys())
    with pytest.raises(StoreError, match="encrypted to force key"):
        store.export(clip.clip_id, force_key=wrong_force, output=tmp_path / "x.ts", by="dc")
    assert "exported" not in _events(store)


def test_a_reopened_store_sees_the_same_clips(store: DockStore, keys: Keys, tmp_path: Path) -> None:
    clip = receive(store, keys, tmp_path / "camera")
    store.flag(clip.clip_id, reason="complaint", by="sgt")
    again = DockStore(store.root, create=False)
    assert again.clips() == store.clips()


def test_a_damaged_custody_log_stops_the_store_with_one_line(
    store: DockStore, keys: Keys, tmp_path: Path
) -> None:
    receive(store, keys, tmp_path / "camera")
    log = store.root / "custody.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"received"', b'"deleted"'))
    with pytest.raises(StoreError, match=r"custody log is broken: custody.jsonl line 1: hash"):
        DockStore(store.root, create=False)
