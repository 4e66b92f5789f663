"""Bays of one dock process: a fault in one ends its own session and nothing else."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from bodycam.daemon.cli import main as bodycam_main
from bodycam.daemon.dock.auth import create_dock_identity
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.daemon.telemetry import DockTopics, Telemetry
from bodycam.dock import agent as agent_module
from bodycam.dock import cli as dock_cli
from bodycam.dock import report as report_module
from bodycam.dock.agent import ClipOutcome, DockReport
from bodycam.dock.bay import log_task_failure, print_report, run_bay
from bodycam.dock.cli import add_dock_parser, run_dock_command
from bodycam.dock.store import DockStore, StoreError
from bodycam.dock.store_config import StoreConfig
from bodycam.dock.telemetry import DockTelemetry
from tests.unit.evidence_helpers import Keys
from tests.unit.test_dock_agent_bounds import DEVICE, Rig, camera_on_pty, make_rig


class BrokenStore(DockStore):
    """A store whose disk controller fails as the first clip is accepted."""

    def accept(self, device_id: str, clip_id: str, incoming: Path, **detail: Any) -> Path:
        raise RuntimeError("disk controller on fire")


class FakeTelemetry:
    """Records what a DockTelemetry publishes; ``fail`` makes every event raise."""

    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def set_retained(self, topic: str, payload: dict[str, Any]) -> None:
        pass

    def set_state(self, state: dict[str, Any]) -> None:
        pass

    def progress(self, payload: dict[str, Any]) -> None:
        pass

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.events.append((kind, data))


def dock_telemetry(fake: FakeTelemetry) -> DockTelemetry:
    topics = DockTopics("dock-bay-1")
    return DockTelemetry(cast(Telemetry, fake), topics)


@pytest.fixture
def rigs(tmp_path: Path, keys: Keys) -> Iterator[list[Rig]]:
    made = [make_rig(tmp_path / "bay1", keys), make_rig(tmp_path / "bay2", keys)]
    yield made
    for rig in made:
        for outbox in rig.outboxes:
            outbox.close()


async def test_a_store_fault_in_one_bay_leaves_the_other_to_commit(rigs: list[Rig]) -> None:
    bay1, bay2 = rigs
    broken = BrokenStore(bay1.store.root)
    async with (
        camera_on_pty(bay1.camera()) as port1,
        camera_on_pty(bay2.camera()) as port2,
        asyncio.TaskGroup() as tg,
    ):
        first = tg.create_task(run_bay(port1.path, bay1.agent(broken), once=True))
        second = tg.create_task(run_bay(port2.path, bay2.agent(), once=True))
    (failed,) = first.result()
    (served,) = second.result()
    # Bay 1: its session ends with the reason; nothing is committed there.
    assert failed.error == "internal error: RuntimeError: disk controller on fire"
    assert failed.committed == []
    assert bay1.on_camera() == bay1.clip_ids
    # Bay 2: untouched.
    assert served.error is None, served.error
    assert [c.status for c in served.clips] == ["committed", "committed"]
    assert bay2.on_camera() == []


class UnloggedStore(DockStore):
    """A store whose custody log fails just as the first COMMIT is recorded."""

    def mark_committed(self, device_id: str, clip_id: str, **detail: Any) -> None:
        raise StoreError("custody.jsonl: cannot append: No space left on device")


async def test_a_commit_the_store_cannot_log_is_still_reported_and_pulling_stops(
    rigs: list[Rig],
) -> None:
    bay = rigs[0]
    first, second = bay.clip_ids
    async with camera_on_pty(bay.camera()) as port:
        (report,) = await run_bay(port.path, bay.agent(UnloggedStore(bay.store.root)), once=True)
    # The camera deleted the first clip: the report must say committed, not lose it.
    assert {c.clip_id: c.status for c in report.clips} == {first: "committed", second: "skipped"}
    assert "custody log could not record it" in report.clips[0].problems[0]
    assert report.error is not None
    assert "custody log" in report.error
    assert bay.on_camera() == [second]
    assert bay.store.stored_clip_dir(DEVICE, first) is not None  # stored and verified


def test_the_agent_still_exports_the_report_types() -> None:
    # They moved to bodycam.dock.report; the CLI, bays, telemetry and sim import them here.
    for name in ("ClipOutcome", "DockRefused", "DockReport", "Progress"):
        assert getattr(agent_module, name) is getattr(report_module, name)
        assert name in agent_module.__all__
    assert "DockAgent" in agent_module.__all__


class ExplodingStore(DockStore):
    """A store with a bug that is no StoreError at all."""

    def stored_clip_dir(self, device_id: str, clip_id: str) -> Path | None:
        raise KeyError(clip_id)

    def clean_incoming(self, device_id: str, keep: set[str]) -> list[str]:
        raise ZeroDivisionError("bug")


async def test_any_exception_in_a_session_becomes_its_report(rigs: list[Rig]) -> None:
    bay1, bay2 = rigs
    exploding = ExplodingStore(bay1.store.root)
    async with (
        camera_on_pty(bay1.camera()) as port1,
        camera_on_pty(bay2.camera()) as port2,
        asyncio.TaskGroup() as tg,
    ):
        first = tg.create_task(run_bay(port1.path, bay1.agent(exploding), once=True))
        second = tg.create_task(run_bay(port2.path, bay2.agent(), once=True))
    (failed,) = first.result()
    assert failed.error is not None
    assert failed.error.startswith("internal error: ZeroDivisionError")
    assert bay1.on_camera() == bay1.clip_ids
    assert [c.status for c in second.result()[0].clips] == ["committed", "committed"]


async def test_a_port_that_cannot_be_opened_is_a_report(rigs: list[Rig], tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyACM9")
    (report,) = await run_bay(missing, rigs[0].agent(), once=True)
    assert report.port == missing
    assert report.error is not None
    assert "no such port" in report.error
    assert not report.authenticated


async def test_a_failing_telemetry_costs_no_session(rigs: list[Rig]) -> None:
    fake = FakeTelemetry(fail=True)
    async with camera_on_pty(rigs[0].camera()) as port:
        (report,) = await run_bay(
            port.path, rigs[0].agent(), once=True, telemetry=dock_telemetry(fake)
        )
    assert report.error is None, report.error
    assert [c.status for c in report.committed] == ["committed", "committed"]


def test_a_conflict_and_a_refusal_are_published_as_alerts() -> None:
    fake = FakeTelemetry()
    report = DockReport(port="/dev/ttyACM0", device_id=DEVICE, authenticated=True)
    report.clips = [
        ClipOutcome("aa" * 16, "clip-a", "committed", conflict_with=["BODYCAM-ROGUE-0002"]),
        ClipOutcome("bb" * 16, "'../x'", "refused", problems=["invalid clip name '../x'"]),
    ]
    dock_telemetry(fake).finished("/dev/ttyACM0", report)
    kinds = [kind for kind, _ in fake.events]
    assert kinds == ["clip_id_conflict", "verification_failed", "offload_done"]
    assert fake.events[0][1]["other_devices"] == ["BODYCAM-ROGUE-0002"]
    assert fake.events[2][1]["conflicts"] == 1


async def test_a_failed_watch_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> list[DockReport]:
        raise RuntimeError("bay exploded")

    task = asyncio.create_task(boom(), name="/dev/bodycam/X1")
    task.add_done_callback(log_task_failure)
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
    assert any("/dev/bodycam/X1 failed: bay exploded" in r.getMessage() for r in caplog.records)


def test_camera_text_is_printed_without_control_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = DockReport(port="/dev/ttyACM0", device_id=DEVICE, authenticated=True)
    report.clips = [ClipOutcome("aa" * 16, "x", "rejected", problems=["evil\x1b[2J\x07 text"])]
    report.error = "camera said \x1b]0;owned\x07"
    print_report(report)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "evil?[2J? text" in out


def dock_credentials(tmp_path: Path) -> Path:
    authority = tmp_path / "force" / "authority.key"
    generate_device_key(authority)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    create_dock_identity(credentials, "dock-bay-1", authority, days=30, now=dt.datetime.now(dt.UTC))
    return credentials


def test_dock_once_on_a_missing_port_exits_1_with_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = dock_credentials(tmp_path)
    DockStore.init(tmp_path / "store", StoreConfig(retention_days=45))
    parser = argparse.ArgumentParser()
    add_dock_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "dock",
            "--port",
            str(tmp_path / "ttyACM7"),
            "--store",
            str(tmp_path / "store"),
            "--credentials",
            str(credentials),
            "--once",
        ]
    )
    assert run_dock_command(args) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'ttyACM7'}: unknown camera: refused:" in out
    # The store's own settings stand: the dock neither re-creates nor rewrites them.
    assert DockStore(tmp_path / "store", create=False).retention_days == 45


@pytest.mark.parametrize("made", ["missing", "empty directory"])
def test_dock_without_a_store_is_one_line_and_opens_no_port(
    tmp_path: Path,
    made: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = dock_credentials(tmp_path)
    store = tmp_path / "var-lib-bodycam-dock"  # a mistyped --store, or `store init` skipped
    if made == "empty directory":
        store.mkdir()
    opened: list[str] = []

    async def fake_run_bay(path: str, *args: object, **kwargs: object) -> list[DockReport]:
        opened.append(path)
        return []

    monkeypatch.setattr(dock_cli, "run_bay", fake_run_bay)
    port = str(tmp_path / "ttyACM0")
    argv = ["dock", "--port", port, "--store", str(store), "--credentials", str(credentials)]
    assert bodycam_main([*argv, "--once"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"bodycam: error: {store}: not a dock store (no custody.jsonl); "
        f"create one with: bodycam store init --store {store}\n"
    )
    assert opened == []
    # Nothing was made in its place: not the directory, not a file in it.
    if made == "empty directory":
        assert list(store.iterdir()) == []
    else:
        assert not store.exists()
    # Once the store exists, the same command gets as far as its bays.
    DockStore.init(store, StoreConfig())
    assert bodycam_main([*argv, "--once"]) == 0
    assert opened == [port]
