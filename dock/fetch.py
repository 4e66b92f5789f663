"""Pulling files off a camera: many chunks in flight, resumed from what is on disk, hashed.

One pipeline per clip runs through all of its files in order, so the link never idles
between segments. At most ``window`` READs are outstanding *or* answered but not yet
written: the dock never holds more than a window of data in memory, and a slow disk slows
the camera down instead of growing a buffer. A file that exists already in the incoming
directory is resumed from its size (the bytes there were fsynced when the previous docking
ended); its SHA-256 covers the old bytes and the new, so a torn resume is caught and the
file fetched again from the start.

Every incoming file is opened without following a symbolic link, in its directory opened
the same way, and must be a regular file with no other name: a link or a FIFO planted in
``incoming/`` on the dock host is never written through (:class:`UnsafeTarget`, a problem
for that clip), so nothing the dock receives lands outside its store.

:func:`fetch_clip` runs one clip's transfer in the order that lets nothing be believed
early: the listed head files first (sizes bounded by the listing checks), the manifest
checked against its listed hash and the camera's *registered* key, its segment sizes
bounded, then the segments it vouches for, and last the complete offline verification of
the copy. Every broken promise is a problem for that clip, never an exception for the
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded
from bodycam.daemon.evidence.journal import JOURNAL_NAME
from bodycam.daemon.evidence.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    load_signature,
    signature_valid,
)
from bodycam.daemon.evidence.schema import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock import limits
from bodycam.drivers.link.endpoint import Requester
from bodycam.drivers.link.frame import CHUNK_SIZE
from bodycam.drivers.link.messages import ClipEntry, Data, FileKind, Message, Read

_log = logging.getLogger(__name__)


class FetchError(Exception):
    """The camera's file does not match what its listing or manifest promised."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path.name}: {problem}")
        self.path = path
        self.problem = problem


class UnsafeTarget(FetchError):  # noqa: N818 - a FetchError, named for what it found
    """An incoming file's place holds something that is not the dock's own regular file.

    Only someone on the dock host can put it there (a symbolic link, a FIFO, a directory, a
    second hard link): the clip fails at once, without a retry, and nothing is written.
    """


# O_NOFOLLOW: a symbolic link in the final place fails (ELOOP) instead of being followed.
# O_NONBLOCK: opening a FIFO planted there cannot wait for a reader (no effect on files).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_UNSAFE_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO)


def open_incoming(path: Path) -> int:
    """Open (creating, mode 0600) the incoming file ``path`` to write: never through a link.

    Raises:
        UnsafeTarget: ``path`` or its directory is a symbolic link, or ``path`` is not a
            regular file with one name.
        OSError: Any other failure (a full disk, a missing directory).
    """
    try:
        dir_fd = os.open(path.parent, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in _UNSAFE_ERRNOS:
            raise UnsafeTarget(
                path, "its directory is a symbolic link or no directory; not written"
            ) from None
        raise
    try:
        fd = os.open(path.name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _UNSAFE_ERRNOS:
            why = "a symbolic link" if exc.errno == errno.ELOOP else "no regular file"
            raise UnsafeTarget(path, f"{why} in the incoming directory; not written") from None
        raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "a hard link" if stat.S_ISREG(st.st_mode) else "no regular file"
        raise UnsafeTarget(path, f"{what} in the incoming directory; not written")
    return fd


@dataclass(frozen=True)
class FileJob:
    """One file to pull: where it comes from on the camera and where it goes here."""

    kind: FileKind
    index: int
    path: Path
    size: int
    sha256: bytes | None  # None for files no manifest vouches for (the journal)


@dataclass
class FetchCounters:
    bytes_received: int = 0  # DATA payload bytes that arrived and were written
    bytes_resumed: int = 0  # bytes already on disk from an earlier docking
    files: int = 0


class _Target:
    """An incoming file being written: resumed where the previous docking stopped."""

    def __init__(self, job: FileJob) -> None:
        self.job = job
        self.hasher = hashlib.sha256()
        self.fd = open_incoming(job.path)
        size = os.fstat(self.fd).st_size
        if size > job.size or job.sha256 is None:
            os.ftruncate(self.fd, 0)  # unvouched files are small: always fetch them whole
            size = 0
        self.start = size
        offset = 0
        while offset < size:  # the hash must cover the bytes fetched last time too
            block = os.pread(self.fd, min(1 << 20, size - offset), offset)
            if not block:
                break
            self.hasher.update(block)
            offset += len(block)

    def finish(self) -> None:
        digest = self.hasher.digest()
        if self.job.sha256 is not None and digest != self.job.sha256:
            os.ftruncate(self.fd, 0)
            raise FetchError(self.job.path, "SHA-256 does not match the manifest")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def bytes_on_disk(directory: Path) -> int:
    """Bytes of the regular files an earlier transfer left in ``directory`` (0 if none).

    Those bytes are resumed, not fetched again, so they need no new room in the store.
    """
    total = 0
    try:
        with os.scandir(directory) as it:
            for item in it:
                if item.is_file(follow_symlinks=False):
                    total += item.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total


def chunk_size(loss: float) -> int:
    """Bytes per READ for a link that needs retries on ``loss`` of its sends.

    A frame arrives intact with probability (1 - bit error rate) ** size: on a clean link
    the largest chunks cost the least per byte, on a noisy one small chunks get through
    where 64 KiB ones would be resent again and again (ZMODEM shrinks its blocks likewise).
    """
    if loss < 0.05:
        return CHUNK_SIZE
    if loss < 0.25:
        return CHUNK_SIZE // 4
    return CHUNK_SIZE // 16


def write_chunk(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write one chunk where it belongs (the file system edge: ENOSPC surfaces here)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def fetch_files(
    requester: Requester,
    clip_id: bytes,
    jobs: list[FileJob],
    *,
    counters: FetchCounters,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Pull every job's file into place, each verified against its SHA-256 when known.

    Raises:
        FetchError: A file's size or hash differs from what was promised (the caller
            decides whether to try once more or to reject the clip).
        LinkClosedError, RemoteError: The link failed; what was written is fsynced first.
    """
    window = requester.window
    inflight: deque[tuple[_Target, int, int, asyncio.Future[Message]]] = deque()
    syncs: list[asyncio.Task[None]] = []
    targets: list[_Target] = []

    async def complete_head() -> None:
        target, offset, length, future = inflight.popleft()
        reply = await future
        _check_reply(reply, target, clip_id, offset, length)
        assert isinstance(reply, Data)
        data = reply.data
        write_chunk(target.fd, data, offset)
        target.hasher.update(data)
        counters.bytes_received += length
        if on_bytes is not None:
            on_bytes(length)
        if offset + length == target.job.size:
            _finish(target)

    def _finish(target: _Target) -> None:
        target.finish()
        counters.files += 1
        targets.remove(target)
        # fsync in a thread while the next file streams in; awaited before returning.
        syncs.append(asyncio.create_task(asyncio.to_thread(_fsync_close, target.fd)))

    try:
        for job in jobs:
            target = _Target(job)
            targets.append(target)
            counters.bytes_resumed += target.start
            if target.start == job.size:
                _finish(target)
                continue
            offset = target.start
            while offset < job.size:
                length = min(chunk_size(requester.loss), job.size - offset)
                while len(inflight) >= window:
                    await complete_head()
                read = Read(
                    clip_id=clip_id, kind=job.kind, index=job.index, offset=offset, length=length
                )
                inflight.append((target, offset, length, await requester.submit(read)))
                offset += length
        while inflight:
            await complete_head()
    finally:
        for _, _, _, future in inflight:
            # Retrieved: a link error is reported once, by our caller; a reply that comes
            # after we gave up is dropped without an "exception never retrieved" warning.
            future.add_done_callback(_retrieve)
        for target in targets:  # interrupted: keep what arrived, durably, for the next docking
            with contextlib.suppress(OSError):
                os.fsync(target.fd)
            target.close()
        if syncs:
            await asyncio.gather(*syncs, return_exceptions=True)


def _retrieve(future: asyncio.Future[Message]) -> None:
    if not future.cancelled():
        future.exception()


def _check_reply(reply: Message, target: _Target, clip_id: bytes, offset: int, length: int) -> None:
    job = target.job
    if not isinstance(reply, Data):
        raise FetchError(job.path, f"expected DATA, got {type(reply).__name__}")
    if (reply.clip_id, reply.kind, reply.index, reply.offset) != (
        clip_id,
        job.kind,
        job.index,
        offset,
    ):
        raise FetchError(job.path, "DATA for another file or offset than requested")
    if reply.file_size != job.size:
        raise FetchError(job.path, f"camera's file is {reply.file_size} bytes, expected {job.size}")
    if len(reply.data) != length:
        raise FetchError(job.path, f"{len(reply.data)} bytes at {offset}, expected {length}")


@dataclass
class ClipFetch:
    """What :func:`fetch_clip` got: the checked manifest, or the problems that stopped it."""

    manifest: Manifest | None
    problems: list[str]


async def fetch_clip(
    requester: Requester,
    entry: ClipEntry,
    incoming: Path,
    *,
    device_id: str,
    device_key: Ed25519PublicKey,
    counters: FetchCounters,
    on_bytes: Callable[[int], None] | None = None,
) -> ClipFetch:
    """Pull one listed clip into ``incoming`` and verify it; the checked manifest or problems.

    ``entry`` must have passed :func:`limits.entry_problems`: the head files are fetched at
    their listed sizes. The last step is the one verdict that counts, :func:`verify_clip`
    pinned to ``device_key``: the very check ``bodycam verify --device-key`` runs, off the
    event loop so other bays keep streaming.

    Raises:
        LinkClosedError, RemoteError: The link failed (what was written is fsynced).
        OSError: Writing failed (a full disk).
    """
    head = [
        FileJob(FileKind.MANIFEST, 0, incoming / MANIFEST_NAME, entry.manifest_size, None),
        FileJob(FileKind.SIGNATURE, 0, incoming / SIGNATURE_NAME, entry.signature_size, None),
        FileJob(FileKind.JOURNAL, 0, incoming / JOURNAL_NAME, entry.journal_size, None),
    ]
    try:
        await fetch_files(requester, entry.clip_id, head, counters=counters)
    except FetchError as exc:
        return ClipFetch(None, [str(exc)])
    manifest, problems = _check_manifest(incoming, entry, device_id, device_key)
    if manifest is None:
        return ClipFetch(None, problems)
    problems = limits.manifest_problems(manifest, entry)
    if problems:
        return ClipFetch(None, problems)
    jobs = [
        FileJob(FileKind.SEGMENT, s.index, incoming / s.name, s.size, bytes.fromhex(s.sha256))
        for s in manifest.segments
    ]
    for attempt in (1, 2):
        try:
            await fetch_files(requester, entry.clip_id, jobs, counters=counters, on_bytes=on_bytes)
            break
        except UnsafeTarget as exc:  # trying again would meet the same planted thing
            return ClipFetch(None, [str(exc)])
        except FetchError as exc:
            # Once could be the link (CRC-32 misses 1 in 4 billion); twice is the file.
            _log.warning("clip %s: %s (attempt %d)", entry.clip_id.hex(), exc, attempt)
            if attempt == 2:
                return ClipFetch(None, [f"{exc} (altered on the camera?)"])
    verdict = await asyncio.to_thread(verify_clip, incoming, device_key=device_key)
    if not verdict.ok:
        return ClipFetch(None, verdict.problems)
    return ClipFetch(manifest, [])


def _check_manifest(
    incoming: Path, entry: ClipEntry, device_id: str, device_key: Ed25519PublicKey
) -> tuple[Manifest | None, list[str]]:
    try:
        data = read_bounded(incoming / MANIFEST_NAME, MAX_MANIFEST_BYTES, what="manifest")
        signature = load_signature(incoming)
    except EvidenceError:
        signature = b""
        data = b""
    if hashlib.sha256(data).digest() != entry.manifest_sha256:
        return None, ["manifest: differs from the one the camera listed"]
    if not signature_valid(data, signature, device_key):
        return None, ["manifest: signature invalid for the registered camera key (edited?)"]
    try:
        manifest = parse_manifest(data, source=f"{entry.name}/{MANIFEST_NAME}")
    except EvidenceError as exc:
        return None, [str(exc)]
    if manifest.clip_id != entry.clip_id.hex() or manifest.device_id != device_id:
        return None, ["manifest: names another clip or camera than the listing"]
    return manifest, []
