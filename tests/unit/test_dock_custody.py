"""The custody log: byte-exact lines, a chain that names any damage, power-cut tolerance."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from pathlib import Path

import pytest

from bodycam.dock.custody import GENESIS, CustodyLog, scan_log
from bodycam.dock.store import StoreError

DOC = Path(__file__).resolve().parents[2] / "docs" / "dock-store.md"
CLIP = "00112233445566778899aabbccddeeff"
WHEN = dt.datetime(2026, 11, 22, 18, 30, 0, tzinfo=dt.UTC)


def _fill(path: Path, count: int = 5, *, note: str = "é ✓") -> CustodyLog:
    log = CustodyLog(path)
    for n in range(count):
        event = CustodyLog.EVENTS[n % len(CustodyLog.EVENTS)]
        log.append(
            event,
            clip_id=CLIP,
            device_id="CAM-1",
            utc=WHEN + dt.timedelta(seconds=n),
            n=n,
            note=note,
        )
    return log


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "custody.jsonl"


def test_the_documented_vector_is_what_is_written(path: Path) -> None:
    log = CustodyLog(path)
    log.append(
        "received", clip_id=CLIP, device_id="CAM-1", utc=WHEN, name="20261122T101500Z-00112233"
    )
    log.append("verified", clip_id=CLIP, device_id="CAM-1", utc=WHEN, segments=3, dock_id="bay-1")
    match = re.search(
        r"<!-- custody-vector -->\n```\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL
    )
    assert match is not None, "docs/dock-store.md lost its custody vector"
    assert path.read_bytes() == match.group(1).encode()


def test_lines_hash_as_documented(path: Path) -> None:
    _fill(path)
    prev = GENESIS
    for seq, raw in enumerate(_lines(path), start=1):
        assert raw.endswith(b"\n")
        obj = json.loads(raw)
        assert raw[:-1] == json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        stated = obj.pop("hash")
        body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert stated == hashlib.sha256(body.encode("utf-8")).hexdigest()
        assert (obj["seq"], obj["prev"]) == (seq, prev)
        prev = stated


def test_chain_verifies_and_appends_survive_a_reopen(path: Path) -> None:
    log = _fill(path, 3)
    assert log.verify() == []
    again = CustodyLog(path)
    assert again.entries() == log.entries()
    assert again.head() == log.head() == log.entries()[-1].hash
    entry = again.append("committed", clip_id=CLIP, device_id="CAM-1")
    assert (entry.seq, entry.prev) == (4, log.entries()[2].hash)
    third = CustodyLog(path)
    assert [e.event for e in third.entries()][-1] == "committed"
    assert third.verify() == []


def test_an_empty_log_has_the_genesis_head_and_creates_nothing(path: Path) -> None:
    log = CustodyLog(path)
    assert (log.entries(), log.head(), log.verify()) == ([], GENESIS, [])
    assert not path.exists()


def test_unknown_event_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="unknown custody event 'viewed'"):
        CustodyLog(path).append("viewed", clip_id=CLIP, device_id="CAM-1")


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def test_editing_any_byte_of_any_line_is_detected_and_named(path: Path) -> None:
    _fill(path, 3)
    original = path.read_bytes()
    log = CustodyLog(path)
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        line = _line_of(original, offset)
        problems = log.verify()
        assert problems, f"byte {offset} (line {line}) edited, not detected"
        assert f"line {line}" in problems[0], (offset, problems)
        with pytest.raises(StoreError, match=f"line {line}"):
            CustodyLog(path)
    path.write_bytes(original)
    assert log.verify() == []


@pytest.mark.parametrize("gone", [1, 3, 5])
def test_deleting_a_line_is_detected_and_named(path: Path, gone: int) -> None:
    _fill(path)
    lines = _lines(path)
    del lines[gone - 1]
    path.write_bytes(b"".join(lines))
    assert any(f"line {gone}" in problem for problem in scan_log(path).problems)
    with pytest.raises(StoreError, match=f"line {gone}"):
        CustodyLog(path)


def test_reordered_lines_are_detected_and_named(path: Path) -> None:
    _fill(path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    problems = scan_log(path).problems
    assert problems[0].startswith("custody.jsonl line 2: seq 3, expected 2")
    assert any("line 3" in problem for problem in problems)
    with pytest.raises(StoreError, match="line 2"):
        CustodyLog(path)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(path: Path) -> None:
    _fill(path)
    lines = _lines(path)
    obj = json.loads(lines[1])
    obj["detail"]["note"] = "nothing to see"
    del obj["hash"]
    obj["hash"] = hashlib.sha256(_canonical(obj)).hexdigest()
    lines[1] = _canonical(obj) + b"\n"
    path.write_bytes(b"".join(lines))
    problems = scan_log(path).problems
    assert problems[0].startswith("custody.jsonl line 3: prev does not match line 2")


def test_truncating_in_the_middle_is_detected_not_taken_for_a_power_cut(path: Path) -> None:
    log = _fill(path)
    data = path.read_bytes()
    middle_of_line_3 = sum(len(line) for line in _lines(path)[:2]) + 40
    path.write_bytes(data[:middle_of_line_3])
    assert "custody.jsonl line 3 is cut short" in log.verify()[0]
    with pytest.raises(StoreError, match="line 3 is cut short"):
        CustodyLog(path)


def test_a_torn_final_line_is_dropped_and_the_log_keeps_working(
    path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(path, 3)
    intact = path.read_bytes()
    # What a power cut during the 4th append leaves: part of the line, no newline.
    _fill(tmp_path / "other.jsonl", 4)
    fourth = _lines(tmp_path / "other.jsonl")[3]
    with path.open("ab") as stream:
        stream.write(fourth[: len(fourth) // 2])
    assert scan_log(path).torn
    assert scan_log(path).problems == []
    with caplog.at_level(logging.WARNING):
        log = CustodyLog(path)
    assert "dropping a torn final line" in caplog.text
    assert path.read_bytes() == intact
    assert len(log.entries()) == 3
    log.append("deleted", clip_id=CLIP, device_id="CAM-1", reason="retention")
    reopened = CustodyLog(path)
    assert [e.seq for e in reopened.entries()] == [1, 2, 3, 4]
    assert reopened.verify() == []


def test_a_torn_line_left_by_another_writer_is_dropped_at_the_next_append(path: Path) -> None:
    log = _fill(path, 2)
    with path.open("ab") as stream:
        stream.write(b'{"clip_id":"0011')
    entry = log.append("flagged", clip_id=CLIP, device_id="CAM-1", reason="court", by="sgt")
    assert entry.seq == 3
    assert CustodyLog(path).verify() == []


def test_two_writers_share_one_chain(path: Path) -> None:
    bay_1, bay_2 = CustodyLog(path), CustodyLog(path)
    for n in range(3):
        bay_1.append("received", clip_id=CLIP, device_id="CAM-1", n=n)
        bay_2.append("received", clip_id=CLIP, device_id="CAM-2", n=n)
    assert [e.seq for e in bay_1.entries()] == list(range(1, 7))
    assert bay_1.entries() == bay_2.entries()
    assert CustodyLog(path).verify() == []


def test_a_missing_head_file_is_reported_and_restored_by_the_next_append(path: Path) -> None:
    log = _fill(path, 2)
    log.head_path.unlink()
    assert "custody.head is missing" in CustodyLog(path).verify()[0]
    log.append("committed", clip_id=CLIP, device_id="CAM-1")
    assert CustodyLog(path).verify() == []


def test_a_log_rewritten_behind_an_open_handle_is_noticed(path: Path, tmp_path: Path) -> None:
    log = _fill(path, 3)
    _fill(tmp_path / "forged.jsonl", 3, note="forged")
    (tmp_path / "forged.jsonl").replace(path)  # same length, other content
    (tmp_path / "forged.head").replace(log.head_path)
    assert "changed since it was read" in log.verify()[0]
    with pytest.raises(StoreError, match="rewritten"):
        log.append("committed", clip_id=CLIP, device_id="CAM-1")


def test_detail_that_is_not_json_is_refused_and_nothing_is_written(path: Path) -> None:
    log = _fill(path, 1)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not a valid custody entry"):
        log.append("flagged", clip_id=CLIP, device_id="CAM-1", reason=object())
    with pytest.raises(ValueError, match="not a valid custody entry"):
        log.append("flagged", clip_id=CLIP, device_id="CAM-1", reason="x" * 70_000)
    assert path.read_bytes() == before


def test_a_reader_repairs_nothing_and_writes_nothing(path: Path, tmp_path: Path) -> None:
    # A power cut left the head record one entry behind and half a line at the end: the
    # owner's next open mends both, but an operator's read-only look must leave every byte
    # (and no new root-owned file) where it was.
    _fill(path, 3)
    behind = path.with_suffix(".head").read_bytes()
    CustodyLog(path).append("deleted", clip_id=CLIP, device_id="CAM-1", reason="retention")
    path.with_suffix(".head").write_bytes(behind)
    _fill(tmp_path / "other.jsonl", 5)
    with path.open("ab") as stream:
        stream.write(_lines(tmp_path / "other.jsonl")[4][:20])
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    reader = CustodyLog(path, read_only=True)
    assert [e.seq for e in reader.entries()] == [1, 2, 3, 4]
    with pytest.raises(StoreError, match="read-only"):
        reader.append("deleted", clip_id=CLIP, device_id="CAM-1", reason="retention")
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    CustodyLog(path)  # the owner's open mends them
    assert path.with_suffix(".head").read_bytes() != behind
