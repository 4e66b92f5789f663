"""The evidence volume on a real filesystem: free space from statvfs, ENOSPC from the OS."""

from __future__ import annotations

import os
from pathlib import Path

from bodycam.drivers.interfaces import StorageUsage


class VolumeStorage:
    """The filesystem holding ``root``; a full card raises ENOSPC on write by itself."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def usage(self) -> StorageUsage:
        st = os.statvfs(self._root)
        return StorageUsage(
            total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize
        )

    def check_write(self, nbytes: int) -> None:
        """Nothing to check up front: the kernel reports ENOSPC at the write itself."""
