"""Shared by the systemd unit and udev rule tests: file locations, a unit-file parser, a
sysusers parser, the system tools they need, and the temporary root that systemd-analyze
checks the units in.

``lay_out_units`` checks the units where ``bodycam install --root`` puts them, in the tree
that command makes (both roles), so what is verified is what an image gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
UDEV_DIR = REPO / "udev"
SYSTEMD_DOC = REPO / "docs" / "systemd.md"

# What ExecStart= names in every unit; systemd-analyze verify wants it to be executable.
BODYCAM_BIN = Path("opt/bodycam/venv/bin/bodycam")
# Where `bodycam install` puts the units (systemd's vendor unit directory).
UNIT_DIR = Path("usr/lib/systemd/system")

# Each unit file, and the unit name the checks load it as (a template needs an instance).
UNITS: dict[str, str] = {
    "bodycam.service": "bodycam.service",
    "bodycam-gadget.service": "bodycam-gadget.service",
    "bodycam-dock@.service": "bodycam-dock@ttyACM0.service",
}

# The host's own units (sysinit.target, basic.target, modprobe@.service, ...) that every
# service depends on by default; verify fails on an empty root without them.
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def require_tool(name: str, package: str = "systemd") -> str:
    """The tool's path, or a failed test saying how CI gets it (never a skip).

    Daemons such as ser2net install into sbin, which a CI user's PATH often lacks.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} not found: ./dev test installs the {package} package", pytrace=False)
    return path


def run_tool(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a systemd tool with plain output (no colours, no pager), capturing both streams."""
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", SYSTEMD_LOG_COLOR="0")
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def lay_out_units(root: Path) -> list[Path]:
    """Lay out a camera and a dock host under ``root`` with ``bodycam install``; the units.

    Also places an executable stand-in for ``/opt/bodycam/venv/bin/bodycam`` (verify checks
    that ExecStart= names an executable; the real venv is not needed to check the units).
    """
    from bodycam.daemon.install import install

    install(root, role="camera", venv=False)
    install(root, role="dock", venv=False)
    laid_out = [root / UNIT_DIR / name for name in UNITS]
    stub = root / BODYCAM_BIN
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    return laid_out


def provide_host_units(root: Path) -> None:
    """Copy the host's unit files under ``root`` (without replacing any, and none of ours).

    Services depend on sysinit.target, basic.target, shutdown.target and so on by default;
    ours also name modprobe@.service and sys-kernel-config.mount. The OS provides them, so the
    test borrows the host's (systemd 252 in CI, as on Pi OS bookworm).
    """
    target_dir = root / "usr/lib/systemd/system"
    target_dir.mkdir(parents=True, exist_ok=True)
    seen: set[Path] = set()
    for source_dir in HOST_UNIT_DIRS:
        if not source_dir.is_dir() or source_dir.resolve() in seen:
            continue
        seen.add(source_dir.resolve())
        for source in source_dir.iterdir():
            target = target_dir / source.name
            if source.name.startswith("bodycam") or target.exists() or target.is_symlink():
                continue
            if source.is_symlink():
                target.symlink_to(source.readlink())
            elif source.is_file():
                shutil.copyfile(source, target)
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True)


def unit_root(root: Path) -> Path:
    """A root with our units and the host's, ready for ``systemd-analyze --root=``."""
    lay_out_units(root)
    provide_host_units(root)
    return root


# --- unit files --------------------------------------------------------------------------


@dataclass
class UnitFile:
    """A parsed unit file: every assignment in order (keys may repeat), and its comments."""

    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    def values(self, section: str, key: str) -> list[str]:
        """Every value assigned to ``key`` in ``section``, in file order (empty ones too)."""
        return [value for name, value in self.sections.get(section, []) if name == key]

    def single(self, section: str, key: str) -> str:
        """The value of a key that must be assigned exactly once."""
        values = self.values(section, key)
        assert len(values) == 1, f"[{section}] {key}= assigned {len(values)} times: {values}"
        return values[0]

    def words(self, section: str, key: str) -> list[str]:
        """All whitespace-separated words over every assignment of a list-valued key."""
        return [word for value in self.values(section, key) for word in value.split()]


def parse_unit(text: str) -> UnitFile:
    """Parse systemd's unit syntax: sections, repeated keys, backslash continuations, comments.

    A comment line inside a continued value is skipped, as systemd does.
    """
    unit = UnitFile()
    section: str | None = None
    pending: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(("#", ";")):
            unit.comments.append(line.lstrip("#;").strip())
            continue
        if pending is not None:
            if line.endswith("\\"):
                pending += " " + line[:-1].strip()
                continue
            line = pending + " " + line
            pending = None
        elif line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.sections.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"line {lineno}: not a key=value assignment: {raw!r}"
        assert section is not None, f"line {lineno}: assignment before any [section]"
        unit.sections[section].append((key.strip(), value.strip()))
    assert pending is None, "the file ends inside a continued line"
    return unit


def load_unit(name: str) -> UnitFile:
    return parse_unit((SYSTEMD_DIR / name).read_text(encoding="utf-8"))


# --- sysusers.d --------------------------------------------------------------------------


@dataclass(frozen=True)
class SysusersLine:
    kind: str
    name: str
    id: str
    gecos: str
    home: str
    shell: str


def parse_sysusers(text: str) -> list[SysusersLine]:
    """sysusers.d lines: type, name, id, "GECOS" (quoted, may hold spaces), home, shell."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, quote, rest = line.partition('"')
        if quote:
            gecos, _, tail = rest.partition('"')
            fields = head.split()
            tail_fields = tail.split()
        else:
            fields = line.split()
            gecos = fields[3] if len(fields) > 3 else "-"
            tail_fields = fields[4:]
            fields = fields[:3]
        kind, name, ident = [*fields, "-", "-"][:3]
        home, shell = [*tail_fields, "-", "-"][:2]
        lines.append(SysusersLine(kind, name, ident, gecos, home, shell))
    return lines


def sysusers_groups(*files: Path) -> set[str]:
    """Every group these sysusers.d files create or add a user to."""
    groups: set[str] = set()
    for path in files:
        for line in parse_sysusers(path.read_text(encoding="utf-8")):
            if line.kind in {"u", "g"}:
                groups.add(line.name)
            elif line.kind == "m":
                groups.add(line.id)
    return groups


SYSUSERS_FILES = (SYSTEMD_DIR / "bodycam.sysusers", SYSTEMD_DIR / "bodycam-dock.sysusers")
