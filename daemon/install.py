"""``bodycam install --root DIR``: lay out a camera's (or a dock host's) root filesystem.

An image builder (a pi-gen stage, an ``sdm`` customisation) calls it inside the image's
chroot with ``--root /``, or outside it with ``--root <mounted image>`` and ``--no-venv``
(the virtual environment must be built by the image's own Python, on its own architecture:
a venv made on the build host would carry the host's interpreter and wheels).

What goes where, and why there:

* units in ``usr/lib/systemd/system`` and rules in ``usr/lib/udev/rules.d``: the vendor
  locations, so a force's own drop-ins in ``/etc`` override them cleanly;
* units enabled by the symlinks their ``[Install] WantedBy=`` asks for (what
  ``systemctl enable`` makes), so the image boots into a running camera;
* the service user from ``usr/lib/sysusers.d`` and directories from ``usr/lib/tmpfiles.d``
  (made now with ``systemd-sysusers --root`` and ``systemd-tmpfiles --root --create`` when
  those tools are present, otherwise at first boot by their services), so that the next
  steps can run as the service user at once;
* ``etc/bodycam/config.toml`` from the template, never overwritten: an image rebuilt over a
  provisioned card keeps its identity and its engineer's settings.

A dock host's evidence store is not created here: ``bodycam store init`` makes it, run as
``bodycam-dock`` (the report's ``next_steps`` say so). The store's retention is the force's
choice, made once, when the store is made; and this command also builds images on another
machine (``--root`` of a mounted image), where the store must not exist yet. Installing again
(an upgrade) never touches a store or the dock's credentials.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from bodycam.daemon.config import ConfigError

log = logging.getLogger(__name__)

Role = Literal["camera", "dock"]

VENV_DIR = Path("opt/bodycam/venv")
UNIT_DIR = Path("usr/lib/systemd/system")
RULES_DIR = Path("usr/lib/udev/rules.d")
SYSUSERS_DIR = Path("usr/lib/sysusers.d")
TMPFILES_DIR = Path("usr/lib/tmpfiles.d")


@dataclass(frozen=True)
class RoleFiles:
    """What one role installs: unit, rule and sysusers/tmpfiles source names, directories."""

    units: tuple[str, ...]
    rules: tuple[str, ...]
    sysusers: str
    tmpfiles: str | None
    # (path under the root, mode); owners come from tmpfiles/StateDirectory= at boot.
    directories: tuple[tuple[str, int], ...]
    config: tuple[str, str] | None  # (template in bodycam.daemon/data, target under root)
    # Units that must never run: a login prompt on the dock's serial port would answer the
    # dock's frames (the daemon's exclusive open keeps out only programs that also lock).
    masked: tuple[str, ...] = ()


ROLES: dict[Role, RoleFiles] = {
    "camera": RoleFiles(
        units=("bodycam.service", "bodycam-gadget.service"),
        rules=("70-bodycam-camera.rules",),
        sysusers="bodycam.sysusers",
        tmpfiles="bodycam.tmpfiles",
        directories=(("etc/bodycam", 0o755), ("var/lib/bodycam", 0o750)),
        config=("config.camera.toml", "etc/bodycam/config.toml"),
        masked=("serial-getty@ttyGS0.service",),
    ),
    "dock": RoleFiles(
        units=("bodycam-dock@.service",),
        rules=("70-bodycam-dock.rules",),
        sysusers="bodycam-dock.sysusers",
        tmpfiles="bodycam-dock.tmpfiles",
        # The credentials are root's alone: the agent gets them through LoadCredential=.
        directories=(("etc/bodycam-dock", 0o700), ("var/lib/bodycam-dock", 0o750)),
        config=None,
    ),
}

# Where the dock host's files are once installed (keep in step with bodycam-dock@.service,
# bodycam-dock.tmpfiles and docs/hardware.md's dock section).
DOCK_STORE = Path("/var/lib/bodycam-dock")
DOCK_CREDENTIALS = Path("/etc/bodycam-dock")
DOCK_USER = "bodycam-dock"
BODYCAM = Path("/") / VENV_DIR / "bin/bodycam"
STORE_CONFIG_NAME = "store.toml"  # written by `bodycam store init` (bodycam.dock.store)


@dataclass
class InstallReport:
    """What ``install`` did, for the command's summary and for tests."""

    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    enabled: list[Path] = field(default_factory=list)
    masked: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the person installing does next, in order (commands on the installed system).
    next_steps: list[str] = field(default_factory=list)


def _resource(package: str, name: str) -> Traversable:
    found = importlib.resources.files(package) / name
    if not found.is_file():
        raise ConfigError(f"install: {name} is missing from the bodycam package ({package})")
    return found


def _put(report: InstallReport, source: Traversable, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.chmod(mode)
    tmp.replace(target)
    report.written.append(target)


def wanted_by(unit_text: str) -> list[str]:
    """The targets a unit's ``[Install]`` section names in ``WantedBy=``."""
    targets: list[str] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Install]" and line.startswith("WantedBy="):
            targets += line.removeprefix("WantedBy=").split()
    return targets


def _enable(report: InstallReport, unit: str, text: str) -> None:
    if unit.endswith("@.service"):
        return  # templates are started by udev per camera, not enabled
    for target in wanted_by(text):
        link = report.root / "etc/systemd/system" / f"{target}.wants" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        # Absolute inside the image, as systemctl enable writes it.
        link.symlink_to(Path("/") / UNIT_DIR / unit)
        report.enabled.append(link)


def _mask(report: InstallReport, unit: str) -> None:
    link = report.root / "etc/systemd/system" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")  # what systemctl mask writes
    report.masked.append(link)


def _run_tool(
    report: InstallReport, name: str, args: list[str], *, missing: str
) -> subprocess.CompletedProcess[str] | None:
    """Run systemd's ``name`` on the image root; None (and ``missing`` noted) if absent."""
    tool = shutil.which(name)
    if tool is None:
        report.notes.append(f"{name} not found here: {missing}")
        return None
    return subprocess.run(  # noqa: S603 - fixed tool, paths we wrote
        [tool, f"--root={report.root}", *args], capture_output=True, text=True, check=False
    )


def _sysusers(report: InstallReport, conf: Path) -> None:
    result = _run_tool(
        report, "systemd-sysusers", [str(conf)], missing="the service user is created at first boot"
    )
    if result is not None and result.returncode != 0:
        raise ConfigError(f"install: systemd-sysusers failed: {result.stderr.strip()}")


def _tmpfiles(report: InstallReport, conf: Path) -> None:
    result = _run_tool(
        report,
        "systemd-tmpfiles",
        ["--create", str(conf)],
        missing="directory owners are set at first boot",
    )
    if result is None or result.returncode == 0:
        return
    problems = result.stderr.strip().splitlines()
    # Only root may hand a directory to the service user; the modes are set all the same,
    # and systemd-tmpfiles-setup.service sets the owners at boot.
    if os.geteuid() != 0 and all("chown" in line for line in problems):
        report.notes.append(
            f"not root: {conf.name}'s directories keep this user as owner until first boot"
        )
        return
    raise ConfigError(f"install: systemd-tmpfiles failed: {' / '.join(problems[-3:])}")


def _dock_next_steps(report: InstallReport) -> None:
    credentials = [
        report.root / DOCK_CREDENTIALS.relative_to("/") / name for name in ("dock.key", "dock.cert")
    ]
    if not all(path.is_file() for path in credentials):
        report.next_steps.append(
            f"bodycam keygen dock DIR --authority authority.key --dock-id ID (on the force's "
            f"offline machine), then: sudo install -m 0600 -o root -g root DIR/dock.key "
            f"DIR/dock.cert {DOCK_CREDENTIALS}/"
        )
    if not (report.root / DOCK_STORE.relative_to("/") / STORE_CONFIG_NAME).is_file():
        report.next_steps.append(f"sudo -u {DOCK_USER} {BODYCAM} store init --store {DOCK_STORE}")
    report.next_steps.append(
        f"sudo -u {DOCK_USER} {BODYCAM} store enrol --store {DOCK_STORE} <device-id>.pub"
    )
    report.next_steps.append("sudo systemctl daemon-reload && sudo udevadm control --reload")


def _make_venv(
    report: InstallReport, python: str, packages: list[str], pip_args: list[str]
) -> None:
    venv = report.root / VENV_DIR
    if report.root.resolve() != Path("/"):
        report.notes.append(
            f"{venv}: built with {python} for this machine; build it inside the image "
            "(chroot, --root /) when the image is for another architecture"
        )
    steps = [[python, "-m", "venv", "--system-site-packages", str(venv)]]
    if packages:
        steps.append([str(venv / "bin/python"), "-m", "pip", "install", "-q", *pip_args, *packages])
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ConfigError(f"install: {' '.join(step[:4])} failed: {' / '.join(tail)}")
    report.written.append(venv)


def default_package() -> str | None:
    """This source tree when bodycam runs from a checkout (what a developer installs)."""
    checkout = Path(__file__).resolve().parent.parent
    return str(checkout) if (checkout / "pyproject.toml").is_file() else None


def install(
    root: Path,
    *,
    role: Role = "camera",
    venv: bool = True,
    packages: list[str] | None = None,
    pip_args: list[str] | None = None,
    python: str = sys.executable,
) -> InstallReport:
    """Lay out everything ``role`` needs under ``root``; see the module docstring.

    Raises:
        ConfigError: A step failed; the message names it (nothing half-written is left
            in place of a good file: every file is written to a temporary name first).
    """
    files = ROLES[role]
    report = InstallReport(root)
    root.mkdir(parents=True, exist_ok=True)
    for unit in files.units:
        source = _resource("bodycam.systemd", unit)
        _put(report, source, root / UNIT_DIR / unit)
        _enable(report, unit, source.read_text(encoding="utf-8"))
    for unit in files.masked:
        _mask(report, unit)
    for rules in files.rules:
        _put(report, _resource("bodycam.udev", rules), root / RULES_DIR / rules)
    name = files.sysusers.split(".")[0]
    sysusers = root / SYSUSERS_DIR / f"{name}.conf"
    _put(report, _resource("bodycam.systemd", files.sysusers), sysusers)
    tmpfiles: Path | None = None
    if files.tmpfiles is not None:
        tmpfiles = root / TMPFILES_DIR / f"{name}.conf"
        _put(report, _resource("bodycam.systemd", files.tmpfiles), tmpfiles)
    for directory, mode in files.directories:
        path = root / directory
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    if files.config is not None:
        template, target = files.config
        path = root / target
        if path.exists():
            report.kept.append(path)
        else:
            _put(report, _resource("bodycam.daemon", f"data/{template}"), path)
    _sysusers(report, sysusers)
    if tmpfiles is not None:
        _tmpfiles(report, tmpfiles)  # after sysusers: it names the users sysusers made
    if role == "dock":
        _dock_next_steps(report)
    if venv:
        wanted = packages if packages is not None else [p for p in [default_package()] if p]
        if not wanted:
            raise ConfigError("install: name the bodycam wheel to install with --package")
        _make_venv(report, python, wanted, pip_args or [])
    return report
