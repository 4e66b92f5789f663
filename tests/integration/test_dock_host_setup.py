"""docs/hardware.md's dock host section, followed from an empty machine, then a docking.

The section's first shell block is run by bash, line for line, with the machine's absolute
paths (``/opt``, ``/etc``, ``/var``, ``/tmp``) moved into a temporary root. What cannot run
inside a test is played by small shell functions, each named here: ``apt-get`` (the
package is there), ``python3 -m venv`` and ``pip install`` (a venv whose ``bodycam`` runs
this checkout: building the wheel is ``test_install_builds_the_venv``'s job), ``bodycam`` on
the offline machine (this checkout), ``systemctl``/``udevadm``/``journalctl`` (no booted
systemd), and ``sudo -u bodycam-dock`` (as root: ``setpriv`` to the uid that the laid-out
root's ``etc/passwd`` gives the user; not root: the command runs as the test's user, and
``install -o/-g`` drops the owner).

Then a provisioned camera (the daemon on the simulated board) records two clips and docks:
the agent runs as the unit's own ``ExecStart=`` (the drop-in's, as systemd would pick it)
with ``%I`` the camera's pty and ``%d`` a credentials directory made the way
``LoadCredential=`` makes it, as the store's owner, publishing to a mutual-TLS mosquitto.
The section's check block must then list both clips, committed, under the camera's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bodycam.daemon.config import load_config
from bodycam.daemon.evidence.keys import generate_device_key, generate_force_keypair
from bodycam.daemon.evidence.store import list_clips
from bodycam.daemon.install import install
from bodycam.daemon.provision import provision
from bodycam.dock.store import DockStore
from bodycam.drivers.serial_link import FdLink, PtyPair, open_pty_pair, open_serial
from bodycam.sim.broker import LocalMosquitto
from bodycam.sim.faulty_cable import FaultyCable
from tests.integration.conftest import RECORD_TWO_CLIPS, SimRig, running_camera
from tests.telemetry_helpers.certs import TestCA
from tests.unit.systemd_helpers import (
    REPO,
    UnitFile,
    parse_unit,
    provide_host_units,
    require_tool,
    run_tool,
)

# Its own processes and real time: in the slow half of the suite (./dev test runs it second).
pytestmark = pytest.mark.slow

HARDWARE_DOC = REPO / "docs" / "hardware.md"
DEVICE_ID = "MET-BWV-004711"  # the id the docs enrol
DOCK_ID = "DOCK-01"
UNIT = "bodycam-dock@.service"
AS_ROOT = os.geteuid() == 0

# The machine's paths that the docs name; each moves under the temporary root.
_MACHINE_PATH = re.compile(r"(?<=[\s=])/(?=(?:opt|etc|var|tmp)/)")
_ROOT_ARG = re.compile(r"--root /(?=\s|$)")
_HEREDOC = re.compile(r"<<-?'?(\w+)'?")


def dock_section_blocks() -> list[str]:
    """The ```sh blocks of docs/hardware.md's "The dock host" section, in order."""
    text = HARDWARE_DOC.read_text(encoding="utf-8")
    section = text.split("\n## The dock host\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def moved_into(root: Path, script: str) -> str:
    """``script`` with the machine's paths under ``root`` (heredoc bodies kept as written:
    they are file contents, read by systemd inside the root)."""
    lines: list[str] = []
    heredoc_end: str | None = None
    for line in script.splitlines():
        if heredoc_end is not None:
            lines.append(line)
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        moved = _ROOT_ARG.sub(f"--root {root}", _MACHINE_PATH.sub(f"{root}/", line))
        lines.append(moved)
        if match := _HEREDOC.search(line):
            heredoc_end = match[1]
    return "\n".join(lines) + "\n"


# Shell functions that play what a test cannot do for real (see the module docstring).
_PLAYERS = r"""
set -euo pipefail
apt-get() { echo "(test) apt-get $*: installed already"; }
systemctl() { echo "(test) systemctl $*: no booted systemd here"; }
udevadm() { echo "(test) udevadm $*: no udevd here"; }
journalctl() { echo "(test) journalctl $*: the agent's output is checked by the test"; }
bodycam() { "$CHECKOUT_PYTHON" -m bodycam.daemon.cli "$@"; }
python3() {
    if [ "$1" = -m ] && [ "$2" = venv ]; then
        # A real venv of a Python every user may run, seeing this checkout's packages.
        "$AGENT_PYTHON" -m venv --without-pip "$3"
        local site
        site=$("$3/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
        echo "import site; site.addsitedir('$CHECKOUT_SITE')" > "$site/bodycam-checkout.pth"
        # pip install puts the console script in place (exec'ing the venv's own python).
        printf '#!/bin/sh\nexec "$(dirname "$0")/python" -m bodycam.daemon.cli "$@"\n' \
            > "$3/bin/.bodycam-from-pip"
        printf '#!/bin/sh\nd=$(dirname "$0")\nmv "$d/.bodycam-from-pip" "$d/bodycam"\n' \
            > "$3/bin/pip"
        chmod 755 "$3/bin/.bodycam-from-pip"
        chmod 755 "$3/bin/pip"
    else
        command python3 "$@"
    fi
}
install() {
    if [ "$(id -u)" = 0 ]; then command install "$@"; return; fi
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in -o|-g) shift 2 ;; *) args+=("$1"); shift ;; esac
    done
    command install "${args[@]}"
}
sudo() {
    if [ "$1" != -u ]; then "$@"; return; fi
    local user=$2
    shift 2
    if [ "$(id -u)" != 0 ]; then "$@"; return; fi
    local ids
    ids=$(awk -F: -v u="$user" '$1 == u { print $3 " " $4 }' "$DOCK_ROOT/etc/passwd")
    [ -n "$ids" ] || { echo "no user $user in $DOCK_ROOT/etc/passwd" >&2; return 1; }
    setpriv --reuid "${ids% *}" --regid "${ids#* }" --clear-groups -- "$@"
}
"""


def _everyone_may_run(path: Path) -> bool:
    if not path.is_file() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def agent_python() -> Path:
    """This Python (or the system's of the same version) if every user may run it.

    The agent runs as bodycam-dock; a Python under root's home (pyenv) is closed to it.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.executable).resolve(), Path("/usr/bin") / version]
    candidates.append(Path("/usr/local/bin") / version)
    for candidate in candidates:
        if not AS_ROOT or _everyone_may_run(candidate.resolve()):
            return candidate
    pytest.skip(f"no {version} that the bodycam-dock user may run (tried {candidates})")


@dataclass
class DockHost:
    """The dock host the docs' block laid out, and the operator's working directory."""

    root: Path
    work: Path
    uid: int
    gid: int

    def run_block(self, block: str) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            DOCK_ROOT=str(self.root),
            CHECKOUT_PYTHON=sys.executable,
            AGENT_PYTHON=str(agent_python()),
            CHECKOUT_SITE=sysconfig.get_path("purelib"),
        )
        return subprocess.run(
            ["bash", "-c", _PLAYERS + moved_into(self.root, block)],
            cwd=self.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def agent_ids(self) -> dict[str, object]:
        """subprocess arguments that run a command as the store's owner (root only)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if AS_ROOT else {}


def _force_pki(work: Path) -> tuple[Path, Path, TestCA]:
    """What the force's offline machine holds; the broker PKI the force's device CA runs."""
    offline = work / "offline"
    offline.mkdir()
    generate_force_keypair(offline / "force.key", offline / "force.pub")
    generate_device_key(offline / "authority.key")
    shutil.copyfile(offline / "authority.key", work / "authority.key")
    ca = TestCA(offline / "device-ca", "force device CA")
    client = ca.issue(DOCK_ID)
    shutil.copyfile(ca.cert_file, work / "broker-ca.crt")
    shutil.copyfile(client.cert, work / "broker.crt")
    shutil.copyfile(client.key, work / "broker.key")
    return offline / "force.pub", offline / "authority.pub", ca


@pytest.fixture
def host_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700 root's, closed to the agent's user.
    path = Path(tempfile.mkdtemp(prefix="bodycam-dock-host-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _camera(tmp_path: Path, force_pub: Path, authority_pub: Path, enrol_dir: Path) -> SimRig:
    """A camera installed and provisioned as docs/hardware.md says, on the simulated board."""
    camera_root = tmp_path / "camera"
    install(camera_root, role="camera", venv=False)
    provision(
        Path("/etc/bodycam/config.toml"),
        device_id=DEVICE_ID,
        force_key=force_pub,
        authority_key=authority_pub,
        root=camera_root,
        enrol_dir=enrol_dir,  # "copied to the dock host's /tmp/enrol"
    )
    config = load_config(camera_root / "etc/bodycam/config.toml").with_overrides(
        device={
            "board": "sim",
            "state_dir": str(camera_root / "var/lib/bodycam"),
            "runtime_dir": str(tmp_path / "run"),
        },
        video={"width": 320, "height": 240, "fps": 30, "bitrate": 600_000, "gop": 30},
        recording={"pre_event_s": 3.0, "segment_s": 2.0},
        sim={"speed": 4.0},
    )
    return SimRig(config, tmp_path, force_pub.parent)


def effective_unit(root: Path) -> UnitFile:
    """The dock unit as systemd reads it in ``root``: the vendor file, then its drop-ins."""
    unit = parse_unit((root / "usr/lib/systemd/system" / UNIT).read_text(encoding="utf-8"))
    drop_ins = sorted((root / "etc/systemd/system" / f"{UNIT}.d").glob("*.conf"))
    for drop_in in drop_ins:
        for section, items in parse_unit(drop_in.read_text(encoding="utf-8")).sections.items():
            unit.sections.setdefault(section, []).extend(items)
    return unit


def _list_setting(unit: UnitFile, key: str) -> list[str]:
    """A list setting after systemd's rule: an empty assignment clears what came before."""
    values: list[str] = []
    for value in unit.values("Service", key):
        values = [] if value == "" else [*values, value]
    return values


def load_credentials(host: DockHost, unit: UnitFile, into: Path) -> Path:
    """What ``LoadCredential=`` does before the agent starts: systemd (root) copies each file
    into the unit's credentials directory, readable by the service's user only."""
    into.mkdir(parents=True)
    into.chmod(0o700)
    for value in _list_setting(unit, "LoadCredential"):
        name, source = value.split(":", 1)
        target = into / name
        shutil.copyfile(host.root / source.lstrip("/"), target)
        target.chmod(0o400)
        if AS_ROOT:
            os.chown(target, host.uid, host.gid)
    if AS_ROOT:
        os.chown(into, host.uid, host.gid)
    return into


def agent_command(host: DockHost, unit: UnitFile, port: str, credentials: Path) -> list[str]:
    """The unit's ``ExecStart=`` for the camera on ``port``, in the root, served once."""
    (command,) = _list_setting(unit, "ExecStart")
    assert port.startswith("/dev/")
    # %I is the unescaped instance: the tty's path below /dev (pts/3 for a pty).
    moved = moved_into(host.root, " " + command)  # the unit's paths; then the specifiers
    words = moved.replace("%I", port.removeprefix("/dev/")).replace("%d", str(credentials))
    return [*words.split(), "--once"]


def _read_passwd(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no {user} in {root}/etc/passwd")


async def test_the_documented_dock_host_offloads_a_provisioned_camera(
    host_dir: Path, tmp_path: Path
) -> None:
    root, work = host_dir / "root", host_dir / "work"
    root.mkdir()
    work.mkdir()
    force_pub, authority_pub, ca = _force_pki(work)
    rig = _camera(tmp_path, force_pub, authority_pub, root / "tmp/enrol")
    (root / "tmp").chmod(0o1777)
    (root / "tmp/enrol").chmod(0o755)
    setup, check = dock_section_blocks()

    host = DockHost(root, work, -1, -1)
    result = host.run_block(setup)
    assert result.returncode == 0, f"the set-up block failed:\n{result.stdout}\n{result.stderr}"
    host.uid, host.gid = _read_passwd(root, "bodycam-dock")
    store_dir = root / "var/lib/bodycam-dock"
    if AS_ROOT:  # every file of the store is the agent's (store init ran as bodycam-dock)
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in [store_dir, *store_dir.rglob("*")]}
        assert owners == {(host.uid, host.gid)}
    assert (store_dir / "store.toml").is_file()
    assert DockStore(store_dir, create=False).device_key_path(DEVICE_ID).is_file()

    unit = effective_unit(root)
    server = ca.issue("localhost", server=True)
    tls = (
        f"certfile {server.cert}\nkeyfile {server.key}\ncafile {ca.cert_file}\n"
        "require_certificate true\nuse_identity_as_username true"
    )
    with LocalMosquitto(tmp_path / "mosquitto", config_extra=tls) as broker:
        async with running_camera(rig) as camera:
            await camera.play(RECORD_TWO_CLIPS)
            on_card = {clip.clip_id for clip in list_clips(rig.config.clips_dir)}
            assert len(on_card) == 2
            camera_port = str((await camera.do({"do": "dock"}))["port"])
            output = await _dock_once(host, unit, camera_port, broker, tmp_path)
            assert list_clips(rig.config.clips_dir) == [], output  # the camera let them go
    assert "2 clip(s) committed" in output, output
    # The agent reached the broker with the dock's client certificate (its CN, DOCK-01, is
    # the MQTT user name the broker took from it).
    assert f"u'{DOCK_ID}'" in broker.log_text(), broker.log_text()

    store = DockStore(store_dir, create=False)
    stored = [clip for clip in store.clips() if clip.device_id == DEVICE_ID]
    assert {clip.clip_id for clip in stored} == on_card
    assert all(clip.committed for clip in stored)

    checked = host.run_block(check)
    assert checked.returncode == 0, f"the check block failed:\n{checked.stdout}\n{checked.stderr}"
    for clip_id in on_card:
        assert re.search(rf"^{clip_id[:12]}\s+{DEVICE_ID}\s.*committed", checked.stdout, re.M), (
            checked.stdout
        )
    assert "custody log intact" in checked.stdout


def _dock_port(host: DockHost) -> PtyPair:
    """The dock's USB port for one camera, as udev/70-bodycam-dock.rules leaves it."""
    port = open_pty_pair()
    if AS_ROOT:
        os.chown(port.slave_path, 0, host.gid)
        Path(port.slave_path).chmod(0o660)
    return port


async def _dock_once(
    host: DockHost, unit: UnitFile, camera_port: str, broker: LocalMosquitto, tmp_path: Path
) -> str:
    """Run the agent once, as systemd would, for the camera on ``camera_port``.

    A pty pair stands for the dock's USB port (``/dev/ttyACM0``); the camera's side is joined
    to it only once the agent is connected to the broker, so that the telemetry connection
    is checked by event order, not by a race with a short session.
    """
    port = _dock_port(host)
    instance = port.slave_path.removeprefix("/dev/").replace("/", "-")
    credentials = load_credentials(
        host, unit, host.root / "run/credentials" / f"bodycam-dock@{instance}.service"
    )
    command = agent_command(host, unit, port.slave_path, credentials)
    url = f"mqtts://127.0.0.1:{broker.port}"
    command = [re.sub(r"^mqtts://broker\.example\.org:8883$", url, word) for word in command]
    assert url in command, command
    agent = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, HOME=str(host.root / "var/lib/bodycam-dock")),
        **host.agent_ids(),  # type: ignore[arg-type]
    )
    camera_side = open_serial(camera_port)
    cable = FaultyCable(camera_side, FdLink(port.master_fd, "dock port"))
    forwarding: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(120):
            while f"u'{DOCK_ID}'" not in broker.log_text():
                if agent.returncode is not None:
                    assert agent.stdout is not None
                    early = (await agent.stdout.read()).decode(errors="replace")
                    raise AssertionError(f"the agent ended before reaching the broker:\n{early}")
                await asyncio.sleep(0.1)
            forwarding = asyncio.create_task(cable.run(), name="cable")
            out, _ = await agent.communicate()
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
        cable.cut()
        if forwarding is not None:
            with contextlib.suppress(Exception):
                await forwarding
        camera_side.close()
        os.close(port.slave_fd)
    text = out.decode(errors="replace")
    assert agent.returncode == 0, text
    return text


@pytest.mark.skipif(not AS_ROOT, reason="file ownership and another user's access need root")
def test_the_agent_user_cannot_read_the_dock_key(host_dir: Path) -> None:
    host, _ = _set_up_without_camera(host_dir)
    key = host.root / "etc/bodycam-dock/dock.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (key.stat().st_uid, key.stat().st_gid) == (0, 0)
    credentials_dir = key.parent
    assert stat.S_IMODE(credentials_dir.stat().st_mode) == 0o700
    as_agent = subprocess.run(
        ["cat", str(key)], capture_output=True, text=True, check=False, **host.agent_ids()
    )  # type: ignore[call-overload]
    assert as_agent.returncode != 0
    assert "Permission denied" in as_agent.stderr
    # ... while the copy LoadCredential= makes is the agent's to read.
    copied = load_credentials(
        host, effective_unit(host.root), host.root / "run/credentials/bodycam-dock@ttyACM0.service"
    )
    as_agent = subprocess.run(
        ["cat", str(copied / "dock.key")], capture_output=True, check=False, **host.agent_ids()
    )  # type: ignore[call-overload]
    assert as_agent.returncode == 0
    assert as_agent.stdout == key.read_bytes()


def _set_up_without_camera(host_dir: Path) -> tuple[DockHost, subprocess.CompletedProcess[str]]:
    root, work = host_dir / "root", host_dir / "work"
    root.mkdir()
    work.mkdir()
    _force_pki(work)
    enrol = root / "tmp/enrol"
    enrol.mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    enrol.chmod(0o755)
    generate_device_key(work / "camera.key")
    shutil.copyfile(work / "camera.pub", enrol / f"{DEVICE_ID}.pub")
    host = DockHost(root, work, -1, -1)
    result = host.run_block(dock_section_blocks()[0])
    assert result.returncode == 0, f"the set-up block failed:\n{result.stdout}\n{result.stderr}"
    host.uid, host.gid = _read_passwd(root, "bodycam-dock")
    return host, result


def test_the_laid_out_unit_and_drop_in_pass_systemd_analyze_verify(host_dir: Path) -> None:
    analyze = require_tool("systemd-analyze")
    host, _ = _set_up_without_camera(host_dir)
    unit = effective_unit(host.root)
    # The wiring: the dock's credentials and the broker's come from /etc/bodycam-dock, and
    # every file the command names is in the credentials directory.
    loaded = _list_setting(unit, "LoadCredential")
    assert {value.split(":", 1)[1] for value in loaded} == {
        "/etc/bodycam-dock/dock.key",
        "/etc/bodycam-dock/dock.cert",
        "/etc/bodycam-dock/broker-ca.crt",
        "/etc/bodycam-dock/broker.crt",
        "/etc/bodycam-dock/broker.key",
    }
    (command,) = _list_setting(unit, "ExecStart")
    words = command.split()
    names = {value.split(":", 1)[0] for value in loaded}
    for option in ("--broker-ca", "--broker-cert", "--broker-key"):
        assert words[words.index(option) + 1].removeprefix("%d/") in names, option
    assert words[words.index("--credentials") + 1] == "%d"
    for value in loaded:
        assert (host.root / value.split(":", 1)[1].lstrip("/")).is_file(), value
    provide_host_units(host.root)
    result = run_tool(
        [analyze, "verify", f"--root={host.root}", "--man=no", "--generators=no",
         "--recursive-errors=no", "bodycam-dock@ttyACM0.service"]
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "bodycam-dock" not in output, output
