"""The simulator dressed as a labgrid bench: every role the suite asks for, played by it.

``envs/sim.yaml`` imports this module. It registers one resource, ``BodycamSimulator``
(a simulated camera's directory: keys, config, card), and a driver per bench role, each
implementing the labgrid protocol the real equipment implements:

* ``BodycamSimPowerDriver`` (PowerProtocol, the relay): ``on`` starts the daemon process,
  ``off`` SIGKILLs it, the way pulling the battery stops a camera;
* ``BodycamSimDockDriver`` (PowerProtocol, the hub port): seats or lifts the camera, and
  the simulator names the dock's end of the pty as the udev rule would;
* ``BodycamSimButtonDriver`` (DigitalOutputProtocol, the GPIO on the record button);
* ``BodycamSimProbeDriver`` (a logic analyser's ``capture``/``stop``): hands back the
  simulated pins' changes as rows shaped like sigrok's CSV.

So the labgrid path (environment file, target, drivers, protocols, the rig that uses them)
runs end to end in CI; only the physical parts differ on a bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.protocol import DigitalOutputProtocol, PowerProtocol
from labgrid.resource.common import Resource

from tests.acceptance.rig import Edges
from tests.acceptance.sim_camera import SimulatedCamera
from tests.acceptance.sim_rig import SimIndicatorWatch


@target_factory.reg_resource
@attr.s(eq=False)
class BodycamSimulator(Resource):  # type: ignore[misc]
    """A simulated camera kept in ``state_dir`` (provisioned on first use)."""

    state_dir: str = attr.ib(validator=attr.validators.instance_of(str))
    boot_s: float = attr.ib(default=20.0, converter=float)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.camera = SimulatedCamera(Path(self.state_dir))


def _camera(driver: Any) -> SimulatedCamera:
    camera: SimulatedCamera = driver.sim.camera
    return camera


class _OffThenOn(PowerProtocol):  # type: ignore[misc]
    """``cycle`` for the simulated switches: off, then on."""

    def cycle(self) -> None:
        self.off()
        self.on()


@target_factory.reg_driver
@attr.s(eq=False)
class BodycamSimPowerDriver(Driver, _OffThenOn):  # type: ignore[misc]
    """The camera's power: the daemon process runs while it is on."""

    bindings = {"sim": "BodycamSimulator"}  # noqa: RUF012 (labgrid's class attribute)

    def on_deactivate(self) -> None:
        _camera(self).stop()  # end of the session: switch off cleanly

    @Driver.check_active  # type: ignore[untyped-decorator]
    def on(self) -> None:
        _camera(self).start(within_s=self.sim.boot_s)

    @Driver.check_active  # type: ignore[untyped-decorator]
    def off(self) -> None:
        _camera(self).kill()


@target_factory.reg_driver
@attr.s(eq=False)
class BodycamSimDockDriver(Driver, _OffThenOn):  # type: ignore[misc]
    """The hub port on the camera's USB cable: on seats the camera in the dock."""

    bindings = {"sim": "BodycamSimulator"}  # noqa: RUF012

    @Driver.check_active  # type: ignore[untyped-decorator]
    def on(self) -> None:
        _camera(self).act({"do": "dock"})

    @Driver.check_active  # type: ignore[untyped-decorator]
    def off(self) -> None:
        camera = _camera(self)
        if camera.running:  # a camera without power is not on the bus either
            camera.act({"do": "undock"})


@target_factory.reg_driver
@attr.s(eq=False)
class BodycamSimButtonDriver(Driver, DigitalOutputProtocol):  # type: ignore[misc]
    """The GPIO across the record button: high holds the button down."""

    bindings = {"sim": "BodycamSimulator"}  # noqa: RUF012

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._pressed = False

    @Driver.check_active  # type: ignore[untyped-decorator]
    def set(self, status: bool) -> None:
        _camera(self).act({"do": "press" if status else "release"})
        self._pressed = bool(status)

    @Driver.check_active  # type: ignore[untyped-decorator]
    def get(self) -> bool:
        return self._pressed


@target_factory.reg_driver
@attr.s(eq=False)
class BodycamSimProbeDriver(Driver):  # type: ignore[misc]
    """A logic analyser on the LED and beeper lines, with SigrokDriver's capture/stop."""

    bindings = {"sim": "BodycamSimulator"}  # noqa: RUF012

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._watch: SimIndicatorWatch | None = None

    @Driver.check_active  # type: ignore[untyped-decorator]
    def capture(self, filename: str, samplerate: str = "200k") -> None:
        del filename, samplerate  # nothing is sampled: the simulated pins keep their changes
        self._watch = SimIndicatorWatch(_camera(self))

    @Driver.check_active  # type: ignore[untyped-decorator]
    def stop(self) -> list[dict[str, str]]:
        if self._watch is None:
            raise RuntimeError("stop without capture")
        watch, self._watch = self._watch, None
        return _rows(watch.stop())


def _rows(edges: Edges) -> list[dict[str, str]]:
    """The edges as sigrok's CSV rows, but one per change rather than one per sample."""
    state = {name: line[0][1] for name, line in edges.items()}
    changes = sorted((t, name, on) for name, line in edges.items() for t, on in line[1:])
    rows = [_row(0.0, state)]
    for t, name, on in changes:
        state[name] = on
        rows.append(_row(t, state))
    return rows


def _row(t: float, state: dict[str, bool]) -> dict[str, str]:
    return {"time": f"{t:.6f}", **{name: "1" if on else "0" for name, on in state.items()}}
