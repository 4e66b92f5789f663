"""systemd exposure of the units, against the same units without their hardening.

``systemd-analyze security --offline=yes`` rates each unit as `bodycam install` lays it out
(0 = locked down, 10 = fully exposed). The baseline, measured in the same run, is the same
unit with every sandboxing line taken out (what the service needs to run is kept: type,
command, user, directories, restart and watchdog), so the ratio is what the hardening buys.
Target (issue 4): the camera daemon's exposure <= 2.0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bodycam.daemon.install import install

UNITS = {
    "bodycam.service": "bodycam.service",
    "bodycam-gadget.service": "bodycam-gadget.service",
    "bodycam-dock@.service": "bodycam-dock@ttyACM0.service",
}
TARGET = 2.0
UNIT_DIR = Path("usr/lib/systemd/system")
# What a service needs to run at all; everything else in [Service] is hardening.
ESSENTIAL = {
    "Type", "NotifyAccess", "ExecStart", "ExecStop", "ExecStartPre", "Restart", "RestartSec",
    "WatchdogSec", "TimeoutStopSec", "TimeoutStartSec", "RemainAfterExit", "User", "Group",
    "StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "ConfigurationDirectory",
    "Environment",
}  # fmt: skip


def strip_hardening(text: str) -> str:
    lines, section = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key = stripped.split("=", 1)[0] if "=" in stripped else ""
        if section == "[Service]" and key and key not in ESSENTIAL:
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def exposure(analyze: str, root: Path, unit: str) -> float:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if found is None:
        raise SystemExit(f"no exposure level for {unit}: {result.stderr.strip()}")
    return float(found.group(1))


def lay_out(root: Path) -> None:
    install(root, role="camera", venv=False)
    install(root, role="dock", venv=False)
    stub = root / "opt/bodycam/venv/bin/bodycam"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)


def main() -> int:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze not found (apt-get install systemd)")
        return 1
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        hardened, baseline = Path(tmp) / "hardened", Path(tmp) / "baseline"
        lay_out(hardened)
        lay_out(baseline)
        for name in UNITS:
            path = baseline / UNIT_DIR / name
            path.write_text(strip_hardening(path.read_text()))
        for name, unit in UNITS.items():
            level = exposure(analyze, hardened, unit)
            base = exposure(analyze, baseline, unit)
            mark = ""
            if name == "bodycam.service":
                ok = level <= TARGET
                failed |= not ok
                mark = f"  target <= {TARGET}: {'met' if ok else 'MISSED'}"
            ratio = level / base
            print(f"{unit:32} exposure {level:.1f}  baseline {base:.1f}  ratio {ratio:.2f}{mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
