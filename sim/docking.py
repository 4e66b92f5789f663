"""The end of a simulated shift: the camera goes into a reference dock over a real pty.

Everything a force would set up once is made here per output directory: the force authority
key (the camera gets its public half), a dock certified by it, the dock's store with the
camera registered in it. Then the camera is "plugged in" (a pseudo-terminal appears, as
``/dev/ttyACM0`` would on a dock host), and the reference dock offloads over it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bodycam.daemon.config import Config
from bodycam.daemon.dock.auth import DockIdentity, create_dock_identity, load_dock_identity
from bodycam.daemon.evidence.keys import generate_device_key
from bodycam.dock.agent import DockAgent, DockReport, Progress
from bodycam.dock.store import DockStore
from bodycam.drivers.serial_link import open_serial
from bodycam.sim.actions import perform
from bodycam.sim.board import SimBoard

DOCK_ID = "DOCK-SIM-01"


@dataclass(frozen=True)
class DockSetup:
    """A force's dock for the simulated camera: credentials and store."""

    credentials: Path
    store_dir: Path
    authority_key: Path

    def store(self) -> DockStore:
        return DockStore(self.store_dir)

    def identity(self) -> DockIdentity:
        return load_dock_identity(self.credentials)


def prepare_authority(force_dir: Path, config: Config) -> Path:
    """The force authority key pair (once), and its public half on the camera."""
    authority_key = force_dir / "authority.key"
    if not authority_key.exists():
        generate_device_key(authority_key)
    on_camera = config.key_path(config.keys.authority_public_key)
    if not on_camera.exists():
        on_camera.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(authority_key.with_suffix(".pub"), on_camera)
    return authority_key


def prepare_dock(out: Path, config: Config, authority_key: Path) -> DockSetup:
    """A certified dock and a store in which the camera is registered."""
    credentials = out / "dock" / "credentials"
    if not (credentials / "dock.cert").exists():
        credentials.mkdir(parents=True, exist_ok=True)
        create_dock_identity(credentials, DOCK_ID, authority_key, days=30)
    setup = DockSetup(credentials, out / "dock" / "store", authority_key)
    store = setup.store()
    if not store.device_key_path(config.device.id).exists():
        device_pub = config.key_path(config.keys.device_key).with_suffix(".pub")
        store.register_device(config.device.id, device_pub)
    return setup


async def dock_and_offload(
    board: SimBoard,
    setup: DockSetup,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> DockReport:
    """Plug the camera into the dock and run one session; the camera stays docked."""
    answer = await perform(board, {"do": "dock"})
    agent = DockAgent(setup.store(), setup.identity(), on_progress=on_progress)
    link = open_serial(str(answer["port"]))
    try:
        return await agent.serve(link)
    finally:
        link.close()
