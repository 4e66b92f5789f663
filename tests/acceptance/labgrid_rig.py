"""A camera on a labgrid bench (or the simulator dressed as one): ``pytest --lg-env FILE``.

The suite asks the environment's ``main`` target for parts by role name, so one file
describes which equipment plays each role on a given bench (``docs/hil.md`` has a full
example):

============== ====================================== =====================================
role name      labgrid kind                           on the bench
============== ====================================== =====================================
dock-port      a SerialPort resource (RawSerialPort,  the camera's gadget serial port on the
               USBSerialPort), or the NetworkSerialPort dock host, named by the udev rule;
               a RemotePlace brings (RFC 2217)        exported by ser2net for a shared bench
dock           PowerProtocol driver                   the switchable hub port carrying the
                                                      camera's USB: on = docked
camera-power   PowerProtocol driver                   the relay or supply feeding the camera
record-button  DigitalOutputProtocol driver           a GPIO (through an opto) across the
                                                      record button
indicators     SigrokDriver (capture/stop)            a logic analyser on the red LED, green
                                                      LED and beeper lines
============== ====================================== =====================================

The target's ``options`` say which camera it is (``bodycam_device_id``,
``bodycam_device_pub``), which test force it answers to (``bodycam_authority_key``) and
what it runs (``bodycam_config``: the config flashed onto it), plus optional timeouts. A
role the environment lacks makes the tests that need it skip, naming the role.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from labgrid.exceptions import NoDriverFoundError, NoResourceFoundError
from labgrid.remote.client import ServerError, UserError
from labgrid.resource import NetworkSerialPort
from labgrid.resource.base import SerialPort
from labgrid.util.proxy import proxymanager

from bodycam.daemon.config import Config, ConfigError, load_config
from tests.acceptance.indicator_checks import edges_from_samples
from tests.acceptance.rig import CameraIdentity, Edges, MissingPart, RigError, RigTimeouts

_WIRING = {
    "dock": "a switchable USB hub port (USBPowerDriver) or relay on the camera's USB cable",
    "camera-power": "a relay or switchable supply feeding the camera",
    "record-button": "a GPIO output (GpioDigitalOutputDriver) across the record button",
    "indicators": "a logic analyser (SigrokDriver) on the LED and beeper lines",
}
_REQUIRED_OPTIONS = (
    "bodycam_device_id",
    "bodycam_device_pub",
    "bodycam_authority_key",
    "bodycam_config",
)


def open_target(env: Any) -> Any:
    """The environment's ``main`` target, or a RigError naming what stood in the way.

    With a ``RemotePlace`` this is where the coordinator is asked for the place: an
    unreachable coordinator or a place this run has not acquired fails here, at once.
    """
    try:
        target = env.get_target("main")
    except (ServerError, UserError) as exc:
        coordinator = env.config.get_option("coordinator_address", "") or "LG_COORDINATOR"
        raise RigError(f"{env.config_file}: labgrid coordinator {coordinator}: {exc}") from exc
    if target is None:
        raise RigError(f"{env.config_file}: no target named 'main'")
    return target


class ProbeWatch:
    """A running logic-analyser capture; ``stop`` turns its samples into edges."""

    def __init__(self, probe: Any, samplerate: str, workdir: Path) -> None:
        self._probe = probe
        probe.capture(str(workdir / "indicators.sr"), samplerate=samplerate)

    def stop(self) -> Edges:
        return edges_from_samples(self._probe.stop())


class LabgridRig:
    """Implements CameraRig with the drivers and resources of a labgrid target."""

    def __init__(self, env: Any, target: Any) -> None:
        self._target = target
        config_file = env.config_file
        self.name = f"labgrid target {target.name!r} of {config_file}"

        def option(key: str, default: object = None) -> Any:
            return env.config.get_target_option(target.name, key, default)

        def seconds(key: str, default: float) -> float:
            value = option(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise RigError(f"{config_file}: {key} must be a positive number, not {value!r}")
            return float(value)

        missing = [key for key in _REQUIRED_OPTIONS if option(key) is None]
        if missing:
            raise RigError(
                f"{config_file}: target {target.name!r} needs options {', '.join(missing)} "
                "(which camera is on the bench and which test force it answers to: docs/hil.md)"
            )
        resolve = env.config.resolve_path
        self.identity = CameraIdentity(
            device_id=str(option("bodycam_device_id")),
            device_pub=Path(resolve(option("bodycam_device_pub"))),
            authority_key=Path(resolve(option("bodycam_authority_key"))),
        )
        config_path = Path(resolve(option("bodycam_config")))
        try:
            self.config: Config = load_config(config_path)
        except (ConfigError, OSError) as exc:
            raise RigError(f"{config_file}: bodycam_config {config_path}: {exc}") from exc
        self.timeouts = RigTimeouts(
            boot_s=seconds("bodycam_boot_s", 90.0),
            enumerate_s=seconds("bodycam_enumerate_s", 30.0),
            session_s=seconds("bodycam_session_s", 240.0),
        )
        self.timing_tolerance_s = seconds("bodycam_timing_tolerance_s", 0.05)
        self._samplerate = str(option("bodycam_probe_samplerate", "50k"))
        self._workdir = Path(tempfile.mkdtemp(prefix="bodycam-bench-"))

    # --- parts by role -------------------------------------------------------------------

    def _driver(self, protocol: str, role: str) -> Any:
        try:
            return self._target.get_driver(protocol, name=role)
        except NoDriverFoundError as exc:
            raise MissingPart(
                f"{self.name} has no {protocol} driver named {role!r} ({_WIRING[role]})"
            ) from exc

    def _probe(self) -> Any:
        for driver in self._target.drivers:
            if driver.name == "indicators" and hasattr(driver, "capture"):
                self._target.activate(driver)
                return driver
        raise MissingPart(f"{self.name} has no driver named 'indicators' ({_WIRING['indicators']})")

    def _dock_port(self) -> Any:
        for resource in self._target.resources:
            if resource.name == "dock-port" and isinstance(
                resource, SerialPort | NetworkSerialPort
            ):
                return resource
        raise MissingPart(
            f"{self.name} has no serial port resource named 'dock-port' (the camera's port on "
            "the dock host: a RawSerialPort on the udev name, or a USBSerialPort match)"
        )

    # --- CameraRig -----------------------------------------------------------------------

    def set_button(self, pressed: bool) -> None:
        self._driver("DigitalOutputProtocol", "record-button").set(pressed)

    def watch_indicators(self) -> ProbeWatch:
        return ProbeWatch(self._probe(), self._samplerate, self._workdir)

    def dock(self) -> str:
        port = self._dock_port()
        if isinstance(port, NetworkSerialPort) and port.protocol != "rfc2217":
            raise MissingPart(f"{self.name}: dock-port speaks {port.protocol!r}, not rfc2217")
        self._driver("PowerProtocol", "dock").on()
        self._await_enumeration(port)
        if isinstance(port, NetworkSerialPort):
            # Exported by a labgrid exporter (ser2net); proxymanager adds the SSH forward
            # when the exporter is only reachable through it.
            host, number = proxymanager.get_host_and_port(port)
            return f"rfc2217://{host}:{number}"
        return self._await_local_path(port)

    def _await_enumeration(self, port: Any) -> None:
        try:
            # A USBSerialPort (or its exported twin) waits for udev to report the camera;
            # a RawSerialPort is static and passes at once.
            self._target.await_resources([port], timeout=self.timeouts.enumerate_s)
        except NoResourceFoundError as exc:
            raise RigError(
                f"{self.name}: the camera never enumerated on the dock host within "
                f"{self.timeouts.enumerate_s:.0f} s of docking ({exc})"
            ) from exc

    def _await_local_path(self, port: Any) -> str:
        within = self.timeouts.enumerate_s
        deadline = time.monotonic() + within
        while True:
            path = str(port.port) if port.port else ""
            if path and os.access(path, os.R_OK | os.W_OK):
                return path
            if time.monotonic() > deadline:
                raise RigError(
                    f"{self.name}: the camera never enumerated on the dock host: "
                    f"{path or 'dock-port'} missing or not accessible {within:.0f} s after docking"
                )
            time.sleep(0.05)

    def undock(self) -> None:
        self._driver("PowerProtocol", "dock").off()

    def power(self, on: bool) -> None:
        driver = self._driver("PowerProtocol", "camera-power")
        if on:
            driver.on()
        else:
            driver.off()

    def close(self) -> None:
        with contextlib.suppress(MissingPart):
            self.undock()
        shutil.rmtree(self._workdir, ignore_errors=True)
