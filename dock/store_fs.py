"""Durable directory operations for the dock store: create, fsync, remove, lock.

A clip directory is moved and removed as a whole with ``rename`` (atomic), and every step is
fsynced before the next, so a power cut leaves each clip either where it was or where it was
going, never half of it. File-level durable writes live in
:mod:`bodycam.daemon.evidence.fsio`; this adds what directories of files need.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from bodycam.daemon.evidence.fsio import fsync_dir

__all__ = [
    "create_empty_file",
    "dir_bytes",
    "ensure_dir",
    "exclusive_lock",
    "fsync_tree",
    "irregular_entries",
    "remove_durably",
    "remove_path",
    "sha256_file",
    "tree_usage",
]


def ensure_dir(path: Path) -> Path:
    """Create one directory level (mode 0700) if missing, and make its name durable."""
    if not path.is_dir():
        with contextlib.suppress(FileExistsError):  # another bay made it meanwhile
            path.mkdir(mode=0o700)
        fsync_dir(path.parent)
    return path


def create_empty_file(path: Path, *, mode: int = 0o600) -> None:
    """Create ``path`` empty if missing, and make it and its name durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def irregular_entries(directory: Path) -> list[Path]:
    """Entries of ``directory`` that are not regular files (symlinks, subdirectories, ...)."""
    return [c for c in sorted(directory.iterdir()) if c.is_symlink() or not c.is_file()]


def fsync_tree(directory: Path) -> None:
    """fsync every regular file in ``directory`` (not below it), then the directory."""
    for child in sorted(directory.iterdir()):
        if child.is_symlink() or not child.is_file():
            continue
        fd = os.open(child, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(directory)


def remove_durably(path: Path, trash: Path) -> None:
    """Remove ``path`` by renaming it to ``trash`` first, then deleting that.

    ``trash`` must be on the same file system; a leftover ``trash`` from a power cut is
    removed again by whoever finds it (its name says what it was).
    """
    if trash.exists() or trash.is_symlink():
        remove_path(trash)
    path.rename(trash)
    fsync_dir(path.parent)
    fsync_dir(trash.parent)
    remove_path(trash)
    fsync_dir(trash.parent)


def remove_path(path: Path) -> None:
    """Delete a directory tree, or a single file or symlink (never following a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def tree_usage(directory: Path) -> tuple[int, float]:
    """Bytes of the regular files under ``directory`` and the newest modification time.

    Symlinks are counted as themselves, never followed: this describes what a transfer
    wrote, and a link must not make it describe something elsewhere.
    """
    size, newest = 0, directory.lstat().st_mtime
    for base, dirs, files in os.walk(directory):
        for name in dirs + files:
            try:
                st = (Path(base) / name).lstat()
            except FileNotFoundError:  # a transfer or a removal changed it meanwhile
                continue
            newest = max(newest, st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, newest


def dir_bytes(directory: Path) -> int:
    """Total size of the regular files in ``directory``."""
    return sum(c.stat().st_size for c in directory.iterdir() if c.is_file())


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
