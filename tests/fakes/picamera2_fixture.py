"""Install the fake ``picamera2`` (and ``libcamera``) for one test.

Usage::

    from tests.fakes.picamera2_fixture import FakeWorld, install_fake_picamera2

    @pytest.fixture
    def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
        return install_fake_picamera2(monkeypatch)

Afterwards ``import picamera2`` (and ``picamera2.encoders``, ``picamera2.outputs``,
``libcamera``) load the fakes in ``tests/fakes``; at the test's teardown monkeypatch takes them
out of ``sys.modules`` and ``sys.path`` again, so the next test (or real code) never sees them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from tests.fakes.picamera2 import FakeWorld

if TYPE_CHECKING:
    import pytest

__all__ = ["FAKES_DIR", "FakeWorld", "install_fake_picamera2"]

FAKES_DIR = Path(__file__).resolve().parent
_FAKED = ("picamera2", "libcamera")
_SUBMODULES = ("picamera2", "picamera2.encoders", "picamera2.outputs", "libcamera")


def _faked(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in _FAKED)


def install_fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    """Make ``picamera2`` and ``libcamera`` imports resolve to the fakes until teardown.

    Args:
        monkeypatch: The test's monkeypatch; every change is undone at its teardown.

    Returns:
        The fake's world (``picamera2.fake_world``), reset: one camera attached, no faults.
        It is a fresh object for every call: each call imports the fake anew. (Its class is
        the fake's ``FakeWorld`` as loaded under the name ``picamera2``, a twin of the one
        exported here for annotations: use its attributes, do not isinstance() it.)
    """
    # Anything already imported under these names (a real picamera2 on a Pi, or a leftover)
    # is set aside and put back at teardown.
    for name in [n for n in sys.modules if _faked(n)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    before = set(sys.modules)
    for name in _SUBMODULES:
        importlib.import_module(name)
    # Re-register what the imports added through monkeypatch, which records them as absent
    # before: its undo deletes them.
    for name in [n for n in sys.modules if n not in before and _faked(n)]:
        module = sys.modules.pop(name)
        monkeypatch.setitem(sys.modules, name, module)
    fake = sys.modules["picamera2"]
    if Path(str(fake.__file__)).resolve().parent != FAKES_DIR / "picamera2":
        raise RuntimeError(f"install_fake_picamera2: 'picamera2' resolved to {fake.__file__}")
    world = cast("FakeWorld", fake.fake_world)
    world.reset()
    return world
