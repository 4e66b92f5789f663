"""Run the benchmarks: ``./dev bench`` (all) or ``./dev bench NAME [NAME ...]``.

Each prints its figure as a ratio against a baseline measured in the same run, because the
machine is shared and absolute times lie.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

BENCHMARKS = [
    "recording_path",
    "cpu_share",
    "led_latency",
    "peak_rss",
    "shift_speed",
    "dock_offload",
    "dock_memory",
    "unit_exposure",
    "fleet",
]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        # Each in its own process: memory and CPU figures must not include the others.
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        failed += code != 0
    importlib.invalidate_caches()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
