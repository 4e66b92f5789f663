"""Suite-wide hooks: the command line checked before any plugin acts on it, and the slow half."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # labgrid's plugin loads the --lg-env file in its own pytest_configure, where a bad file
    # (missing, malformed, an LG_* variable not set) ends as an INTERNALERROR traceback. Load
    # it first, so that the same mistake is one line that says what to fix.
    lg_env = config.getoption("lg_env", None) or os.environ.get("LG_ENV")
    if not lg_env:
        return
    try:
        from labgrid.config import Config
        from labgrid.exceptions import InvalidConfigError, NoConfigFoundError
    except ImportError:
        raise pytest.UsageError(
            f"--lg-env {lg_env}: labgrid is not installed (pip install 'bodycam[hil]')"
        ) from None
    try:
        Config(lg_env)
    except (InvalidConfigError, NoConfigFoundError) as exc:
        raise pytest.UsageError(f"--lg-env {lg_env}: {exc}") from None


_ACCEPTANCE = Path(__file__).parent / "acceptance"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The acceptance suite drives whole daemons in their own processes: it belongs to the slow
    # half, which `./dev test` runs after the fast one (a failure in the fast half shows first).
    for item in items:
        if item.path.is_relative_to(_ACCEPTANCE):
            item.add_marker(pytest.mark.slow)
