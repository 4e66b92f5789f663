"""The outbox: which clips the dock sees, reads by offset, crash-safe deletion."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.daemon.dock.outbox import DELETING_PREFIX, Outbox, OutboxClip, finish_deletions
from bodycam.daemon.evidence.journal import JOURNAL_NAME
from bodycam.daemon.evidence.manifest import MANIFEST_NAME, SIGNATURE_NAME
from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.messages import FileKind
from tests.unit.evidence_helpers import START, Keys, WrittenClip, write_clip


def _write(clips_dir: Path, keys: Keys, n: int, *, close: bool = True) -> WrittenClip:
    # A minute apart, so the listing order (oldest first) is known.
    return write_clip(
        clips_dir,
        keys,
        segments=3,
        records=4,
        seed=n,
        close=close,
        started=START + dt.timedelta(minutes=n),
    )


@pytest.fixture
def clips_dir(tmp_path: Path) -> Path:
    path = tmp_path / "clips"
    path.mkdir()
    return path


@pytest.fixture
def outbox(clips_dir: Path) -> Iterator[Outbox]:
    box = Outbox(clips_dir)
    yield box
    box.close()


def _read_all(outbox: Outbox, clip_id: bytes, kind: FileKind, index: int, chunk: int) -> bytes:
    data = bytearray()
    while True:
        part, size = outbox.read(clip_id, kind, index, len(data), chunk)
        data += part
        if len(data) >= size:
            assert len(data) == size
            return bytes(data)
        assert part, "a read before the end returned nothing"


def _code(info: pytest.ExceptionInfo[ProtocolError]) -> ErrorCode:
    return info.value.code


def test_only_finished_clips_are_listed_oldest_first(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    second = _write(clips_dir, keys, 2)
    first = _write(clips_dir, keys, 1)
    recording = _write(clips_dir, keys, 3, close=False)  # no manifest yet
    (clips_dir / "not-a-clip").mkdir()
    (clips_dir / "stray.txt").write_text("x", encoding="utf-8")
    listed = outbox.refresh()
    assert [c.clip_id.hex() for c in listed] == [first.clip_id, second.clip_id]
    assert recording.clip_id not in {c.clip_id.hex() for c in listed}
    with pytest.raises(ProtocolError) as info:
        outbox.get(bytes.fromhex(recording.clip_id))
    assert _code(info) == ErrorCode.NO_SUCH_CLIP


def test_clip_with_an_unparseable_manifest_is_not_offered(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    good = _write(clips_dir, keys, 1)
    broken = _write(clips_dir, keys, 2)
    (broken.directory / MANIFEST_NAME).write_bytes(b'{"clip_id": "truncated')
    assert [c.clip_id.hex() for c in outbox.refresh()] == [good.clip_id]
    assert broken.directory.is_dir()  # kept on the card, never deleted


@pytest.mark.parametrize("extra", ["seg-000003.bcs", "seg-000003.bcs.part"])
def test_clip_holding_a_segment_its_manifest_does_not_list_is_not_offered(
    clips_dir: Path, outbox: Outbox, keys: Keys, extra: str
) -> None:
    # The dock would get only the listed files, find them good and COMMIT: the delete would
    # take the unlisted file with it, though no signature vouches for it.
    good = _write(clips_dir, keys, 1)
    added = _write(clips_dir, keys, 2)
    shutil.copyfile(added.directory / "seg-000000.bcs", added.directory / extra)
    assert [c.clip_id.hex() for c in outbox.refresh()] == [good.clip_id]
    assert (added.directory / extra).is_file()  # kept on the card, never deleted


def test_entry_describes_the_files_on_the_card(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    clip = _write(clips_dir, keys, 1)
    (listed,) = outbox.refresh()
    directory = clip.directory
    manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
    manifest = json.loads(manifest_bytes)
    entry = listed.entry
    assert entry.clip_id == bytes.fromhex(clip.clip_id)
    assert entry.name == directory.name
    assert entry.started_utc_us == int(START.timestamp() + 60) * 1_000_000
    assert entry.segments == 3
    assert entry.manifest_size == len(manifest_bytes)
    assert entry.manifest_sha256 == hashlib.sha256(manifest_bytes).digest()
    assert entry.signature_size == (directory / SIGNATURE_NAME).stat().st_size == 64
    assert entry.journal_size == (directory / JOURNAL_NAME).stat().st_size > 0
    names = tuple(s["name"] for s in manifest["segments"])
    assert listed.segment_names == names
    assert entry.total_bytes == sum((directory / n).stat().st_size for n in names)
    assert entry.chain_head == listed.chain_head == bytes.fromhex(manifest["chain_head"])
    assert listed.directory == directory


def test_pages_cover_every_clip_once(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    clips = [_write(clips_dir, keys, n) for n in range(5)]
    seen: list[str] = []
    entries, cursor, total = outbox.page(0, 2)
    seen += [e.clip_id.hex() for e in entries]
    assert (len(entries), cursor, total) == (2, 2, 5)
    while cursor:
        entries, cursor, total = outbox.page(cursor, 2)
        seen += [e.clip_id.hex() for e in entries]
        assert total == 5
    assert seen == [c.clip_id for c in clips]
    assert outbox.page(7, 2) == ([], 0, 5)


def test_page_zero_takes_a_fresh_snapshot(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    _write(clips_dir, keys, 1)
    assert outbox.page(0, 64)[2] == 1
    _write(clips_dir, keys, 2)
    assert outbox.page(0, 64)[2] == 2


def test_reads_return_the_exact_bytes_of_every_file(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    clip = _write(clips_dir, keys, 1)
    (listed,) = outbox.refresh()
    cid = listed.clip_id
    directory = clip.directory
    assert (
        _read_all(outbox, cid, FileKind.MANIFEST, 0, 500)
        == (directory / MANIFEST_NAME).read_bytes()
    )
    assert (
        _read_all(outbox, cid, FileKind.SIGNATURE, 0, 1000)
        == (directory / SIGNATURE_NAME).read_bytes()
    )
    assert (
        _read_all(outbox, cid, FileKind.JOURNAL, 7, 333) == (directory / JOURNAL_NAME).read_bytes()
    )
    for index, name in enumerate(listed.segment_names):
        assert (
            _read_all(outbox, cid, FileKind.SEGMENT, index, 1024) == (directory / name).read_bytes()
        )


def test_read_in_the_middle_and_at_the_end(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    clip = _write(clips_dir, keys, 1)
    (listed,) = outbox.refresh()
    segment = (clip.directory / listed.segment_names[1]).read_bytes()
    size = len(segment)
    data, reported = outbox.read(listed.clip_id, FileKind.SEGMENT, 1, 100, 50)
    assert (data, reported) == (segment[100:150], size)
    # Fewer bytes than asked at the end, none exactly at the end.
    assert outbox.read(listed.clip_id, FileKind.SEGMENT, 1, size - 10, 4096) == (
        segment[-10:],
        size,
    )
    assert outbox.read(listed.clip_id, FileKind.SEGMENT, 1, size, 4096) == (b"", size)


def test_read_beyond_the_end_is_bad_range(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    _write(clips_dir, keys, 1)
    (listed,) = outbox.refresh()
    size = listed.entry.manifest_size
    for offset in (size + 1, 2**40):
        with pytest.raises(ProtocolError) as info:
            outbox.read(listed.clip_id, FileKind.MANIFEST, 0, offset, 10)
        assert _code(info) == ErrorCode.BAD_RANGE


def test_unknown_clip_and_missing_files(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    clip = _write(clips_dir, keys, 1)
    (listed,) = outbox.refresh()
    with pytest.raises(ProtocolError) as info:
        outbox.read(bytes(16), FileKind.MANIFEST, 0, 0, 10)
    assert _code(info) == ErrorCode.NO_SUCH_CLIP
    for index in (3, 2**32 - 1):
        with pytest.raises(ProtocolError) as info:
            outbox.read(listed.clip_id, FileKind.SEGMENT, index, 0, 10)
        assert _code(info) == ErrorCode.NO_SUCH_FILE
    (clip.directory / JOURNAL_NAME).unlink()
    with pytest.raises(ProtocolError) as info:
        outbox.read(listed.clip_id, FileKind.JOURNAL, 0, 0, 10)
    assert _code(info) == ErrorCode.NO_SUCH_FILE


def test_clip_written_after_the_snapshot_is_unknown_until_the_next_list(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    outbox.refresh()
    late = _write(clips_dir, keys, 1)
    with pytest.raises(ProtocolError) as info:
        outbox.read(bytes.fromhex(late.clip_id), FileKind.MANIFEST, 0, 0, 10)
    assert _code(info) == ErrorCode.NO_SUCH_CLIP
    outbox.page(0, 64)
    assert outbox.read(bytes.fromhex(late.clip_id), FileKind.SIGNATURE, 0, 0, 64)[1] == 64


def test_delete_removes_only_that_clip(clips_dir: Path, outbox: Outbox, keys: Keys) -> None:
    doomed = _write(clips_dir, keys, 1)
    kept = _write(clips_dir, keys, 2)
    listed = outbox.refresh()
    target: OutboxClip = listed[0]
    # A file of the clip is open for reading when the COMMIT arrives.
    outbox.read(target.clip_id, FileKind.SEGMENT, 0, 0, 10)
    outbox.delete(target)
    assert not doomed.directory.exists()
    assert kept.directory.is_dir()
    assert [p.name for p in clips_dir.iterdir()] == [kept.directory.name]
    assert target.clip_id in outbox.deleted
    with pytest.raises(ProtocolError) as info:
        outbox.get(target.clip_id)
    assert _code(info) == ErrorCode.NO_SUCH_CLIP
    assert [c.clip_id.hex() for c in outbox.refresh()] == [kept.clip_id]


def test_interrupted_deletion_is_never_listed_and_is_finished(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    half_deleted = _write(clips_dir, keys, 1)
    kept = _write(clips_dir, keys, 2)
    # The power failed between the rename and the removal.
    hidden = clips_dir / (DELETING_PREFIX + half_deleted.directory.name)
    half_deleted.directory.rename(hidden)
    assert [c.clip_id.hex() for c in outbox.refresh()] == [kept.clip_id]
    assert finish_deletions(clips_dir) == 1
    assert not hidden.exists()
    assert kept.directory.is_dir()
    assert [c.clip_id.hex() for c in outbox.refresh()] == [kept.clip_id]
    assert finish_deletions(clips_dir) == 0


def test_finish_deletions_leaves_everything_else(clips_dir: Path, keys: Keys) -> None:
    kept = _write(clips_dir, keys, 1)
    recording = _write(clips_dir, keys, 2, close=False)
    for n in range(2):
        shutil.copytree(kept.directory, clips_dir / f"{DELETING_PREFIX}{n}")
    assert finish_deletions(clips_dir) == 2
    assert sorted(p.name for p in clips_dir.iterdir()) == sorted(
        [kept.directory.name, recording.directory.name]
    )
    assert finish_deletions(clips_dir.parent / "no-such-dir") == 0


def test_list_page_over_a_committed_clip_does_not_crash(
    clips_dir: Path, outbox: Outbox, keys: Keys
) -> None:
    for n in range(3):
        _write(clips_dir, keys, n)
    outbox.page(0, 1)
    entries, _, _ = outbox.page(1, 1)
    outbox.delete(outbox.get(entries[0].clip_id))
    page: list[bytes] = []
    with contextlib.suppress(ProtocolError):  # refusing is fine; crashing is not
        page = [e.clip_id for e in outbox.page(1, 1)[0]]
    assert entries[0].clip_id not in page
