"""Durable file operations: fsync where power loss would otherwise lose or tear data.

Everything the store writes goes through here so that the crash-safety rules live in one
place: data is fsynced before a rename publishes it, and the directory is fsynced after the
rename so that the new name itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from bodycam.daemon.evidence.errors import EvidenceError


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (creations, renames, removals) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwritev_all(fd: int, parts: list[bytes], offset: int) -> int:
    """Write ``parts`` back to back at ``offset`` without joining them first (no copy).

    Falls back to :func:`pwrite_all` for whatever a short ``pwritev`` leaves.
    """
    total = sum(len(p) for p in parts)
    n = os.pwritev(fd, parts, offset)
    if n < total:
        rest = b"".join(parts)[n:]
        pwrite_all(fd, rest, offset + n)
    return total


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset``; return the bytes written.

    ``os.pwrite`` may write less than asked (a full card, a signal); the loop finishes the job
    or lets the OSError out. On an error the caller learns nothing about how much was written
    before it, so it must cut the file back itself.
    """
    view = memoryview(data)
    written = 0
    while written < len(view):
        n = os.pwrite(fd, view[written:], offset + written)
        if n == 0:  # a regular file never does this unless the device is gone
            raise OSError(errno.EIO, "write made no progress")
        written += n
    return written


def write_file_durably(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool) -> None:
    """Write ``path`` atomically: a temporary file, fsync, rename (or link), fsync the dir.

    Args:
        path: Destination.
        data: The whole content.
        mode: Permission bits, set when the file is created (never widened later).
        overwrite: When False the file is published with ``link``, which fails if ``path``
            already exists, so two writers (or a retry) can never replace a file.

    Raises:
        EvidenceError: ``path`` exists and ``overwrite`` is False.
        OSError: The write failed; no partial file is left under ``path``.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of an earlier crash; it was never published
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink()
        raise
    os.close(fd)
    try:
        if overwrite:
            tmp.replace(path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise EvidenceError(f"{path}: already exists; refusing to overwrite") from None
            tmp.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def read_bounded(path: Path, limit: int, *, what: str) -> bytes:
    """Read a whole small file, refusing (before reading) one larger than ``limit`` bytes.

    Raises:
        FileNotFoundError: The file does not exist (callers word their own message).
        EvidenceError: It is too large, not a regular file, or unreadable.
    """
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise EvidenceError(f"{path}: {what} is {size} bytes, over the {limit}-byte limit")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise EvidenceError(f"{path}: is a directory, expected the {what}") from None
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if len(data) > limit:  # grew while we looked
        raise EvidenceError(f"{path}: {what} is over the {limit}-byte limit")
    return data
