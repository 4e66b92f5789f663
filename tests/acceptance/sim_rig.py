"""The default rig: the simulated camera in its own process, no labgrid needed.

Each part of :class:`~tests.acceptance.rig.CameraRig` is the simulated board's own: the
record button and the dock are world actions on the control socket, the LED and beeper are
read back from the simulated pins' timelines, and a power cut is SIGKILL.
"""

from __future__ import annotations

from pathlib import Path

from bodycam.daemon.config import Config, load_config
from tests.acceptance.rig import OUTPUTS, Edges, RigTimeouts
from tests.acceptance.sim_camera import SimulatedCamera


class SimIndicatorWatch:
    """The simulated pins' changes from the moment the watch began."""

    def __init__(self, camera: SimulatedCamera) -> None:
        self._camera = camera
        start = camera.act({"do": "outputs"})
        self._t0 = float(start["t"])
        self._initial = {name: bool(start[name]) for name in OUTPUTS}

    def stop(self) -> Edges:
        reply = self._camera.act({"do": "output_edges", "since": self._t0})
        edges: Edges = {}
        for name, changes in reply["edges"].items():
            line = [(0.0, self._initial.get(name, False))]
            line += [(float(t) - self._t0, bool(on)) for t, on in changes]
            edges[name] = line
        return edges


class SimRig:
    """Implements CameraRig on a simulated camera in ``directory``."""

    timing_tolerance_s = 0.08  # a shared CI machine's scheduling jitter, with margin

    def __init__(self, directory: Path) -> None:
        self.camera = SimulatedCamera(directory)
        self.identity = self.camera.identity
        self.config: Config = load_config(self.camera.config_path)
        self.timeouts = RigTimeouts(boot_s=20.0, enumerate_s=10.0)
        self.name = f"simulator ({directory})"

    def set_button(self, pressed: bool) -> None:
        self.camera.act({"do": "press" if pressed else "release"})

    def watch_indicators(self) -> SimIndicatorWatch:
        return SimIndicatorWatch(self.camera)

    def dock(self) -> str:
        return str(self.camera.act({"do": "dock"})["port"])

    def undock(self) -> None:
        self.camera.act({"do": "undock"})

    def power(self, on: bool) -> None:
        if on:
            self.camera.start(within_s=self.timeouts.boot_s)
        else:
            self.camera.kill()

    def close(self) -> None:
        self.camera.stop()
