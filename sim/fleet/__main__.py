"""``python -m bodycam.sim.fleet``: the same as ``bodycam fleet`` (benchmarks run it so)."""

from __future__ import annotations

import argparse
import sys

from bodycam.sim.fleet.cli import add_fleet_arguments, run_fleet_command


def main(argv: list[str] | None = None) -> int:
    """Parse the ``bodycam fleet`` options and run."""
    parser = argparse.ArgumentParser(prog="bodycam fleet", description=__doc__)
    add_fleet_arguments(parser)
    return run_fleet_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
