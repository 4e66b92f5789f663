"""The documented bench environment is valid labgrid and gives the suite every role it asks for.

labgrid builds the target from the file here as on a bench (udev-matched resources simply
are not present on this machine), so a typo in a class, a binding or a role name fails
here rather than on the bench the night before a release.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labgrid import Environment
from labgrid.resource.base import SerialPort

from tests.acceptance.labgrid_rig import _REQUIRED_OPTIONS, _WIRING

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
