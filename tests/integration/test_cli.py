"""The ``bodycam`` command as a user runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ffprobe

SHORT_SHIFT = """
name = "cli test shift"
end = 14
[config.recording]
pre_event_s = 2
[[steps]]
at = 4
do = "double_press"
[[steps]]
at = 9
do = "hold"
seconds = 3.5
"""


def bodycam(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bodycam.daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def sim_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    scenario = out / "shift.toml"
    scenario.write_text(SHORT_SHIFT)
    run = bodycam(
        "sim",
        "--scenario",
        str(scenario),
        "--speed",
        "6",
        "--resolution",
        "320x240",
        "--no-view",
        "--out",
        str(out / "run"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 clip(s) committed, 0 rejected" in run.stdout  # the shift ends in the dock
    assert "camera card: 0 clip(s) left" in run.stdout
    assert "OK" in run.stdout
    return out / "run"


def stored_clips(sim_out: Path) -> Path:
    """Where the dock put the camera's clips (they left the card once committed)."""
    return sim_out / "dock" / "store" / "clips" / "BODYCAM-SIM-0001"


def clip_dir(sim_out: Path) -> Path:
    return next(p for p in stored_clips(sim_out).iterdir() if p.is_dir())


def test_sim_exports_a_file_ffprobe_reads(sim_out: Path) -> None:
    exported = list((sim_out / "exported").glob("*.ts"))
    assert len(exported) == 1
    probe = ffprobe(exported[0])
    assert probe["errors"] == ""
    assert int(probe["streams"][0]["nb_read_frames"]) > 30 * 6


def test_verify_accepts_then_names_the_altered_segment(sim_out: Path, tmp_path: Path) -> None:
    pub = sim_out / "camera" / "keys" / "device.pub"
    ok = bodycam("verify", str(stored_clips(sim_out)), "--device-key", str(pub))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 of 1 clip(s) verified" in ok.stdout

    copy = tmp_path / "clip"
    shutil.copytree(clip_dir(sim_out), copy)
    victim = sorted(copy.glob("seg-*.bcs"))[2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = bodycam("verify", str(copy), "--device-key", str(pub))
    assert bad.returncode == 1
    assert victim.name in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_export_to_mp4_plays(sim_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    run = bodycam(
        "export",
        str(clip_dir(sim_out)),
        "--force-key",
        str(sim_out / "force" / "force.key"),
        "-o",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    probe = ffprobe(out)
    assert probe["errors"] == ""
    assert probe["streams"][0]["codec_name"] == "h264"


def test_export_with_the_wrong_key_is_refused_clearly(sim_out: Path, tmp_path: Path) -> None:
    keygen = bodycam("keygen", "force", str(tmp_path / "other"))
    assert keygen.returncode == 0, keygen.stderr
    run = bodycam(
        "export",
        str(clip_dir(sim_out)),
        "--force-key",
        str(tmp_path / "other" / "force.key"),
        "-o",
        str(tmp_path / "x.ts"),
    )
    assert run.returncode == 1
    assert run.stderr.startswith("bodycam: error:")
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x.ts").exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[recording]\npre_event_s = 500\n", "recording.pre_event_s"),
        ("[recording]\npre_event = 5\n", "recording.pre_event: unknown key"),
        ("[video\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    run = bodycam("daemon", "--config", str(config))
    assert run.returncode == 2
    assert named in run.stderr
    assert "Traceback" not in run.stderr


def test_unprovisioned_camera_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path}"\n')
    run = bodycam("daemon", "--config", str(config))
    assert run.returncode != 0
    assert "device.key" in run.stderr
    assert "Traceback" not in run.stderr


def test_pi_board_without_its_hardware_runs_and_names_each_missing_part(
    sim_out: Path, tmp_path: Path
) -> None:
    # A laptop has no picamera2, no GPIO, no fuel gauge and no USB gadget: the Pi board
    # still starts, says which part is missing and which key configures it, warns, and
    # stops cleanly. No traceback, no crash loop.
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\nstate_dir = "{sim_out / "camera"}"\nruntime_dir = "{tmp_path / "run"}"\n'
        'board = "pi"\n[battery]\nsupply = "bodycam-test-absent"\npoll_s = 0.5\n'
        f'[gadget]\ntty = "{tmp_path / "ttyGS0"}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bodycam.daemon.cli", "daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    status_path = tmp_path / "run" / "status.json"
    keys = ("pins.red_led", "pins.record_button", "battery.supply", "gadget.tty")
    try:
        deadline = time.monotonic() + 30
        status: dict[str, Any] = {"warnings": [], "hardware_faults": []}
        while time.monotonic() < deadline:
            if status_path.exists():
                status = json.loads(status_path.read_text())
                faults = " | ".join(status["hardware_faults"])
                if {"CAMERA_FAULT", "HARDWARE_FAULT"} <= set(status["warnings"]) and all(
                    key in faults for key in keys
                ):
                    break
            time.sleep(0.1)
        assert {"CAMERA_FAULT", "HARDWARE_FAULT"} <= set(status["warnings"]), status
        faults = " | ".join(status["hardware_faults"])
        for key in keys:
            assert key in faults
        assert status["state"] == "BUFFERING"  # a missing power switch counts as on
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "camera (camera.index = 0)" in stderr
    assert "python3-picamera2" in stderr
    assert "Traceback" not in stderr


def test_daemon_speaks_systemd_notify_and_stops_on_sigterm(sim_out: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\nstate_dir = "{sim_out / "camera"}"\nruntime_dir = "{tmp_path / "run"}"\n'
        "[video]\nwidth = 320\nheight = 240\n"
    )
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(notify_path))
        server.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bodycam.daemon.cli", "daemon", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            messages = [server.recv(4096).decode()]
            while not messages[-1].startswith("READY=1"):
                messages.append(server.recv(4096).decode())
            assert messages[-1] == "READY=1\nSTATUS=BUFFERING"
            # The watchdog pings at half of WATCHDOG_USEC (state STATUS lines may come between).
            while "WATCHDOG=1" not in messages:
                messages.append(server.recv(4096).decode())
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages:
                messages.append(server.recv(4096).decode())
            # A second SIGTERM during shutdown (an impatient operator) changes nothing.
            proc.send_signal(signal.SIGTERM)
        finally:
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    status = (tmp_path / "run" / "status.json").read_text()
    assert '"state": "STOPPED"' in status
