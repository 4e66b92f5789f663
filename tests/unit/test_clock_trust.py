"""The clock-trust rule on its own: decisions, the floor, and what survives a restart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from bodycam.daemon.dock.clock_trust import (
    CLOCK_TRUST_FILE,
    MAX_CLOCK_STEP_S,
    ClockRefused,
    ClockStatus,
    ClockTrust,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
YEAR_S = 365 * 86_400
NOT_BEFORE = int(NOW.timestamp()) - 86_400
NOT_AFTER = NOT_BEFORE + YEAR_S


def allow(
    trust: ClockTrust, dock: str, utc: dt.datetime, *, now: dt.datetime, is_set: bool
) -> ClockStatus:
    decision = trust.check(
        dock_id=dock,
        not_before_s=NOT_BEFORE,
        not_after_s=NOT_AFTER,
        utc=utc,
        now=now,
        clock_is_set=is_set,
    )
    trust.applied(decision, (utc - now).total_seconds())
    return decision.status


def test_an_unset_clock_becomes_provisional_then_confirmed_by_another_dock(tmp_path: Path) -> None:
    trust = ClockTrust(tmp_path / CLOCK_TRUST_FILE)
    assert trust.status(False) is ClockStatus.UNSET
    assert allow(trust, "a", NOW, now=NOW - dt.timedelta(days=9), is_set=False) is (
        ClockStatus.PROVISIONAL
    )
    assert trust.certificate_time(NOW, True) is None  # windows are not judged yet
    assert allow(trust, "b", NOW + dt.timedelta(seconds=60), now=NOW, is_set=True) is (
        ClockStatus.CONFIRMED
    )
    assert trust.certificate_time(NOW, True) == NOW
    record = trust.record
    assert (record.set_by, record.confirmed_by, record.offset_s) == ("b", "b", 60.0)


def test_the_record_survives_a_restart_but_not_a_lost_clock(tmp_path: Path) -> None:
    path = tmp_path / CLOCK_TRUST_FILE
    trust = ClockTrust(path)
    allow(trust, "a", NOW, now=NOW, is_set=False)
    allow(trust, "b", NOW, now=NOW, is_set=True)
    again = ClockTrust(path)
    assert again.record == trust.record
    assert again.status(True) is ClockStatus.CONFIRMED
    # After a reboot the clock is unset again: whatever the record says, the next dock's
    # time is only provisional, and it may not go back before the confirmed floor.
    assert again.status(False) is ClockStatus.UNSET
    early = NOW - dt.timedelta(seconds=MAX_CLOCK_STEP_S + 1)
    with pytest.raises(ClockRefused, match="earlier than"):
        again.check(
            dock_id="c",
            not_before_s=NOT_BEFORE,
            not_after_s=NOT_AFTER,
            utc=early,
            now=early,
            clock_is_set=False,
        )


@pytest.mark.parametrize("content", ["{", "[]", '{"status": "sure"}', '{"offset_s": "x"}'])
def test_a_damaged_record_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / CLOCK_TRUST_FILE
    path.write_text(content)
    assert ClockTrust(path).status(True) is ClockStatus.PROVISIONAL


def test_an_unwritable_record_does_not_refuse_the_time(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    trust = ClockTrust(blocker / CLOCK_TRUST_FILE)  # its directory cannot be created
    assert allow(trust, "a", NOW, now=NOW, is_set=False) is ClockStatus.PROVISIONAL
    assert trust.record.set_by == "a"


def test_the_record_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / CLOCK_TRUST_FILE
    allow(ClockTrust(path), "dock-1", NOW, now=NOW, is_set=False)
    assert json.loads(path.read_text()) == {
        "status": "provisional",
        "set_by": "dock-1",
        "confirmed_by": None,
        "offset_s": 0.0,
        "floor_utc_s": None,
        "confirmed_from": None,
    }


def test_the_source_a_clip_records_names_both_docks_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / CLOCK_TRUST_FILE
    trust = ClockTrust(path)
    allow(trust, "a", NOW, now=NOW - dt.timedelta(days=9), is_set=False)
    allow(trust, "b", NOW + dt.timedelta(seconds=60), now=NOW, is_set=True)
    source = trust.source(True)
    assert (source.status, source.set_by, source.confirmed_by, source.corrected_by) == (
        "confirmed",
        "a",
        "b",
        "b",
    )
    assert (source.offset_s, source.corrections) == (60.0, 2)
    # After a restart: the same docks, but no correction since this daemon started...
    again = ClockTrust(path)
    restarted = again.source(True)
    assert (restarted.set_by, restarted.confirmed_by, restarted.corrections) == ("a", "b", 0)
    # ...and a clock that lost its time rests on no dock, whatever the record remembers.
    lost = again.source(False)
    assert (lost.status, lost.set_by, lost.corrected_by, lost.offset_s) == (
        "unset",
        None,
        None,
        None,
    )
    # A new provisional time forgets the old confirmation.
    allow(again, "c", NOW, now=NOW, is_set=False)
    fresh = again.source(True)
    assert (fresh.status, fresh.set_by, fresh.confirmed_by) == ("provisional", "c", None)


def test_a_clock_set_by_no_dock_is_provisional_and_names_none() -> None:
    source = ClockTrust().source(True)
    assert (source.status, source.set_by, source.corrected_by, source.offset_s) == (
        "provisional",
        None,
        None,
        None,
    )


def test_a_damaged_record_still_gives_a_valid_source(tmp_path: Path) -> None:
    path = tmp_path / CLOCK_TRUST_FILE
    path.write_text(
        '{"status": "confirmed", "set_by": "' + "x" * 500 + '", "confirmed_by": "",'
        ' "offset_s": NaN, "confirmed_from": null}'
    )
    source = ClockTrust(path).source(True)  # would raise if a value went through unbounded
    assert source.status == "confirmed"
    assert source.corrected_by == "x" * 64
    assert (source.set_by, source.confirmed_by, source.offset_s) == (None, None, None)
