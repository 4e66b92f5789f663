"""Peak memory of the daemon process with a 30 s pre-event buffer at 8 Mbit/s.

The daemon runs as its own process (``bodycam daemon``) on the simulated board with the
synthetic sensor at 720p30, 8 Mbit/s, at 4x speed, buffers for 40 simulated seconds, then
records 10. Peak RSS is the kernel's VmHWM. The same-run baseline is the same daemon with
no pre-event buffer. Target: peak <= 1.3 x buffer + 60 MB.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_config

BITRATE = 8_000_000
PRE_EVENT_S = 30.0


def proc_status(pid: int, field: str) -> int:
    """A size from /proc/PID/status in bytes (VmHWM: peak RSS; RssAnon: private memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def act(path: Path, action: dict[str, object]) -> None:
    for _ in range(400):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(json.dumps(action).encode() + b"\n")
                s.makefile().readline()
                return
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.05)
    raise RuntimeError("daemon never listened")


def run(tmp: Path, pre_event_s: float) -> tuple[int, int]:
    config = bench_config(tmp)
    toml = tmp / "config.toml"
    sock = tmp / "world.sock"
    device = config.device
    toml.write_text(
        f'[device]\nstate_dir = "{device.state_dir}"\nruntime_dir = "{device.runtime_dir}"\n'
        f"[video]\nwidth = 1280\nheight = 720\nfps = 30\nbitrate = {BITRATE}\n"
        f"[recording]\npre_event_s = {pre_event_s}\n"
        f'[sim]\ncamera = "synthetic"\nspeed = 4.0\ncontrol_socket = "{sock}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bodycam.daemon.cli", "daemon", "--config", str(toml)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        act(sock, {"do": "wait", "seconds": 40})
        act(sock, {"do": "double_press"})
        act(sock, {"do": "wait", "seconds": 10})
        peak = proc_status(proc.pid, "VmHWM")
        anon = proc_status(proc.pid, "RssAnon")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return peak, anon


def main() -> None:
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as a,
        tempfile.TemporaryDirectory(dir=Path.cwd()) as b,
    ):
        baseline, _ = run(Path(a), 0.0)
        peak, anon = run(Path(b), PRE_EVENT_S)
    buffer = PRE_EVENT_S * BITRATE / 8
    target = 1.3 * buffer + 60e6
    mb = 1e6
    print(f"buffer {buffer / mb:.0f} MB; peak RSS {peak / mb:.1f} MB")
    print(f"same daemon without a buffer: {baseline / mb:.1f} MB")
    cost = peak - baseline
    print(f"buffer cost: {cost / mb:.1f} MB = {cost / buffer:.2f} x the buffer")
    # Shared-library pages (libav*, libcrypto, Python) count in RSS but are shared with
    # every other process that maps them; the private part is the daemon's own.
    print(f"of which private (anonymous) at the end: {anon / mb:.1f} MB")
    print(f"peak_rss ratio (peak / (1.3 x buffer + 60 MB)): {peak / target:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
