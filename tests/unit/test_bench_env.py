"""The documented bench environment is valid labgrid and gives the suite every role it asks for.

labgrid builds the target from the file here as on a bench (udev-matched resources simply
are not present on this machine), so a typo in a class, a binding or a role name fails
here rather than on the bench the night before a release.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labgrid import Environment
from labgrid.resource.base import SerialPort

from tests.acceptance.labgrid_rig import _REQUIRED_OPTIONS, _WIRING, LabgridRig, open_target
from tests.acceptance.rig import MissingPart, RigError

ENVS = Path(__file__).resolve().parents[1] / "acceptance" / "envs"
# The labgrid protocol each role is driven through (tests/acceptance/labgrid_rig.py).
ROLE_PROTOCOLS = {
    "dock": "PowerProtocol",
    "camera-power": "PowerProtocol",
    "record-button": "DigitalOutputProtocol",
}


@pytest.fixture
def bench() -> Iterator[tuple[Any, Any]]:
    env = Environment(config_file=str(ENVS / "bench-example.yaml"))
    target = env.get_target("main")
    assert target is not None
    yield env, target
    env.cleanup()


def test_every_role_is_a_driver_of_the_right_kind(bench: tuple[Any, Any]) -> None:
    _, target = bench
    assert set(ROLE_PROTOCOLS) | {"indicators"} == set(_WIRING), "a role without a check here"
    for role, protocol in ROLE_PROTOCOLS.items():
        driver = target.get_driver(protocol, name=role, activate=False)
        assert driver.name == role
    probe = [d for d in target.drivers if d.name == "indicators"]
    assert len(probe) == 1
    assert callable(getattr(probe[0], "capture", None))
    assert callable(getattr(probe[0], "stop", None))


def test_the_dock_port_is_the_camera_matched_by_its_device_id(bench: tuple[Any, Any]) -> None:
    env, target = bench
    [port] = [r for r in target.resources if r.name == "dock-port"]
    assert isinstance(port, SerialPort)
    device_id = env.config.get_target_option("main", "bodycam_device_id")
    assert port.match["ID_SERIAL_SHORT"] == device_id


def test_every_required_option_is_there(bench: tuple[Any, Any]) -> None:
    env, _ = bench
    for key in _REQUIRED_OPTIONS:
        assert env.config.get_target_option("main", key, None) is not None, key
    # The whole offload must fit the per-test limit, or pytest-timeout cuts it short.
    pyproject = tomllib.loads((ENVS.parents[2] / "pyproject.toml").read_text())
    per_test_s = pyproject["tool"]["pytest"]["ini_options"]["timeout"]
    assert float(env.config.get_target_option("main", "bodycam_session_s")) < per_test_s


def test_a_camera_that_never_enumerates_on_usb_is_a_clear_error_in_time(tmp_path: Path) -> None:
    # The bench's own kind of port (udev-matched USBSerialPort), for a camera that is not
    # there: docking switches the hub port on (a command here), then waits for udev.
    (tmp_path / "camera.toml").write_text("")
    (tmp_path / "bench.yaml").write_text(
        """
targets:
  main:
    resources:
      - USBSerialPort:
          name: dock-port
          match: {ID_SERIAL_SHORT: CAM-NOT-PLUGGED-IN}
    drivers:
      - ExternalPowerDriver: {name: dock, cmd_on: "true", cmd_off: "true"}
    options:
      bodycam_device_id: CAM-NOT-PLUGGED-IN
      bodycam_device_pub: CAM-NOT-PLUGGED-IN.pub
      bodycam_authority_key: authority.key
      bodycam_config: camera.toml
      bodycam_enumerate_s: 1.5
"""
    )
    env = Environment(config_file=str(tmp_path / "bench.yaml"))
    try:
        rig = LabgridRig(env, open_target(env))
        started = time.monotonic()
        with pytest.raises(RigError, match="never enumerated on the dock host within 2 s"):
            rig.dock()
        assert time.monotonic() - started < 10
        with pytest.raises(MissingPart, match="'record-button'"):
            rig.set_button(True)
    finally:
        env.cleanup()


def test_an_option_that_is_not_a_time_is_named(tmp_path: Path) -> None:
    (tmp_path / "camera.toml").write_text("")
    (tmp_path / "bench.yaml").write_text(
        """
targets:
  main:
    resources: []
    options:
      bodycam_device_id: CAM-0042
      bodycam_device_pub: CAM-0042.pub
      bodycam_authority_key: authority.key
      bodycam_config: camera.toml
      bodycam_boot_s: ninety
"""
    )
    env = Environment(config_file=str(tmp_path / "bench.yaml"))
    try:
        with pytest.raises(
            RigError, match="bodycam_boot_s must be a positive number, not 'ninety'"
        ):
            LabgridRig(env, open_target(env))
    finally:
        env.cleanup()
