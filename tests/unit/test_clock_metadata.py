"""Every clip records who set the clock its times rest on (the manifest's ``clock_source``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bodycam.daemon.dock.hooks import DeviceDockHooks
from bodycam.daemon.dock.session import TimeChange
from bodycam.daemon.evidence import ClipWriter, EvidenceError, verify_clip
from bodycam.daemon.evidence.journal import JOURNAL_NAME, read_journal
from bodycam.daemon.evidence.manifest import MANIFEST_NAME, load_manifest
from bodycam.daemon.evidence.recovery import recover_clips
from bodycam.daemon.evidence.schema import ClockSource, parse_manifest
from bodycam.daemon.recorder import ClipFinished
from bodycam.daemon.status import DeviceStatus
from bodycam.drivers.interfaces import Board
from bodycam.sim.clock import SimClock
from tests.unit.evidence_helpers import (
    END,
    FIRST_TIMESTAMP_US,
    START,
    Keys,
    clip_info,
    random_chunks,
    write_clip,
    write_segment,
)
from tests.unit.test_recorder import FPS, Harness, stream

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
PROVISIONAL = ClockSource(
    status="provisional",
    set_by="dock-a",
    confirmed_by=None,
    corrected_by="dock-a",
    offset_s=-12.5,
    corrections=1,
)


class Camera:
    """A recorder wired to the dock hooks as the device wires them, on an unset clock."""

    def __init__(self, tmp: Path, keys: Keys) -> None:
        self.h = Harness(tmp, keys, gop=30, clock=SimClock(clock_set=False))
        board = cast(Board, SimpleNamespace(clock=self.h.clock))
        status = DeviceStatus(device_id="TEST", firmware="test")
        self.hooks = DeviceDockHooks(
            board, self.h.recorder, status, tmp / "state", self.h.clips, on_clock_set=lambda: None
        )
        self._next_frame = 0

    def dock_sets(self, dock_id: str, utc: dt.datetime) -> TimeChange:
        """A TIME_SET in the order the camera session applies it: check, set, record."""
        trust = self.hooks.clock_trust
        decision = trust.check(
            dock_id=dock_id,
            not_before_s=int(NOW.timestamp()) - 86_400,
            not_after_s=int(NOW.timestamp()) + 86_400,
            utc=utc,
            now=self.hooks.utc_now(),
            clock_is_set=self.hooks.clock_is_set(),
        )
        change = self.hooks.set_time(utc)
        trust.applied(decision, change.offset_s)
        return change

    async def record_clip(self) -> dict[str, Any]:
        """Record a short clip (1 s of pre-event, 1 s live); return its manifest as JSON."""
        frames = stream(FPS * 2, gop=30, start=self._next_frame)
        self._next_frame += len(frames)
        self.h.closed.clear()
        for frame in frames[:FPS]:
            self.h.recorder.on_frame(frame)
        self.h.recorder.open_clip("button", frames[FPS].timestamp_us / 1e6)
        for frame in frames[FPS:]:
            self.h.recorder.on_frame(frame)
        self.h.recorder.close_clip("button")
        async with asyncio.timeout(30):
            await self.h.closed.wait()
        finished = [n for n in self.h.notices if isinstance(n, ClipFinished)]
        manifest = finished[-1].manifest
        assert manifest is not None
        assert verify_clip(manifest.parent).ok
        parsed: dict[str, Any] = json.loads(manifest.read_bytes())
        return parsed


async def test_each_clip_records_who_set_and_who_confirmed_the_clock(
    tmp_path: Path, keys: Keys
) -> None:
    camera = Camera(tmp_path, keys)
    camera.h.recorder.start()
    try:
        unset = await camera.record_clip()
        assert unset["clock_set"] is False
        assert unset["clock_source"] == {
            "status": "unset",
            "set_by": None,
            "confirmed_by": None,
            "corrected_by": None,
            "offset_s": None,
            "corrections": 0,
        }

        first = camera.dock_sets("dock-a", NOW)
        provisional = await camera.record_clip()
        assert provisional["clock_set"] is True
        assert provisional["clock_source"] == {
            "status": "provisional",
            "set_by": "dock-a",
            "confirmed_by": None,
            "corrected_by": "dock-a",
            "offset_s": first.offset_s,
            "corrections": 1,
        }

        second = camera.dock_sets("dock-b", camera.hooks.utc_now() + dt.timedelta(seconds=30))
        confirmed = await camera.record_clip()
        assert confirmed["clock_source"] == {
            "status": "confirmed",
            "set_by": "dock-a",
            "confirmed_by": "dock-b",
            "corrected_by": "dock-b",
            "offset_s": second.offset_s,
            "corrections": 2,
        }

        third = camera.dock_sets("dock-c", camera.hooks.utc_now() + dt.timedelta(seconds=5))
        corrected = await camera.record_clip()
        assert corrected["clock_source"] == {
            "status": "confirmed",
            "set_by": "dock-a",
            "confirmed_by": "dock-b",
            "corrected_by": "dock-c",
            "offset_s": third.offset_s,
            "corrections": 3,
        }
    finally:
        await camera.h.recorder.aclose()


def test_a_manifest_without_clock_source_parses_verifies_and_keeps_its_bytes(
    tmp_path: Path, keys: Keys
) -> None:
    clip = write_clip(tmp_path / "clips", keys, segments=1)
    data, manifest = load_manifest(clip.directory)
    assert b"clock_source" not in data
    assert b"clock_source" not in (clip.directory / JOURNAL_NAME).read_bytes()
    assert manifest.clock_source is None
    # Evidence already on cards and in stores: re-encoding must give the signed bytes back.
    assert manifest.encode() == data
    assert verify_clip(clip.directory).ok


def _with_source(tmp_path: Path, keys: Keys, source: Any) -> bytes:
    clip = write_clip(tmp_path / "clips", keys, segments=1)
    document = json.loads((clip.directory / MANIFEST_NAME).read_bytes())
    document["clock_source"] = source
    return json.dumps(document).encode()


def _source(**changes: Any) -> dict[str, Any]:
    return PROVISIONAL.model_dump(mode="json") | changes


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("provisional", "clock_source: Input should be an object"),
        (_source(set_by=5), "clock_source.set_by: Input should be a valid string"),
        (_source(set_by="d" * 65), "clock_source.set_by: String should have at most 64"),
        (_source(corrected_by=""), "clock_source.corrected_by: String should have at least 1"),
        (_source(status="sure"), "clock_source.status: Input should be 'unset'"),
        (_source(offset_s="1.0"), "clock_source.offset_s: Input should be a valid number"),
        (_source(corrections=-1), "clock_source.corrections: Input should be greater than"),
        (_source(corrections=True), "clock_source.corrections: Input should be a valid int"),
        (_source(extra=1), "clock_source.extra: Extra inputs are not permitted"),
        (_source(confirmed_by="dock-b"), "confirmed_by given for a provisional clock"),
        (
            _source(status="unset", confirmed_by=None),
            "an unset clock names no dock and no correction",
        ),
        (
            {k: v for k, v in _source().items() if k != "corrections"},
            "clock_source.corrections: Field required",
        ),
    ],
)
def test_a_bad_clock_source_is_one_clear_evidence_error(
    tmp_path: Path, keys: Keys, source: Any, reason: str
) -> None:
    data = _with_source(tmp_path, keys, source)
    with pytest.raises(EvidenceError, match="malformed manifest") as caught:
        parse_manifest(data, source="manifest.json")
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message


def test_clock_source_must_agree_with_clock_set(tmp_path: Path, keys: Keys) -> None:
    unset = ClockSource(
        status="unset",
        set_by=None,
        confirmed_by=None,
        corrected_by=None,
        offset_s=None,
        corrections=0,
    )
    data = _with_source(tmp_path, keys, unset.model_dump(mode="json"))  # clip_info: clock set
    with pytest.raises(EvidenceError, match=r"clock_set is true but clock_source\.status is unset"):
        parse_manifest(data, source="manifest.json")
    # The writer refuses the same contradiction before it creates anything on the card.
    clips = tmp_path / "new"
    with pytest.raises(EvidenceError, match=r"cannot start a clip: .*clock_set is true"):
        ClipWriter.create(
            clips,
            clip_info(),
            started_utc=START,
            signing_key=keys.device,
            force_key=keys.force.public_key(),
            clock_source=unset,
        )
    assert not clips.exists() or not any(clips.iterdir())


def _open_with_source(clips: Path, keys: Keys) -> ClipWriter:
    writer = ClipWriter.create(
        clips,
        clip_info(),
        started_utc=START,
        signing_key=keys.device,
        force_key=keys.force.public_key(),
        clock_source=PROVISIONAL,
    )
    chunks = random_chunks(random.Random(3), 4)
    write_segment(writer, chunks, start_us=FIRST_TIMESTAMP_US)
    return writer


def test_a_recovered_clip_carries_the_same_clock_source_as_a_closed_one(
    tmp_path: Path, keys: Keys
) -> None:
    closed = _open_with_source(tmp_path / "closed", keys)
    closed.close(ended_utc=END, reason="button")
    cut = _open_with_source(tmp_path / "cut", keys)
    assert read_journal(cut.directory / JOURNAL_NAME).open.clip_id == cut.clip_id
    assert read_journal(cut.directory / JOURNAL_NAME).open.clock_source == PROVISIONAL
    cut.abandon()  # the power goes

    reports = recover_clips(tmp_path / "cut", signing_key=keys.device, now_utc=END)
    assert [r.manifest_written for r in reports] == [True]
    _, recovered = load_manifest(cut.directory)
    _, normal = load_manifest(closed.directory)
    assert recovered.recovered is True
    assert recovered.clock_source == normal.clock_source == PROVISIONAL
    assert verify_clip(cut.directory).ok
