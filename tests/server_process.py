"""Helper servers for tests: free ports, waiting for a server, ser2net as labgrid runs it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def ser2net_path() -> str:
    found = shutil.which("ser2net") or (
        "/usr/sbin/ser2net" if Path("/usr/sbin/ser2net").exists() else None
    )
    assert found, "ser2net is not installed (./dev test installs it)"
    return found


def ser2net_command(device: Path, port: int) -> list[str]:
    # The labgrid exporter's own ser2net settings (labgrid/remote/exporter.py, ser2net >= 4.2).
    config = [
        f"connection: &con01#  accepter: telnet(rfc2217,mode=server),tcp,{port}",
        f"  connector: serialdev(nouucplock=true),{device},115200n81,local",
        "  options:",
        "    max-connections: 10",
    ]
    return [ser2net_path(), "-d", "-n", *(arg for line in config for arg in ("-Y", line))]
