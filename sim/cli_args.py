"""Arguments of ``bodycam sim`` (kept apart so ``bodycam --help`` stays cheap)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("resolution must look like 1280x720") from None
    return width, height


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", type=Path, help="a shift script (TOML); default: a short shift"
    )
    parser.add_argument(
        "--speed", type=float, help="simulated seconds per real second (default from scenario, 1)"
    )
    parser.add_argument("--out", type=Path, help="where clips go (default ./sim-output/<time>)")
    parser.add_argument("--resolution", type=_resolution, help="e.g. 640x360 (default 1280x720)")
    parser.add_argument("--config", type=Path, help="a device config TOML to start from")
    parser.add_argument(
        "--no-view", action="store_true", help="print events as lines instead of a live view"
    )
    parser.add_argument(
        "--no-dock",
        action="store_true",
        help="end the shift without docking (the clips stay on the card)",
    )
    parser.add_argument("--control-socket", type=Path, help="also let another process act")
    parser.add_argument(
        "--broker",
        help="publish telemetry to this MQTT broker (mqtt://host[:port]; default: none)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
