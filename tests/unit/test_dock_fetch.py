"""Incoming files are never written through what someone planted in the dock's ``incoming/``.

Someone on the dock host with write access to the store can put a symbolic link (or a FIFO,
or a second hard link) where the dock is about to write an incoming file. Each test plants
one, docks an honest camera, and asserts: the file outside the store is untouched, that clip
alone is rejected (quarantined with the planted entry, left on the camera), the other clip
commits, and the next docking takes everything cleanly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bodycam.daemon.evidence.manifest import MANIFEST_NAME
from bodycam.daemon.evidence.segfile import SEGMENT_RE
from bodycam.daemon.evidence.store import list_clips
from bodycam.dock.fetch import UnsafeTarget, open_incoming
from tests.unit.evidence_helpers import Keys
from tests.unit.test_dock_agent_bounds import DEVICE, Rig, dock, make_rig, statuses

OUTSIDE = b"the dock host's own file: must never be written by a docking\n"


@pytest.fixture
def rig(tmp_path: Path, keys: Keys) -> Iterator[Rig]:
    made = make_rig(tmp_path, keys)
    yield made
    for outbox in made.outboxes:
        outbox.close()


def outside_file(rig: Rig) -> Path:
    """A file outside the store that a planted link points to."""
    target = rig.root / "outside" / "victim.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(OUTSIDE)
    return target


def first_clip(rig: Rig) -> tuple[str, Path]:
    """The first clip's id and its directory on the camera."""
    (summary,) = [c for c in list_clips(rig.clips_dir) if c.clip_id == rig.clip_ids[0]]
    return summary.clip_id, summary.directory


def first_segment(camera_dir: Path) -> str:
    return min(p.name for p in camera_dir.iterdir() if SEGMENT_RE.match(p.name))


Plant = Callable[[Path, Path, Path], None]  # (incoming clip dir, camera's clip dir, victim)


def link_manifest(incoming: Path, camera_dir: Path, victim: Path) -> None:
    (incoming / MANIFEST_NAME).symlink_to(victim)


def link_segment(incoming: Path, camera_dir: Path, victim: Path) -> None:
    (incoming / first_segment(camera_dir)).symlink_to(victim)


def link_clip_directory(incoming: Path, camera_dir: Path, victim: Path) -> None:
    """The incoming clip directory itself replaced by a link to the outside directory."""
    incoming.rmdir()
    incoming.symlink_to(victim.parent, target_is_directory=True)


PLANTS: dict[str, Plant] = {
    "manifest": link_manifest,
    "segment": link_segment,
    "clip directory": link_clip_directory,
}


@pytest.mark.parametrize("where", sorted(PLANTS))
async def test_a_planted_link_is_never_written_through(rig: Rig, where: str) -> None:
    victim = outside_file(rig)
    before = victim.stat()
    clip_id, camera_dir = first_clip(rig)
    incoming = rig.store.incoming_dir(DEVICE, camera_dir.name)
    PLANTS[where](incoming, camera_dir, victim)

    report = await dock(rig.camera(), rig.agent())

    # Nothing outside the store was written, or even created beside the victim.
    assert victim.read_bytes() == OUTSIDE
    assert victim.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]
    # That clip alone failed, with the reason; the session and the other clip went on.
    assert report.error is None, report.error
    other = rig.clip_ids[1]
    assert statuses(report) == {clip_id: "rejected", other: "committed"}
    (failed,) = [c for c in report.clips if c.clip_id == clip_id]
    assert "not written" in failed.problems[0], failed.problems
    assert rig.on_camera() == [clip_id]  # never COMMITted: the camera keeps it
    assert [e["clip_id"] for e in rig.events("rejected")] == [clip_id]
    # The planted entry is kept for investigation, out of the way of the next transfer.
    (kept,) = (rig.store.root / "quarantine" / DEVICE).iterdir()
    assert kept.name.startswith(camera_dir.name)
    assert not incoming.is_symlink()
    assert not incoming.exists()

    again = await dock(rig.camera(), rig.agent())
    assert again.error is None, again.error
    assert statuses(again) == {clip_id: "committed"}
    assert rig.on_camera() == []
    stored = rig.store.stored_clip_dir(DEVICE, clip_id)
    assert stored is not None
    assert not any(p.is_symlink() for p in stored.iterdir())
    assert victim.read_bytes() == OUTSIDE


# ----- open_incoming on its own ----------------------------------------------------------


def test_open_incoming_creates_a_private_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "seg-000000.bcs"
    fd = open_incoming(path)
    try:
        os.write(fd, b"data")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o600
    fd = open_incoming(path)  # a resumed transfer opens its own file again
    os.close(fd)


def make_symlink(path: Path, victim: Path) -> None:
    path.symlink_to(victim)


def make_dangling_symlink(path: Path, victim: Path) -> None:
    path.symlink_to(victim.parent / "not-yet-there")


def make_fifo(path: Path, victim: Path) -> None:
    os.mkfifo(path)


def make_hard_link(path: Path, victim: Path) -> None:
    os.link(victim, path)


def make_directory(path: Path, victim: Path) -> None:
    path.mkdir()


UNSAFE = {
    "symlink": make_symlink,
    "dangling symlink": make_dangling_symlink,
    "fifo": make_fifo,
    "hard link": make_hard_link,
    "directory": make_directory,
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_open_incoming_refuses_what_is_not_its_own_file(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(OUTSIDE)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    path = incoming / "manifest.json"
    UNSAFE[kind](path, victim)
    with pytest.raises(UnsafeTarget, match="in the incoming directory; not written"):
        open_incoming(path)
    assert victim.read_bytes() == OUTSIDE
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]


def test_open_incoming_refuses_a_linked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "incoming").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeTarget, match="symbolic link or no directory; not written"):
        open_incoming(tmp_path / "incoming" / "manifest.json")
    assert list(outside.iterdir()) == []


def test_open_incoming_passes_other_failures_on(tmp_path: Path) -> None:
    # A missing directory is the store's problem, not a planted link: an OSError as before.
    with pytest.raises(OSError) as caught:
        open_incoming(tmp_path / "gone" / "manifest.json")
    assert not isinstance(caught.value, UnsafeTarget)
