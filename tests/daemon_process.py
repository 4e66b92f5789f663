"""The daemon as its own process on the simulated board, driven through its control socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bodycam.daemon.config import Config


def render_toml(sections: dict[str, dict[str, object]]) -> str:
    """TOML for a config of flat sections (strings, paths, numbers, booleans)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = repr(value)
            else:
                text = json.dumps(str(value))  # a JSON string is a valid TOML basic string
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def write_sim_config(
    path: Path,
    config: Config,
    socket_path: Path,
    *,
    speed: float,
    extra: dict[str, dict[str, object]] | None = None,
) -> None:
    """A small, fast camera (320x240, 1 s segments) for a daemon process driven by a socket.

    ``extra`` adds or overrides keys, section by section.
    """
    sections: dict[str, dict[str, object]] = {
        "device": {
            "state_dir": config.device.state_dir,
            "runtime_dir": config.device.runtime_dir,
        },
        "video": {"width": 320, "height": 240, "bitrate": 600000},
        "recording": {"pre_event_s": 1.0, "segment_s": 1.0},
        "sim": {"speed": speed, "control_socket": socket_path},
    }
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    path.write_text(render_toml(sections))


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bodycam.daemon.cli", "daemon", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def act(
    socket_path: Path, action: dict[str, object], *, timeout: float = 15.0
) -> dict[str, Any] | None:
    """Send one world action; its reply, or None if the daemon is not (yet) listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(socket_path))
                s.sendall(json.dumps(action).encode() + b"\n")
                reply: dict[str, Any] = json.loads(s.makefile().readline())
                assert reply["ok"], reply
                return reply
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.05)
    return None
