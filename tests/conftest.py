"""Options for the whole suite: which camera the acceptance tests run against."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        default="sim",
        help=(
            "camera for the hardware-in-the-loop tests: 'sim' (default: the daemon as its own "
            "process on the simulated board, docked over a pseudo-terminal) or "
            "'serial:/dev/ttyACM0' (a real camera on a bench, seen through its dock port)"
        ),
    )
