"""Helper servers for tests: waiting for a server to listen, ser2net as labgrid runs it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.unit.systemd_helpers import require_tool


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def server(command: list[str], *, log: Path, ready: Callable[[], bool]) -> Iterator[None]:
    """A helper server process, running until the block ends; its log explains a failed start."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=log.parent, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def ser2net_command(device: Path, port: int) -> list[str]:
    # The labgrid exporter's own ser2net settings (labgrid/remote/exporter.py, ser2net >= 4.2).
    config = [
        f"connection: &con01#  accepter: telnet(rfc2217,mode=server),tcp,{port}",
        f"  connector: serialdev(nouucplock=true),{device},115200n81,local",
        "  options:",
        "    max-connections: 10",
    ]
    return [
        require_tool("ser2net", "ser2net"),
        "-d",
        "-n",
        *(arg for line in config for arg in ("-Y", line)),
    ]
