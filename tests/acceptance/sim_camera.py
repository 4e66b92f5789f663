"""A simulated camera as its own process: its files, its daemon, its control socket.

Both simulator rigs use it: the default one (:mod:`tests.acceptance.sim_rig`) and the
labgrid drivers that put the simulator behind a labgrid environment
(:mod:`tests.acceptance.labgrid_sim`). The directory is provisioned once (device key, a
test force's keys, config) and kept across power cycles, as a camera keeps its card.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.acceptance.rig import CameraIdentity, RigError
from tests.daemon_process import act, start_daemon, write_sim_config
from tests.integration.conftest import make_rig

# Fast to exercise, but with every timing an officer relies on at its default: pre-event
# buffer, 1 s segments, the LED and beep patterns. Only the stop hold is shorter (1 s, not
# 3 s), which the gestures read from the config.
_SETTINGS: dict[str, dict[str, object]] = {
    "recording": {"pre_event_s": 2.0, "segment_s": 1.0},
    "buttons": {"hold_stop_s": 1.0},
}


class SimulatedCamera:
    """The simulated camera in ``directory``; ``start``/``kill`` are its power."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        rig = make_rig(directory)  # keeps the keys already there
        self.config_path = directory / "config.toml"
        self.control_socket = directory / "world.sock"
        self.log = directory / "daemon.log"
        # Named like the dock host's udev rule names a seated camera: /dev/bodycam/<serial>.
        self.dock_link = directory / "dev" / "bodycam" / rig.config.device.id
        extra: dict[str, dict[str, object]] = {**_SETTINGS, "sim": {"dock_link": self.dock_link}}
        write_sim_config(self.config_path, rig.config, self.control_socket, speed=1.0, extra=extra)
        self.identity = CameraIdentity(
            device_id=rig.config.device.id,
            device_pub=rig.device_pub,
            authority_key=rig.force_dir / "authority.key",
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, within_s: float) -> None:
        """Power on: start the daemon and wait until its world answers."""
        if self.running:
            return
        self._process = start_daemon(self.config_path, self.log)
        if act(self.control_socket, {"do": "outputs"}, timeout=within_s) is None:
            raise RigError(f"simulated camera did not start within {within_s:.0f} s: {self.log}")

    def kill(self) -> None:
        """Cut the power: SIGKILL, no chance to seal or sync anything."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)
            self._process = None

    def stop(self) -> None:
        """Switch off cleanly (SIGTERM: the daemon seals what it has)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def act(self, action: dict[str, object], *, within_s: float = 15.0) -> dict[str, Any]:
        """One world action; its reply.

        Raises:
            RigError: The camera is off or did not answer.
        """
        reply = act(self.control_socket, action, timeout=within_s) if self.running else None
        if reply is None:
            raise RigError(f"simulated camera is off or not answering ({action['do']})")
        return reply
