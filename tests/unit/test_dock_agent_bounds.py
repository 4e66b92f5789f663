"""The dock agent against a camera that lies: every claim bounded, every fault kept to one clip.

The honest side is the camera's own session (``CameraSession`` over an ``Outbox`` of real
signed clips) behind a ``Responder`` on a pseudo-terminal; a lying camera is the same
session with one reply edited. Each test asserts what the dock stored, what it committed
(what the camera deleted) and what it logged in custody.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.dock.auth import DockIdentity, issue_dock_certificate
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.policy import SignedPolicy
from bodycam.daemon.dock.session import AuthLimiter, CameraIdentity, CameraSession, TimeChange
from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock import fetch, limits
from bodycam.dock.agent import DockAgent, DockReport
from bodycam.dock.store import DockStore
from bodycam.drivers.interfaces import ByteLink, LinkClosedError
from bodycam.drivers.link.endpoint import Responder, SessionEnded
from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.messages import (
    Bye,
    ByeAck,
    ClipEntry,
    Data,
    FileKind,
    ListClips,
    ListReply,
    Message,
    Read,
    Status,
    TimeSet,
)
from bodycam.drivers.serial_link import FdLink, open_pty_pair, open_serial
from tests.unit.dock_helpers import register_device
from tests.unit.evidence_helpers import START, Keys, write_clip

DEVICE = "BODYCAM-TEST-0001"
STATUS = Status(
    state="docked",
    battery_percent=80,
    charging=True,
    storage_total=1 << 30,
    storage_free=1 << 29,
    clips=2,
    clock_set=True,
    firmware="bodycam-test",
)


@dataclass
class Hooks:
    """The running camera as a session sees it (CameraHooks)."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    deleted: list[str] = field(default_factory=list)

    def set_time(self, utc: dt.datetime) -> TimeChange:
        change = TimeChange(self.now, (utc - self.now).total_seconds(), True)
        self.now = utc
        return change

    def clock_is_set(self) -> bool:
        return True

    def utc_now(self) -> dt.datetime:
        return self.now

    def apply_policy(self, signed: SignedPolicy) -> bool:
        return True

    def status(self) -> Status:
        return STATUS

    def committed(self, clip_id: str, dock_id: str) -> None:
        self.deleted.append(clip_id)

    async def wait_sealed(self) -> None:
        return None


Edit = Callable[[Message, Message | None], Message | None]


class Camera:
    """A Responder handler: the camera's real session, with an optional lie per message type.

    ``lies[type]`` gets the request and the honest reply (None when ``replace`` skips the
    honest session) and returns what is sent instead; it may raise like a handler.
    """

    def __init__(self, session: CameraSession, hooks: Hooks) -> None:
        self.session = session
        self.hooks = hooks
        self.calls: list[Message] = []
        self.lies: dict[type[Message], Edit] = {}
        self.replace: set[type[Message]] = set()

    async def __call__(self, message: Message) -> Message | None:
        self.calls.append(message)
        kind = type(message)
        reply = None if kind in self.replace else await self.session.handle(message)
        lie = self.lies.get(kind)
        return reply if lie is None else lie(message, reply)

    def reads(self, clip_id: bytes, kind: FileKind | None = None) -> list[Read]:
        return [
            m
            for m in self.calls
            if isinstance(m, Read) and m.clip_id == clip_id and kind in (None, m.kind)
        ]

    def count(self, kind: type[Message]) -> int:
        return sum(1 for m in self.calls if isinstance(m, kind))


@dataclass
class Rig:
    root: Path
    keys: Keys
    authority: Ed25519PrivateKey
    identity: DockIdentity
    store: DockStore
    clips_dir: Path
    clip_ids: list[str]
    outboxes: list[Outbox] = field(default_factory=list)

    def camera(self, device_id: str = DEVICE, clips_dir: Path | None = None) -> Camera:
        outbox = Outbox(clips_dir or self.clips_dir)
        self.outboxes.append(outbox)
        camera_id = CameraIdentity(
            device_id, "test 1.0", self.keys.device, self.authority.public_key()
        )
        hooks = Hooks()
        return Camera(CameraSession(camera_id, outbox, hooks, AuthLimiter()), hooks)

    def agent(self, store: DockStore | None = None) -> DockAgent:
        return DockAgent(store or self.store, self.identity, retry_s=2.0)

    def on_camera(self, clips_dir: Path | None = None) -> list[str]:
        return [c.clip_id for c in list_clips(clips_dir or self.clips_dir)]

    def events(self, kind: str) -> list[dict[str, object]]:
        return [
            {"clip_id": e.clip_id, "device_id": e.device_id, **e.detail}
            for e in self.store.custody.entries()
            if e.event == kind
        ]


def dock_identity(authority: Ed25519PrivateKey, dock_id: str = "dock-bay-1") -> DockIdentity:
    key = Ed25519PrivateKey.generate()
    not_before = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = issue_dock_certificate(
        authority, key.public_key(), dock_id, not_before=not_before, days=30
    )
    return DockIdentity(key, cert)


def make_rig(root: Path, keys: Keys, *, clips: int = 2) -> Rig:
    authority = Ed25519PrivateKey.generate()
    store = DockStore(root / "store", retention_days=31)
    register_device(store, keys, DEVICE)
    clips_dir = root / "camera" / "clips"
    written = [
        write_clip(
            clips_dir,
            keys,
            segments=2,
            records=3,
            seed=n,
            started=START + n * dt.timedelta(minutes=1),
        )
        for n in range(clips)
    ]
    return Rig(
        root,
        keys,
        authority,
        dock_identity(authority),
        store,
        clips_dir,
        [c.clip_id for c in written],
    )


@pytest.fixture
def rig(tmp_path: Path, keys: Keys) -> Iterator[Rig]:
    made = make_rig(tmp_path, keys)
    yield made
    for outbox in made.outboxes:
        outbox.close()


@dataclass
class CameraPort:
    path: str  # what the dock opens
    link: FdLink  # the camera's end


@contextlib.asynccontextmanager
async def camera_on_pty(camera: Camera) -> AsyncIterator[CameraPort]:
    """Serve ``camera`` on a pty's master for the block."""
    pty = open_pty_pair()
    link = FdLink(pty.master_fd, "camera")
    task = asyncio.create_task(Responder(link, camera).run(), name="test-camera")
    try:
        yield CameraPort(pty.slave_path, link)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, LinkClosedError):
            await task
        link.close()
        os.close(pty.slave_fd)


async def dock(camera: Camera, agent: DockAgent) -> DockReport:
    """One docking: the agent serves the camera over a pseudo-terminal."""
    async with camera_on_pty(camera) as port:
        link: ByteLink = open_serial(port.path)
        try:
            return await agent.serve(link)
        finally:
            link.close()


def statuses(report: DockReport) -> dict[str, str]:
    return {c.clip_id: c.status for c in report.clips}


def listing_edit(change: Callable[[list[ClipEntry]], list[ClipEntry]]) -> Edit:
    def edit(request: Message, reply: Message | None) -> Message | None:
        assert isinstance(reply, ListReply)
        return dataclasses.replace(reply, entries=tuple(change(list(reply.entries))))

    return edit


def fake_entry(template: ClipEntry, n: int, **change: object) -> ClipEntry:
    """Another clip the camera claims to hold: a fresh id, otherwise ``template``'s sizes."""
    fields: dict[str, object] = {"clip_id": bytes([0xA0 + n]) * 16, **change}
    return dataclasses.replace(template, **fields)  # type: ignore[arg-type]


# ----- names ---------------------------------------------------------------------------------


BAD_NAMES = ["../../x", "..", "/abs", "kamera-ä", ".hidden", "a/b", ""]


async def test_bad_names_are_refused_and_the_honest_clips_commit(rig: Rig) -> None:
    camera = rig.camera()
    camera.lies[ListClips] = listing_edit(
        lambda entries: (
            entries + [fake_entry(entries[0], n, name=name) for n, name in enumerate(BAD_NAMES)]
        )
    )
    report = await dock(camera, rig.agent())
    assert report.error is None, report.error
    assert [statuses(report)[c] for c in rig.clip_ids] == ["committed", "committed"]
    refused = [c for c in report.clips if c.status == "refused"]
    assert len(refused) == len(BAD_NAMES)
    assert all("invalid clip name" in c.problems[0] for c in refused), refused
    assert rig.on_camera() == []
    # Not one path was built from them: no READ asked, nothing outside the store.
    fakes = {bytes([0xA0 + n]) * 16 for n in range(len(BAD_NAMES))}
    assert not [m for m in camera.calls if isinstance(m, Read) and m.clip_id in fakes]
    assert not (rig.root / "x").exists()
    assert not (rig.root / "store" / "x").exists()
    assert sorted(p.name for p in rig.root.iterdir()) == ["camera", "store"]
    assert len(rig.events("refused")) == len(BAD_NAMES)


async def test_a_bad_device_id_is_refused_before_any_path(rig: Rig, tmp_path: Path) -> None:
    camera = rig.camera(device_id="../../etc")
    report = await dock(camera, rig.agent())
    assert not report.authenticated
    assert report.error is not None
    assert "invalid device id" in report.error
    assert camera.count(ListClips) == 0


# ----- sizes ---------------------------------------------------------------------------------


async def test_a_4_gib_journal_is_refused_unfetched(rig: Rig) -> None:
    camera = rig.camera()
    huge = rig.clip_ids[0]

    def lie(entries: list[ClipEntry]) -> list[ClipEntry]:
        return [
            dataclasses.replace(e, journal_size=0xFFFF_FFFF) if e.clip_id.hex() == huge else e
            for e in entries
        ]

    camera.lies[ListClips] = listing_edit(lie)
    report = await dock(camera, rig.agent())
    assert report.error is None, report.error
    assert statuses(report) == {huge: "refused", rig.clip_ids[1]: "committed"}
    assert f"at most {limits.MAX_JOURNAL_BYTES}" in report.clips[0].problems[0]
    assert camera.reads(bytes.fromhex(huge)) == []  # not one byte asked for
    assert rig.on_camera() == [huge]
    assert [e["clip_id"] for e in rig.events("refused")] == [huge]


@pytest.mark.parametrize(
    "change",
    [
        {"manifest_size": limits.MAX_MANIFEST_BYTES + 1},
        {"manifest_size": 0},
        {"signature_size": 65},
        {"total_bytes": 1 << 62},
        {"segments": limits.MAX_SEGMENTS + 1},
    ],
)
async def test_impossible_listed_sizes_are_refused_unfetched(
    rig: Rig, change: dict[str, int]
) -> None:
    camera = rig.camera()
    first = bytes.fromhex(rig.clip_ids[0])
    camera.lies[ListClips] = listing_edit(
        lambda es: [dataclasses.replace(e, **change) if e.clip_id == first else e for e in es]  # type: ignore[arg-type]
    )
    report = await dock(camera, rig.agent())
    assert statuses(report) == {rig.clip_ids[0]: "refused", rig.clip_ids[1]: "committed"}
    assert camera.reads(first) == []


async def test_a_journal_one_byte_off_rejects_only_that_clip(rig: Rig) -> None:
    camera = rig.camera()
    bad = bytes.fromhex(rig.clip_ids[0])

    def lie(request: Message, reply: Message | None) -> Message | None:
        if isinstance(reply, Data) and reply.clip_id == bad and reply.kind == FileKind.JOURNAL:
            return dataclasses.replace(reply, file_size=reply.file_size + 1)
        return reply

    camera.lies[Read] = lie
    report = await dock(camera, rig.agent())
    assert report.error is None, report.error
    assert statuses(report) == {rig.clip_ids[0]: "rejected", rig.clip_ids[1]: "committed"}
    assert "journal.jsonl" in report.clips[0].problems[0]
    assert camera.reads(bad, FileKind.SEGMENT) == []  # nothing believed after the lie
    assert rig.on_camera() == [rig.clip_ids[0]]
    assert [e["clip_id"] for e in rig.events("rejected")] == [rig.clip_ids[0]]


# ----- listing -------------------------------------------------------------------------------


async def test_an_endless_listing_is_cut_off(rig: Rig) -> None:
    camera = rig.camera()
    camera.replace.add(ListClips)

    def endless(request: Message, reply: Message | None) -> Message:
        assert isinstance(request, ListClips)
        return ListReply(total=1 << 30, next_cursor=request.cursor + 1, entries=())

    camera.lies[ListClips] = endless
    report = await dock(camera, rig.agent())
    assert report.error is not None
    assert "cut off" in report.error
    assert camera.count(ListClips) == limits.MAX_LIST_PAGES
    assert camera.hooks.deleted == []


async def test_a_listing_that_does_not_advance_is_refused(rig: Rig) -> None:
    camera = rig.camera()

    def backwards(request: Message, reply: Message | None) -> Message | None:
        assert isinstance(reply, ListReply)
        assert isinstance(request, ListClips)
        return dataclasses.replace(reply, next_cursor=max(1, request.cursor))

    camera.lies[ListClips] = backwards
    report = await dock(camera, rig.agent())
    assert report.error is not None
    assert "did not advance" in report.error
    assert camera.hooks.deleted == []


async def test_duplicate_clip_ids_are_refused(rig: Rig) -> None:
    camera = rig.camera()
    first = bytes.fromhex(rig.clip_ids[0])
    camera.lies[ListClips] = listing_edit(
        lambda es: (
            es + [dataclasses.replace(e, name=e.name + "-again") for e in es if e.clip_id == first]
        )
    )
    report = await dock(camera, rig.agent())
    assert report.error is None, report.error
    outcomes = [(c.clip_id, c.status) for c in report.clips]
    assert outcomes.count((rig.clip_ids[0], "refused")) == 2
    assert (rig.clip_ids[1], "committed") in outcomes
    assert camera.reads(first) == []
    assert rig.on_camera() == [rig.clip_ids[0]]


# ----- identity ------------------------------------------------------------------------------


async def test_a_clip_id_held_for_another_device_is_recorded_and_own_copy_committed(
    rig: Rig,
) -> None:
    # Camera B re-signed A's clip and docked first: the store holds it under B.
    other = "BODYCAM-ROGUE-0002"
    first = rig.clip_ids[0]
    incoming = rig.store.incoming_dir(other, "forged")
    shutil.copytree(
        rig.clips_dir / list_clips(rig.clips_dir)[0].directory.name, incoming, dirs_exist_ok=True
    )
    rig.store.accept(other, first, incoming, dock_id="dock-test")
    report = await dock(rig.camera(), rig.agent())
    assert report.error is None, report.error
    assert statuses(report) == {first: "committed", rig.clip_ids[1]: "committed"}
    assert report.conflicts[0].conflict_with == [other]
    conflicts = rig.events("clip_id_conflict")
    assert [c["clip_id"] for c in conflicts] == [first]
    assert set(cast(list[str], conflicts[0]["devices"])) == {DEVICE, other}
    own = rig.store.stored_clip_dir(DEVICE, first)
    assert own is not None
    assert own.parent.name == DEVICE
    assert verify_clip(own, device_key=rig.keys.device.public_key()).ok
    assert rig.store.is_committed(DEVICE, first)
    assert not rig.store.is_committed(other, first)


class MisfiledStore(DockStore):
    """A store whose record of this camera's clip points at another camera's copy."""

    def __init__(self, root: Path, *, misfiled: tuple[str, str], owner: str) -> None:
        super().__init__(root)
        self.misfiled = misfiled  # (device id, clip id) answered with owner's copy
        self.owner = owner

    def stored_clip_dir(self, device_id: str, clip_id: str) -> Path | None:
        if (device_id, clip_id) == self.misfiled:
            return super().stored_clip_dir(self.owner, clip_id)
        return super().stored_clip_dir(device_id, clip_id)


async def test_a_copy_not_stored_under_the_cameras_own_id_is_never_committed(rig: Rig) -> None:
    # The same bytes, verified with this camera's key and with the listed chain head, but
    # filed under another camera: only a copy under this camera's own id may delete its clip.
    other = "BODYCAM-ROGUE-0002"
    first, second = rig.clip_ids
    incoming = rig.store.incoming_dir(other, "forged")
    shutil.copytree(
        rig.clips_dir / list_clips(rig.clips_dir)[0].directory.name, incoming, dirs_exist_ok=True
    )
    rig.store.accept(other, first, incoming, dock_id="dock-test")
    store = MisfiledStore(rig.store.root, misfiled=(DEVICE, first), owner=other)
    camera = rig.camera()
    report = await dock(camera, rig.agent(store))
    assert report.error is None, report.error
    assert statuses(report) == {first: "rejected", second: "committed"}
    assert "not under this camera's id" in report.clips[0].problems[0]
    assert rig.on_camera() == [first]
    assert first not in camera.hooks.deleted


# ----- time ----------------------------------------------------------------------------------


async def test_a_refused_time_set_is_recorded_and_the_session_goes_on(rig: Rig) -> None:
    camera = rig.camera()

    def refuse(request: Message, reply: Message | None) -> Message | None:
        raise ProtocolError(ErrorCode.BAD_STATE, "correction of 800 days is out of bounds")

    camera.replace.add(TimeSet)
    camera.lies[TimeSet] = refuse
    report = await dock(camera, rig.agent())
    assert report.error is None, report.error
    assert report.clock_refused is not None
    assert "out of bounds" in report.clock_refused
    assert report.clock_offset_s is None
    assert [c.status for c in report.clips] == ["committed", "committed"]
    (clock,) = rig.events("clock")
    assert "out of bounds" in str(clock["refused"])


async def test_an_accepted_time_set_is_recorded(rig: Rig) -> None:
    report = await dock(rig.camera(), rig.agent())
    assert report.clock_offset_s is not None
    (clock,) = rig.events("clock")
    assert clock["refused"] is None
    assert clock["was_set"] is True


# ----- space ---------------------------------------------------------------------------------


async def test_a_clip_that_cannot_fit_is_refused_and_pulling_stops(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rig.store, "free_bytes", lambda: 1000)
    camera = rig.camera()
    report = await dock(camera, rig.agent())
    first, second = rig.clip_ids
    assert statuses(report) == {first: "refused", second: "skipped"}
    assert report.clips[0].problems[0].startswith("store full: needs ")
    assert report.clips[0].problems[0].endswith(", has 1000 free")
    assert report.error is not None
    assert "store full" in report.error
    assert camera.reads(bytes.fromhex(first)) == [] == camera.reads(bytes.fromhex(second))
    assert rig.on_camera() == [first, second]
    assert [e["clip_id"] for e in rig.events("refused")] == [first]


async def test_enospc_while_writing_ends_the_clip_and_the_session(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fetch.write_chunk
    written: list[int] = []

    def full_disk(fd: int, data: bytes | memoryview, offset: int) -> None:
        if len(written) >= 2:  # the manifest and signature fit; the journal does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(len(data))
        real(fd, data, offset)

    monkeypatch.setattr(fetch, "write_chunk", full_disk)
    report = await dock(rig.camera(), rig.agent())
    assert report.error is not None
    assert "store full" in report.error
    first, second = rig.clip_ids
    assert statuses(report) == {first: "rejected", second: "skipped"}
    assert "no space left on device" in report.clips[0].problems[0]
    assert rig.on_camera() == rig.clip_ids
    # The failed transfer was removed to give the disk back.
    device_incoming = rig.store.root / "incoming" / DEVICE
    assert not device_incoming.exists() or list(device_incoming.iterdir()) == []
    # The disk has room again: the next docking takes everything.
    monkeypatch.setattr(fetch, "write_chunk", real)
    again = await dock(rig.camera(), rig.agent())
    assert again.error is None, again.error
    assert [c.status for c in again.clips] == ["committed", "committed"]


# ----- a clean end ---------------------------------------------------------------------------


async def test_a_lost_bye_reply_is_a_success(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    camera = rig.camera()
    ports: list[CameraPort] = []

    def hang_up(request: Message, reply: Message | None) -> Message | None:
        ports[0].link.close()  # answers BYE and hangs up at once: the reply never leaves
        raise SessionEnded(ByeAck())

    camera.replace.add(Bye)
    camera.lies[Bye] = hang_up
    caplog.set_level(logging.INFO, logger="bodycam.dock.agent")
    async with camera_on_pty(camera) as port:
        ports.append(port)
        link = open_serial(port.path)
        try:
            report = await rig.agent().serve(link)
        finally:
            link.close()
    assert report.error is None, report.error
    assert [c.status for c in report.clips] == ["committed", "committed"]
    assert rig.on_camera() == []
    assert camera.count(Bye) == 1
    assert any("link closed at the end" in r.getMessage() for r in caplog.records)
