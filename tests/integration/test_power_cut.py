"""Power cuts: SIGKILL the daemon process at random moments, restart, verify everything.

The daemon runs as its own process on the simulated board (as it would under systemd),
and a control socket plays the officer. Each cycle records, is killed without warning,
and the next start must recover: every segment sealed before the kill is still there,
byte for byte, and every clip verifies. At most the segment being written is lost.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from bodycam.daemon.evidence.keys import load_device_public_key
from bodycam.daemon.evidence.verify import verify_path
from tests.daemon_process import act, start_daemon, write_sim_config
from tests.integration.conftest import make_rig

CYCLES = 20
SEED = int(os.environ.get("BODYCAM_POWER_CUT_SEED", "20261122"))


def sealed_segments(clips: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(clips.glob("*/seg-*.bcs"))
    }


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_sealed_segment(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    rig = make_rig(tmp_path)
    config, sock, log = tmp_path / "config.toml", tmp_path / "world.sock", tmp_path / "daemon.log"
    write_sim_config(config, rig.config, sock, speed=1.0)
    clips = rig.config.clips_dir
    seen: dict[Path, str] = {}
    for cycle in range(CYCLES):
        proc = start_daemon(config, log)
        try:
            # Kill during start-up and recovery now and then, mostly while recording.
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                assert act(sock, {"do": "double_press"}), f"cycle {cycle}: daemon never listened"
                time.sleep(rng.uniform(0.2, 3.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        now = sealed_segments(clips) if clips.exists() else {}
        for path, digest in seen.items():
            assert now.get(path) == digest, (
                f"cycle {cycle} (seed {SEED}): sealed {path.name} changed or vanished"
            )
        seen = now

    # A last clean start recovers what the last kill left, then SIGTERM seals and exits.
    proc = start_daemon(config, log)
    assert act(sock, {"do": "outputs"}), "daemon did not come back after the last kill"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()

    for path, digest in seen.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    verdicts = verify_path(clips, device_key=load_device_public_key(rig.device_pub))
    bad = [(v.directory.name, v.problems) for v in verdicts if not v.ok]
    assert bad == [], f"seed {SEED}: {bad}"
    assert len(verdicts) >= CYCLES * 0.6, "too few cycles got as far as recording"
    assert not list(clips.glob("*/*.part")), "unsealed segment left behind after recovery"
