"""The reference dock as the rig's test equipment: a store, an agent, and a port to serve."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bodycam.daemon.dock.auth import create_dock_identity, load_dock_identity
from bodycam.daemon.evidence.manifest import load_manifest
from bodycam.daemon.evidence.schema import Manifest
from bodycam.dock.agent import DockAgent, DockReport
from bodycam.dock.store import DockStore, StoredClip
from bodycam.drivers.interfaces import ByteLink
from bodycam.drivers.serial_link import open_serial
from tests.acceptance.rfc2217_link import Rfc2217Link
from tests.acceptance.rig import CameraIdentity


def open_dock_link(port: str) -> ByteLink:
    """The dock's end of the link: a local port, or a bench's port exported over RFC 2217."""
    return Rfc2217Link(port) if port.startswith("rfc2217://") else open_serial(port)


class ReferenceDock:
    """A dock of the force that ``authority_key`` speaks for, knowing one camera.

    Args:
        workdir: Where the dock keeps its credentials and store (a fresh directory).
        camera: The camera on the rig (its id and enrolled public key).
        authority_key: The authority that signs this dock's certificate: the camera's own
            force for a good dock, another one for a rogue dock.
        session_s: The most one docking session may take.
    """

    def __init__(
        self, workdir: Path, camera: CameraIdentity, authority_key: Path, *, session_s: float
    ) -> None:
        credentials = workdir / "credentials"
        credentials.mkdir(parents=True)
        create_dock_identity(credentials, "DOCK-ACCEPTANCE", authority_key, days=1)
        self.store = DockStore(workdir / "store")
        self.store.register_device(camera.device_id, camera.device_pub)
        self.agent = DockAgent(self.store, load_dock_identity(credentials), retry_s=0.3)
        self.session_s = session_s

    async def serve(self, port: str) -> DockReport:
        """One whole docking session with the camera on ``port`` (a path or rfc2217:// URL)."""
        link = open_dock_link(port)
        try:
            async with asyncio.timeout(self.session_s):
                return await self.agent.serve(link)
        finally:
            link.close()

    def offload(self, port: str) -> DockReport:
        """``serve`` from a test that is not a coroutine (the rig's calls block)."""
        return asyncio.run(self.serve(port))

    def committed_clips(self) -> list[tuple[StoredClip, Manifest]]:
        """Every clip this dock stored and committed, oldest recording first."""
        clips = [(clip, load_manifest(clip.directory)[1]) for clip in self.store.clips()]
        return sorted(
            ((clip, manifest) for clip, manifest in clips if clip.committed),
            key=lambda pair: pair[1].started_utc,
        )
