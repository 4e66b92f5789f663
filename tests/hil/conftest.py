"""The docking target: the simulated camera in its own process, or a real one on a bench.

``--target sim`` (default) starts ``bodycam daemon`` on the simulated board, records through
its control socket and "docks" it: a pseudo-terminal appears, as ``/dev/ttyACM0`` appears on
a dock host. ``--target serial:/dev/ttyACM0`` uses a camera on a bench; the bench must say
which force it belongs to (``BODYCAM_HIL_AUTHORITY_KEY``: the test force's authority private
key that the camera was provisioned with) and which camera it is (``BODYCAM_HIL_DEVICE_ID``,
``BODYCAM_HIL_DEVICE_PUB``). Tests that need what a target lacks are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon_process import act, start_daemon, write_sim_config
from tests.integration.conftest import make_rig


@dataclass
class DockTarget:
    """A camera the tests can dock to; what they may ask of it depends on its kind."""

    kind: str  # "sim" or "serial"
    port: str
    device_id: str
    device_pub: Path
    authority_key: Path
    control_socket: Path | None = None
    clips_dir: Path | None = None

    def record(self, clips: int) -> None:
        """Record ``clips`` short clips (double-press, then hold to stop), then dock."""
        if self.control_socket is None:
            pytest.skip(
                "recording on a bench camera needs the rig's record-button GPIO "
                "(the labgrid bench of the hardware-in-the-loop issue)"
            )
        act(self.control_socket, {"do": "undock"})
        for _ in range(clips):
            act(self.control_socket, {"do": "double_press"})
            act(self.control_socket, {"do": "wait", "seconds": 4})
            act(self.control_socket, {"do": "hold", "seconds": 3.5})
            act(self.control_socket, {"do": "wait", "seconds": 1})
        reply = act(self.control_socket, {"do": "dock"})
        assert reply is not None
        self.port = str(reply["port"])


def _sim_target(tmp_path: Path) -> Iterator[DockTarget]:
    rig = make_rig(tmp_path)
    c = rig.config
    sock = tmp_path / "world.sock"
    config = tmp_path / "config.toml"
    write_sim_config(config, c, sock, speed=4.0)
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        reply = act(sock, {"do": "dock"})
        assert reply is not None, (tmp_path / "daemon.log").read_text()
        yield DockTarget(
            kind="sim",
            port=str(reply["port"]),
            device_id=c.device.id,
            device_pub=rig.device_pub,
            authority_key=rig.force_dir / "authority.key",
            control_socket=sock,
            clips_dir=c.clips_dir,
        )
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _serial_target(port: str) -> DockTarget:
    missing = [
        name
        for name in ("BODYCAM_HIL_AUTHORITY_KEY", "BODYCAM_HIL_DEVICE_ID", "BODYCAM_HIL_DEVICE_PUB")
        if not os.environ.get(name)
    ]
    if missing:
        pytest.skip(f"bench camera on {port}: set {', '.join(missing)}")
    if not Path(port).exists():
        pytest.skip(f"bench camera: {port} does not exist (camera not docked or not enumerated)")
    return DockTarget(
        kind="serial",
        port=port,
        device_id=os.environ["BODYCAM_HIL_DEVICE_ID"],
        device_pub=Path(os.environ["BODYCAM_HIL_DEVICE_PUB"]),
        authority_key=Path(os.environ["BODYCAM_HIL_AUTHORITY_KEY"]),
    )


@pytest.fixture(params=["sim", pytest.param("serial", marks=pytest.mark.hil)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DockTarget]:
    chosen: str = request.config.getoption("--target")
    if request.param == "sim":
        if chosen != "sim":
            pytest.skip(f"--target {chosen}: the simulator target is not selected")
        yield from _sim_target(tmp_path)
        return
    if not chosen.startswith("serial:"):
        pytest.skip("no hardware named: pass --target serial:/dev/ttyACM0 to use a bench camera")
    yield _serial_target(chosen.removeprefix("serial:"))
    time.sleep(0)  # nothing to tear down: the bench camera stays docked
