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
* the service user from ``usr/lib/sysusers.d`` (created now with ``systemd-sysusers --root``
  when that tool is present, otherwise at first boot by ``systemd-sysusers.service``) and
  directories from ``usr/lib/tmpfiles.d``;
* ``etc/bodycam/config.toml`` from the template, never overwritten: an image rebuilt over a
  provisioned card keeps its identity and its engineer's settings.
"""

from __future__ import annotations

import importlib.resources
import logging
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
        tmpfiles=None,
        directories=(("etc/bodycam-dock", 0o750), ("var/lib/bodycam-dock", 0o750)),
        config=None,
    ),
}


@dataclass
class InstallReport:
    """What ``install`` did, for the command's summary and for tests."""

    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    enabled: list[Path] = field(default_factory=list)
    masked: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _sysusers(report: InstallReport, conf: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        report.notes.append(
            "systemd-sysusers not found here: the service user is created at first boot"
        )
        return
    result = subprocess.run(  # noqa: S603 - fixed tool, paths we wrote
        [tool, f"--root={report.root}", str(conf)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ConfigError(f"install: systemd-sysusers failed: {result.stderr.strip()}")


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
    if venv:
        wanted = packages if packages is not None else [p for p in [default_package()] if p]
        if not wanted:
            raise ConfigError("install: name the bodycam wheel to install with --package")
        _make_venv(report, python, wanted, pip_args or [])
    return report
