"""A storage card of a given size: full means ENOSPC, exactly where a real card fails.

The quota counts the bytes under the evidence root. ``check_write`` raises the same
``OSError(ENOSPC)`` the kernel raises on a full card, so the daemon's handling of a full
card is exercised by the very code that runs on a camera.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from bodycam.drivers.interfaces import StorageUsage


def _bytes_under(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except FileNotFoundError:
                continue  # renamed or removed while we walked
    return total


class SimStorage:
    """Implements Storage over a directory with a byte quota (and the real disk's limit)."""

    def __init__(self, root: Path, *, quota_bytes: int) -> None:
        self._root = root
        self._quota = quota_bytes
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self._used = _bytes_under(root)

    @property
    def root(self) -> Path:
        return self._root

    def _disk_free(self) -> int:
        st = os.statvfs(self._root)
        return st.f_bavail * st.f_frsize

    def usage(self) -> StorageUsage:
        used = _bytes_under(self._root)
        with self._lock:
            self._used = used
        free = max(0, min(self._quota - used, self._disk_free()))
        return StorageUsage(total_bytes=self._quota, free_bytes=free)

    def check_write(self, nbytes: int) -> None:
        with self._lock:
            if self._used + nbytes > self._quota:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._root))
            self._used += nbytes

    def set_quota(self, quota_bytes: int) -> None:
        with self._lock:
            self._quota = quota_bytes
