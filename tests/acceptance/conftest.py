"""The camera the acceptance suite runs against: the simulator, or a labgrid target.

Without ``--lg-env`` (the default, and what ``.ci/run`` does) the camera is the simulator
in its own process. With ``--lg-env FILE`` (or ``LG_ENV``) it is the ``main`` target of
that labgrid environment: a camera on a bench, or ``envs/sim.yaml``, the simulator behind
the same labgrid roles. One camera serves the whole session, as on a bench; each test
starts from a camera that is powered, ready, undocked and not recording.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from tests.acceptance.gestures import hold_to_stop, wait_ready
from tests.acceptance.rig import CameraRig, MissingPart, RigError


def _labgrid_env(config: pytest.Config) -> Any | None:
    try:
        from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
    except ImportError:  # labgrid is only needed for benches
        return None
    return config.stash.get(LABGRID_ENV_KEY, None)


def _open_rig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> CameraRig:
    env = _labgrid_env(request.config)
    if env is None:
        from tests.acceptance.sim_rig import SimRig

        return SimRig(tmp_path_factory.mktemp("camera"))
    from tests.acceptance.labgrid_rig import LabgridRig, open_target

    target = open_target(env)  # first: a coordinator's refusal becomes one clear line
    # labgrid's own fixture records the environment and the place in the report.
    request.getfixturevalue("env")
    return LabgridRig(env, target)


@pytest.fixture(scope="session")
def camera_rig(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    record_testsuite_property: Callable[[str, object], None],
) -> Iterator[CameraRig]:
    problem: str | None = None
    try:
        rig = _open_rig(request, tmp_path_factory)
    except RigError as exc:
        problem = str(exc)
    if problem is not None:  # outside the except: one line, not a chain of tracebacks
        pytest.fail(problem, pytrace=False)
    record_testsuite_property("bodycam_rig", rig.name)
    try:
        _if_present(lambda: rig.power(True))  # a camera on a fixed supply is simply on
        wait_ready(rig)
        yield rig
    finally:
        rig.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True  # the rig fixture tidies up after a failed test only
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def rig(request: pytest.FixtureRequest, camera_rig: CameraRig) -> Iterator[CameraRig]:
    """The session's camera, known to be powered, undocked, released and not recording."""
    _if_present(lambda: camera_rig.set_button(False), camera_rig.undock)
    yield camera_rig
    if request.node.stash.get(_FAILED, False):
        _settle(camera_rig)


def _if_present(*steps: Callable[[], object]) -> None:
    for step in steps:
        with contextlib.suppress(MissingPart):
            step()


def _stop_any_recording(rig: CameraRig) -> None:
    # A test that failed mid-recording leaves the camera recording: a hold stops it and is
    # ignored by a camera that is not. Then wait out the double-press window.
    hold_to_stop(rig)
    time.sleep(rig.config.buttons.double_press_s)


def _settle(rig: CameraRig) -> None:
    # A failed test may leave the button held, the camera docked or recording.
    _if_present(
        lambda: rig.set_button(False),
        rig.undock,
        lambda: _stop_any_recording(rig),
    )
