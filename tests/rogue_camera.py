"""A scripted camera for attacking the dock: real keys, a real session, lies on request.

The camera authenticates for real (a provisioned device key, the force authority's public
key, :class:`CameraSession` for HELLO, AUTH and TIME, :class:`Responder` for the link), so
the dock trusts it exactly as far as it trusts an enrolled camera. Its answers pass through
a chain of *overrides*, small pieces that each rewrite, withhold or delay one kind of reply:

    camera = ScriptedCamera(unit, overrides=[rename_clip(0, "../../x")])

With no overrides it is an honest camera. Each override is ``(message, call_next) -> reply``
(``call_next`` is the rest of the chain, ending in the honest session); the first in the list
sees the request first. ``guard_commits`` is the test's oracle rather than a lie: it checks,
before the camera deletes anything, that the dock really holds the clip verified under the
camera's own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.daemon.dock.auth import create_dock_identity, load_authority_public_key
from bodycam.daemon.dock.outbox import Outbox
from bodycam.daemon.dock.policy import SignedPolicy
from bodycam.daemon.dock.session import AuthLimiter, CameraIdentity, CameraSession, TimeChange
from bodycam.daemon.evidence.keys import fingerprint, generate_device_key, public_key_b64
from bodycam.daemon.evidence.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    load_manifest,
    write_manifest,
)
from bodycam.daemon.evidence.verify import is_clip_dir, verify_clip
from bodycam.drivers.interfaces import LinkClosedError
from bodycam.drivers.link.endpoint import Responder
from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.messages import (
    ClipEntry,
    Commit,
    Data,
    FileKind,
    ListClips,
    ListReply,
    Message,
    Status,
)
from bodycam.drivers.serial_link import FdLink, open_pty_pair
from tests.unit.evidence_helpers import START, Keys, clip_info, write_clip

Handler = Callable[[Message], Awaitable[Message | None]]
Override = Callable[[Message, Handler], Awaitable[Message | None]]

STATUS = Status(
    state="docked",
    battery_percent=80,
    charging=True,
    storage_total=1 << 34,
    storage_free=1 << 33,
    clips=0,
    clock_set=True,
    firmware="rogue-kit",
)


# ----- the force, its docks and its cameras ------------------------------------------------


@dataclass(frozen=True)
class Force:
    """A force's keys: the authority (certifies docks) and the key footage is encrypted to."""

    root: Path
    authority_key: Path  # private; authority.pub beside it goes onto every camera
    encryption: X25519PrivateKey

    @property
    def authority_pub(self) -> Path:
        return self.authority_key.with_suffix(".pub")

    def dock(
        self,
        name: str,
        *,
        dock_id: str = "DOCK-TEST-01",
        days: float = 30.0,
        not_before: dt.datetime | None = None,
    ) -> Path:
        """A certified dock's credentials directory (dock.key, dock.cert)."""
        directory = self.root / name
        directory.mkdir(parents=True)
        create_dock_identity(
            directory,
            dock_id,
            self.authority_key,
            days=days,
            now=not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        )
        return directory

    def camera(self, device_id: str, *, clips: int = 2, records: int = 8, seed: int = 0) -> Unit:
        """An enrolled camera (a device key of its own) holding ``clips`` finished clips."""
        directory = self.root / device_id
        directory.mkdir(parents=True)
        key = generate_device_key(directory / "device.key")
        unit = Unit(device_id, key, directory / "device.pub", directory / "clips", self)
        for n in range(clips):
            unit.record(seed=seed + n, records=records)
        return unit


def make_force(root: Path) -> Force:
    root.mkdir(parents=True, exist_ok=True)
    authority = root / "authority.key"
    generate_device_key(authority)
    return Force(root, authority, X25519PrivateKey.generate())


@dataclass
class Unit:
    """One camera's identity and card."""

    device_id: str
    signing_key: Ed25519PrivateKey
    public_key_path: Path
    clips_dir: Path
    force: Force
    recorded: int = 0

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def record(self, *, seed: int = 0, records: int = 8, segments: int = 2) -> Path:
        """Finish one more signed clip on the card (random bytes, the real evidence format)."""
        keys = Keys(self.signing_key, self.force.encryption)
        started = START + dt.timedelta(minutes=self.recorded)
        self.recorded += 1
        clip = write_clip(
            self.clips_dir,
            keys,
            segments=segments,
            records=records,
            seed=seed,
            info=clip_info(device_id=self.device_id),
            started=started,
        )
        return clip.directory

    def card(self) -> dict[str, Path]:
        """The finished clips still on the card, by clip id (hex)."""
        held: dict[str, Path] = {}
        if self.clips_dir.is_dir():
            for child in sorted(self.clips_dir.iterdir()):
                if is_clip_dir(child) and (child / MANIFEST_NAME).exists():
                    held[load_manifest(child)[1].clip_id] = child
        return held


def forge_copy(original: Path, thief: Unit) -> Path:
    """``thief`` re-signs a copy of another camera's clip as its own.

    Same clip id, same segments, same chain head; the manifest names the thief and carries
    its key and signature, so it verifies against the thief's registered key.
    """
    target = thief.clips_dir / original.name
    thief.clips_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(original, target)
    _, manifest = load_manifest(target)
    key = thief.public_key
    forged = manifest.model_copy(
        update={
            "device_id": thief.device_id,
            "device_public_key": public_key_b64(key),
            "device_key_fingerprint": fingerprint(key),
        }
    )
    (target / MANIFEST_NAME).unlink()
    (target / SIGNATURE_NAME).unlink()
    write_manifest(target, forged, thief.signing_key)
    return target


# ----- the camera ---------------------------------------------------------------------------


@dataclass
class KitHooks:
    """Implements ``CameraHooks``: a docked camera whose clock runs ``offset`` from real time."""

    offset: dt.timedelta = dt.timedelta(0)
    time_sets: list[dt.datetime] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)

    def utc_now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def clock_is_set(self) -> bool:
        return True

    def set_time(self, utc: dt.datetime) -> TimeChange:
        previous = self.utc_now()
        self.time_sets.append(utc)
        self.offset = utc - dt.datetime.now(dt.UTC)
        return TimeChange(previous, (utc - previous).total_seconds(), True)

    def apply_policy(self, signed: SignedPolicy) -> bool:
        return False

    def status(self) -> Status:
        return STATUS

    def committed(self, clip_id: str, dock_id: str) -> None:
        self.commits.append(clip_id)

    async def wait_sealed(self) -> None:
        return None


class ScriptedCamera:
    """A camera whose replies go through ``overrides`` before (or instead of) the session."""

    def __init__(
        self,
        unit: Unit,
        *,
        overrides: Sequence[Override] = (),
        idle_timeout_s: float = 60.0,
    ) -> None:
        identity = CameraIdentity(
            unit.device_id,
            "rogue-kit",
            unit.signing_key,
            load_authority_public_key(unit.force.authority_pub),
        )
        self.unit = unit
        self.hooks = KitHooks()
        self.session = CameraSession(identity, Outbox(unit.clips_dir), self.hooks, AuthLimiter())
        self.overrides = list(overrides)
        self.idle_timeout_s = idle_timeout_s
        self.requests: list[str] = []  # type names of every request, in order

    async def handle(self, message: Message) -> Message | None:
        self.requests.append(type(message).__name__)

        def link(index: int) -> Handler:
            if index == len(self.overrides):
                return self.session.handle

            async def step(request: Message) -> Message | None:
                return await self.overrides[index](request, link(index + 1))

            return step

        return await link(0)(message)

    async def serve(self, link: FdLink) -> None:
        """Answer one dock until BYE, silence or hang-up."""
        # Wired as the daemon wires it (daemon/dock/service.py): a request from outside
        # this session's stream is another connection, and nothing authenticated carries over.
        responder = Responder(
            link,
            self.handle,
            idle_timeout_s=self.idle_timeout_s,
            on_new_peer=self.session.new_peer,
        )
        with contextlib.suppress(LinkClosedError):
            await responder.run()


@contextlib.asynccontextmanager
async def bay(camera: ScriptedCamera, name: str) -> AsyncIterator[str]:
    """Seat ``camera`` on a fresh pty: yields the port a dock opens (as /dev/ttyACM0)."""
    pty = open_pty_pair()
    link = FdLink(pty.master_fd, name)
    task = asyncio.create_task(camera.serve(link), name=f"camera {name}")
    try:
        yield pty.slave_path
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        link.close()
        os.close(pty.slave_fd)


# ----- overrides: lies ----------------------------------------------------------------------


def map_list(change: Callable[[tuple[ClipEntry, ...]], tuple[ClipEntry, ...]]) -> Override:
    """Rewrite the entries of every LIST page the honest camera would send."""

    async def override(message: Message, call_next: Handler) -> Message | None:
        reply = await call_next(message)
        if isinstance(message, ListClips) and isinstance(reply, ListReply):
            entries = change(reply.entries)
            return dataclasses.replace(reply, entries=entries, total=len(entries))
        return reply

    return override


def change_entry(index: int, **fields: object) -> Override:
    """List clip ``index`` with some fields replaced (a name, a size, a clip id)."""

    def change(entries: tuple[ClipEntry, ...]) -> tuple[ClipEntry, ...]:
        out = list(entries)
        if index < len(out):
            out[index] = dataclasses.replace(out[index], **fields)  # type: ignore[arg-type]
        return tuple(out)

    return map_list(change)


def rename_clip(index: int, name: str) -> Override:
    return change_entry(index, name=name)


def duplicate_entries() -> Override:
    """Every clip listed twice."""
    return map_list(lambda entries: entries + entries)


def same_name_for_all() -> Override:
    """Every clip listed under the first clip's name (names collide in the store)."""
    return map_list(
        lambda entries: tuple(dataclasses.replace(e, name=entries[0].name) for e in entries)
    )


def endless_list(*, entries_per_page: int = 64) -> Override:
    """Answer every LIST with a full page of made-up clips and a further page to come."""
    counter = 0

    async def override(message: Message, call_next: Handler) -> Message | None:
        nonlocal counter
        if not isinstance(message, ListClips):
            return await call_next(message)
        entries = []
        for _ in range(entries_per_page):
            counter += 1
            entries.append(_made_up_entry(counter))
        following = (message.cursor + entries_per_page) % (1 << 32) or 1
        return ListReply(total=0xFFFF_FFFF, next_cursor=following, entries=tuple(entries))

    return override


def _made_up_entry(n: int) -> ClipEntry:
    return ClipEntry(
        clip_id=n.to_bytes(16, "big"),
        name=f"20261122T101500Z-{n:016x}",
        started_utc_us=1_795_000_000_000_000,
        segments=1,
        total_bytes=4096,
        manifest_size=900,
        manifest_sha256=bytes(32),
        signature_size=64,
        journal_size=2048,
        chain_head=bytes(32),
    )


def list_cursor_backwards() -> Override:
    """Say there is another page, at cursor 1, page after page (never an end)."""

    async def override(message: Message, call_next: Handler) -> Message | None:
        reply = await call_next(message)
        if isinstance(message, ListClips) and isinstance(reply, ListReply):
            return dataclasses.replace(reply, next_cursor=max(1, message.cursor))
        return reply

    return override


def map_data(change: Callable[[Data], Data]) -> Override:
    async def override(message: Message, call_next: Handler) -> Message | None:
        reply = await call_next(message)
        return change(reply) if isinstance(reply, Data) else reply

    return override


def data_size_off(kind: FileKind, delta: int = 1) -> Override:
    """DATA of files of ``kind`` claims a file ``delta`` bytes longer than the listing said."""
    return map_data(
        lambda d: dataclasses.replace(d, file_size=d.file_size + delta) if d.kind == kind else d
    )


def never_answer(kind: type[Message], *, after: int = 0) -> Override:
    """Answer the first ``after`` requests of ``kind``, then none: the reply never comes."""
    seen = 0

    async def override(message: Message, call_next: Handler) -> Message | None:
        nonlocal seen
        if isinstance(message, kind):
            seen += 1
            if seen > after:
                return None
        return await call_next(message)

    return override


def answer_instead(kind: type[Message], reply: Message) -> Override:
    """Answer requests of ``kind`` with ``reply`` (of the wrong type, say)."""

    async def override(message: Message, call_next: Handler) -> Message | None:
        return reply if isinstance(message, kind) else await call_next(message)

    return override


# ----- overrides: ordering and oracles ------------------------------------------------------


def signal_on(kind: type[Message], event: asyncio.Event) -> Override:
    """Set ``event`` once a request of ``kind`` has been answered."""

    async def override(message: Message, call_next: Handler) -> Message | None:
        reply = await call_next(message)
        if isinstance(message, kind):
            event.set()
        return reply

    return override


def hold_until(kind: type[Message], event: asyncio.Event, *, at_most_s: float) -> Override:
    """Keep the first request of ``kind`` until ``event`` (at most ``at_most_s``).

    Lines a fault up with another bay's progress (its first READ, say). The bound keeps the
    dock's silence timer from ending the session first on a loaded machine; tests never
    assert on which came first.
    """
    held = False

    async def override(message: Message, call_next: Handler) -> Message | None:
        nonlocal held
        if isinstance(message, kind) and not held:
            held = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at_most_s):
                    await event.wait()
        return await call_next(message)

    return override


def on_request(kind: type[Message], nth: int, action: Callable[[], None]) -> Override:
    """Run ``action`` just before answering the ``nth`` request of ``kind`` (1-based)."""
    seen = 0

    async def override(message: Message, call_next: Handler) -> Message | None:
        nonlocal seen
        if isinstance(message, kind):
            seen += 1
            if seen == nth:
                action()
        return await call_next(message)

    return override


def custody_entries(store_root: Path) -> list[dict[str, object]]:
    """The store's custody log as parsed lines (a torn last line is skipped)."""
    path = store_root / "custody.jsonl"
    entries: list[dict[str, object]] = []
    if not path.exists():
        return entries
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def stored_copy(store_root: Path, device_id: str, clip_id: str) -> Path | None:
    """The directory under ``clips/<device_id>/`` whose manifest names ``clip_id``."""
    directory = store_root / "clips" / device_id
    if not directory.is_dir():
        return None
    for child in sorted(directory.iterdir()):
        if not (child / MANIFEST_NAME).is_file():
            continue
        with contextlib.suppress(Exception):
            if load_manifest(child)[1].clip_id == clip_id:
                return child
    return None


def guard_commits(
    store_root: Path,
    unit: Unit,
    violations: list[str],
    *,
    before: Callable[[str], str | None] | None = None,
) -> Override:
    """The test's oracle: before the camera deletes a clip, the dock must hold it.

    Stored under this camera's own device id, and verifying against this camera's own key.
    ``before`` may add a check of its own (returns a problem or None). Every breach is
    appended to ``violations``; the camera then refuses the commit and keeps the clip.
    """

    async def override(message: Message, call_next: Handler) -> Message | None:
        if not isinstance(message, Commit):
            return await call_next(message)
        clip_id = message.clip_id.hex()
        problem: str | None = None
        stored = stored_copy(store_root, unit.device_id, clip_id)
        if stored is None:
            problem = f"COMMIT for {clip_id} not stored under {unit.device_id}"
        else:
            verdict = verify_clip(stored, device_key=unit.public_key)
            if not verdict.ok:
                problem = f"COMMIT for {clip_id}: stored copy fails: {verdict.problems}"
        if problem is None and before is not None:
            problem = before(clip_id)
        if problem is not None:
            violations.append(problem)
            raise ProtocolError(ErrorCode.BAD_STATE, problem[:200])  # the camera keeps it
        return await call_next(message)

    return override


# ----- the dock under test, in its own process ----------------------------------------------


@dataclass(frozen=True)
class DockRun:
    """How one ``bodycam dock`` process ended."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes: the kernel's ru_maxrss of exactly this child
    timed_out: bool

    def crashed(self) -> str | None:
        """Why this run counts as a crash (an exit code or output no fault may cause)."""
        if self.timed_out:
            return "still running at the deadline (a hang)"
        if self.returncode not in (0, 1):
            return f"exit code {self.returncode}"
        for mark in ("internal error", "Traceback"):
            if mark in self.stderr:
                return f"{mark!r} on stderr"
        return None


def dock_args(
    ports: Sequence[str], store: Path, credentials: Path, *, once: bool = True
) -> list[str]:
    args = ["dock", "--store", str(store), "--credentials", str(credentials)]
    for port in ports:
        args += ["--port", port]
    return [*args, "--once"] if once else args


# Runs the dock as its own child and reports that child's peak RSS. A process's ru_maxrss
# keeps the high-water mark of the memory it had before exec: a dock forked straight from
# a 200 MB pytest would be charged 200 MB. Forked from this small launcher instead, only the
# launcher's few MB come before the dock's own.
_LAUNCHER = """
import os, resource, signal, subprocess, sys
report = sys.argv[1]
child = subprocess.Popen(sys.argv[2:])
with open(report + ".pid", "w") as stream:
    stream.write(str(child.pid))
signal.signal(signal.SIGTERM, lambda *_: child.kill())
code = child.wait()
with open(report, "w") as stream:
    stream.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
if code < 0:  # die of the dock's signal, as the dock did
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


class DockProcess:
    """``python -m bodycam.daemon.cli ARGS`` with its output in files under ``log_dir``.

    ``pid`` is the dock's own process (what a power cut kills, what /proc describes).
    """

    def __init__(self, args: Sequence[str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in log_dir.glob("*.out"))
        self.out, self.err = log_dir / f"{n:02d}.out", log_dir / f"{n:02d}.err"
        self._report = log_dir / f"{n:02d}.maxrss"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _LAUNCHER,
                    str(self._report),
                    *(sys.executable, "-m", "bodycam.daemon.cli", *args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.pid = self._dock_pid(self._report.with_name(self._report.name + ".pid"))

    def _dock_pid(self, path: Path) -> int:
        # Bounded: the launcher writes it right after starting the dock.
        for _ in range(6000):
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(path.read_text())
            if self.proc.poll() is not None:
                raise RuntimeError(f"the dock launcher exited early: {self.err.read_text()}")
            time.sleep(0.01)
        raise RuntimeError("the dock launcher never started the dock")

    def status_bytes(self, name: str) -> int:
        """A size from /proc/PID/status (VmHWM, VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
        raise LookupError(name)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    async def wait(self, timeout_s: float = 120.0) -> DockRun:
        """Reap the dock (killing it at the deadline), with its own peak memory."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        timed_out = False
        while self.proc.poll() is None:
            if loop.time() > deadline:
                timed_out = True
                self.kill()
                await asyncio.to_thread(self.proc.wait)
                break
            await asyncio.sleep(0.05)
        peak_kib = int(self._report.read_text()) if self._report.exists() else 0
        return DockRun(
            self.proc.returncode,
            self.out.read_text(errors="replace"),
            self.err.read_text(errors="replace"),
            peak_kib * 1024,
            timed_out,
        )


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root`` (what a transfer put on the disk)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


__all__ = [
    "STATUS",
    "DockProcess",
    "DockRun",
    "Force",
    "Handler",
    "KitHooks",
    "Override",
    "ScriptedCamera",
    "Unit",
    "answer_instead",
    "bay",
    "change_entry",
    "custody_entries",
    "data_size_off",
    "dock_args",
    "duplicate_entries",
    "endless_list",
    "forge_copy",
    "guard_commits",
    "hold_until",
    "list_cursor_backwards",
    "make_force",
    "map_data",
    "map_list",
    "never_answer",
    "on_request",
    "rename_clip",
    "same_name_for_all",
    "signal_on",
    "stored_copy",
    "tree_bytes",
]
