"""The systemd units, sysusers and tmpfiles files: systemd's own tools check them.

``systemd-analyze verify`` loads every unit in a temporary root (ours plus the host's system
units, and a stand-in for the venv's ``bodycam``); ``systemd-analyze security --offline=yes``
rates each sandbox, and every item it still flags must be explained in the unit and in
docs/systemd.md. The key settings are read back with a small parser so that a careless edit
fails here by name. CI installs systemd (``./dev test``); without it these tests fail.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bodycam.daemon.config import Config
from tests.unit.systemd_helpers import (
    SYSTEMD_DIR,
    SYSTEMD_DOC,
    SYSUSERS_FILES,
    UNIT_DIR,
    UNITS,
    lay_out_units,
    load_unit,
    parse_sysusers,
    parse_unit,
    require_tool,
    run_tool,
    unit_root,
)

# Exposure bounds: the brief's 2.0 for the daemon and the dock agent. The gadget set-up runs as
# root (configfs), which alone costs it 0.4; the rest of its sandbox is as tight as the daemon's
# (measured 0.7), and 1.0 catches a lost setting without failing on rounding.
EXPOSURE_BOUNDS = {
    "bodycam.service": 2.0,
    "bodycam-dock@ttyACM0.service": 2.0,
    "bodycam-gadget.service": 1.0,
}

OVERALL = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<level>\d+(?:\.\d+)?)")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unit_root(tmp_path_factory.mktemp("unitroot"))


def _mentions_ours(line: str) -> bool:
    names = {*UNITS, *UNITS.values()}
    return any(name in line for name in names)


# --- verify ------------------------------------------------------------------------------


def test_lay_out_units_places_every_unit_and_the_executable(tmp_path: Path) -> None:
    laid_out = lay_out_units(tmp_path)
    assert sorted(path.name for path in laid_out) == sorted(UNITS)
    for path in laid_out:
        assert path.read_bytes() == (SYSTEMD_DIR / path.name).read_bytes()
    assert os.access(tmp_path / "opt/bodycam/venv/bin/bodycam", os.X_OK)


def test_every_unit_file_in_systemd_is_checked() -> None:
    on_disk = {path.name for path in SYSTEMD_DIR.glob("*.service")}
    assert on_disk == set(UNITS), "a unit in systemd/ that these tests do not load (or v.v.)"


@pytest.mark.parametrize("unit", list(UNITS.values()))
def test_systemd_analyze_verify_passes(root: Path, unit: str) -> None:
    analyze = require_tool("systemd-analyze")
    result = run_tool(
        [analyze, "verify", f"--root={root}", "--man=no", "--generators=no",
         "--recursive-errors=no", unit]
    )  # fmt: skip
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if _mentions_ours(line)]
    assert result.returncode == 0, f"verify {unit} failed:\n{output}"
    assert not ours, f"verify {unit} warns about our units:\n" + "\n".join(ours)


def test_verify_in_this_root_does_catch_a_broken_unit(root: Path) -> None:
    """The harness is not vacuous: the same call reports a bad key and a missing binary."""
    analyze = require_tool("systemd-analyze")
    broken = root / UNIT_DIR / "bodycam-broken-probe.service"
    broken.write_text(
        "[Service]\nExecStart=/opt/bodycam/venv/bin/no-such-binary\nProtectClok=yes\n",
        encoding="utf-8",
    )
    try:
        result = run_tool(
            [analyze, "verify", f"--root={root}", "--man=no", "--generators=no",
             "--recursive-errors=no", broken.name]
        )  # fmt: skip
    finally:
        broken.unlink()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ProtectClok" in output
    assert "no-such-binary" in output


# --- security ----------------------------------------------------------------------------


def _exposure(root: Path, unit: str) -> float:
    analyze = require_tool("systemd-analyze")
    result = run_tool([analyze, "security", "--offline=yes", f"--root={root}", "--no-pager", unit])
    output = result.stdout + result.stderr
    match = OVERALL.search(output)
    assert match, f"no overall exposure level in:\n{output}"
    assert match["unit"] == unit
    return float(match["level"])


def _flagged(root: Path, unit: str) -> dict[str, float]:
    """The items ``security`` still counts against the unit: {name: exposure}."""
    analyze = require_tool("systemd-analyze")
    result = run_tool(
        [analyze, "security", "--offline=yes", f"--root={root}", "--json=short", unit]
    )
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    return {
        item["name"]: float(item["exposure"]) for item in items if float(item["exposure"] or 0) > 0
    }


@pytest.mark.parametrize(("unit", "bound"), list(EXPOSURE_BOUNDS.items()))
def test_exposure_level_is_within_bound(
    root: Path, unit: str, bound: float, record_property: Callable[[str, object], None]
) -> None:
    level = _exposure(root, unit)
    record_property("exposure", level)
    assert level <= bound, f"{unit}: exposure {level} > {bound}"


def _doc_section(unit_file: str) -> str:
    text = SYSTEMD_DOC.read_text(encoding="utf-8")
    heading = f"### `{unit_file}`"
    assert heading in text, f"docs/systemd.md has no section {heading}"
    section = text.split(heading, 1)[1]
    # A "|" inside a table cell is written "\\|" (GitHub Markdown splits cells on bare ones).
    return re.split(r"^##", section, maxsplit=1, flags=re.MULTILINE)[0].replace("\\|", "|")


@pytest.mark.parametrize(("unit_file", "unit"), list(UNITS.items()))
def test_every_flagged_item_is_explained_in_the_unit_and_the_docs(
    root: Path, unit_file: str, unit: str
) -> None:
    flagged = _flagged(root, unit)
    assert flagged, "security flags nothing? then the documented tables are stale"
    comments = "\n".join(load_unit(unit_file).comments)
    doc = _doc_section(unit_file)
    missing_in_unit = [name for name in flagged if name not in comments]
    missing_in_doc = [name for name in flagged if f"`{name}`" not in doc]
    assert not missing_in_unit, f"{unit_file}: flagged but not explained in its comments"
    assert not missing_in_doc, f"docs/systemd.md ({unit_file}): flagged but not in the table"


# --- key settings ------------------------------------------------------------------------

CAMERA_DEVICES = {
    "char-ttyGS rw",
    "char-gpiochip rw",
    "char-video4linux rw",
    "char-media rw",
    "char-dma_heap rw",
}
DAEMON = "/opt/bodycam/venv/bin/bodycam"


def test_daemon_unit_keeps_its_service_contract() -> None:
    unit = load_unit("bodycam.service")
    s = "Service"
    assert unit.single(s, "Type") == "notify"
    assert unit.single(s, "NotifyAccess") == "main"
    assert int(unit.single(s, "WatchdogSec")) > 0
    assert unit.single(s, "Restart") == "always"
    assert int(unit.single(s, "TimeoutStopSec")) > 0
    assert unit.single(s, "ExecStart") == f"{DAEMON} daemon --config /etc/bodycam/config.toml"
    assert unit.single(s, "User") == "bodycam"
    assert unit.single(s, "Group") == "bodycam"
    assert unit.words(s, "StateDirectory") == ["bodycam"]
    assert "bodycam" in unit.words(s, "RuntimeDirectory")
    assert unit.words(s, "ConfigurationDirectory") == ["bodycam"]
    assert unit.single("Install", "WantedBy") == "multi-user.target"


def test_daemon_unit_wants_but_does_not_require_the_gadget() -> None:
    unit = load_unit("bodycam.service")
    assert "bodycam-gadget.service" in unit.words("Unit", "Wants")
    assert "bodycam-gadget.service" in unit.words("Unit", "After")
    assert "bodycam-gadget.service" not in unit.words("Unit", "Requires")
    assert "bodycam-gadget.service" not in unit.words("Unit", "BindsTo")


def test_daemon_unit_sandbox() -> None:
    unit = load_unit("bodycam.service")
    s = "Service"
    assert unit.single(s, "ProtectClock") == "yes"
    assert unit.single(s, "NoNewPrivileges") == "yes"
    assert unit.single(s, "ProtectSystem") == "strict"
    assert unit.values(s, "CapabilityBoundingSet") == [""]
    assert unit.values(s, "AmbientCapabilities") == [""]
    assert "CAP_SYS_TIME" not in str(unit.sections)
    assert unit.single(s, "DevicePolicy") == "closed"
    assert set(unit.values(s, "DeviceAllow")) == CAMERA_DEVICES
    # PrivateDevices= would hide every node above.
    assert unit.values(s, "PrivateDevices") in ([], ["no"])
    assert set(unit.words(s, "RestrictAddressFamilies")) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6",
    }  # fmt: skip
    assert unit.single(s, "MemoryDenyWriteExecute") == "yes"
    assert unit.words(s, "SystemCallFilter")[0] == "@system-service"
    # Groups come from the user database (bodycam.sysusers), one way only.
    assert unit.values(s, "SupplementaryGroups") == []


def test_daemon_unit_loads_the_drivers_its_device_groups_need() -> None:
    """DeviceAllow=char-<group> skips a group whose driver is not loaded at start."""
    unit = load_unit("bodycam.service")
    modules = {"videodev", "mc", "u_serial"}
    for module in modules:
        assert f"modprobe@{module}.service" in unit.words("Unit", "Wants")
        assert f"modprobe@{module}.service" in unit.words("Unit", "After")


def test_lgpio_gets_a_writable_working_directory() -> None:
    """``import lgpio`` makes FIFOs in $LG_WD (else the cwd, / here, read-only)."""
    unit = load_unit("bodycam.service")
    env = dict(value.split("=", 1) for value in unit.words("Service", "Environment"))
    runtime = {f"/run/{name}" for name in unit.words("Service", "RuntimeDirectory")}
    assert env.get("LG_WD") in runtime


def test_gadget_unit() -> None:
    unit = load_unit("bodycam-gadget.service")
    s = "Service"
    assert unit.single(s, "Type") == "oneshot"
    assert unit.single(s, "RemainAfterExit") == "yes"
    assert unit.values(s, "User") == []  # root: configfs is root's
    assert unit.single(s, "ExecStart") == f"{DAEMON} gadget up --config /etc/bodycam/config.toml"
    assert unit.single(s, "ExecStop") == f"{DAEMON} gadget down --config /etc/bodycam/config.toml"
    assert "sys-kernel-config.mount" in unit.words("Unit", "After")
    assert "modprobe@libcomposite.service" in unit.words("Unit", "After")
    assert "modprobe@libcomposite.service" in unit.words("Unit", "Wants")
    assert "bodycam.service" in unit.words("Unit", "Before")
    assert unit.values(s, "CapabilityBoundingSet") == [""]
    assert [path.lstrip("-") for path in unit.words(s, "ReadWritePaths")] == ["/sys/kernel/config"]
    assert unit.single(s, "PrivateNetwork") == "yes"
    assert unit.single(s, "PrivateDevices") == "yes"
    assert unit.single(s, "ProtectSystem") == "strict"


def test_dock_agent_unit() -> None:
    unit = load_unit("bodycam-dock@.service")
    s = "Service"
    assert unit.single(s, "User") == "bodycam-dock"
    assert unit.single("Unit", "BindsTo") == "dev-%i.device"
    assert unit.single(s, "DevicePolicy") == "closed"
    assert unit.values(s, "DeviceAllow") == ["/dev/%I rw"]
    assert unit.values(s, "CapabilityBoundingSet") == [""]


def test_dock_agent_reads_its_key_through_load_credential() -> None:
    """systemd (root) copies the key for the agent; the agent is never given /etc's copy."""
    unit = load_unit("bodycam-dock@.service")
    s = "Service"
    assert unit.values(s, "LoadCredential") == [
        "dock.key:/etc/bodycam-dock/dock.key",
        "dock.cert:/etc/bodycam-dock/dock.cert",
    ]
    exec_start = unit.single(s, "ExecStart").split()
    # %d: the credentials directory (systemd >= 248), where the names above appear.
    assert exec_start[exec_start.index("--credentials") + 1] == "%d"
    assert exec_start[exec_start.index("--store") + 1] == "/var/lib/bodycam-dock"
    # Retention lives in the store's own store.toml, not on the command line.
    assert not any(word.startswith("--retention") for word in exec_start)
    readable = unit.words(s, "ReadOnlyPaths") + unit.words(s, "ReadWritePaths")
    assert not any(path.lstrip("-").startswith("/etc/bodycam-dock") for path in readable)


def test_dock_unit_example_drop_in_loads_the_broker_files_as_credentials() -> None:
    """The mTLS drop-in in the unit's comment: every file it passes comes from %d."""
    comments = load_unit("bodycam-dock@.service").comments
    example = [line for line in comments if "--broker-cert" in line]
    assert len(example) == 1, example
    words = example[0].removeprefix("ExecStart=").split()
    loaded = {
        line.removeprefix("LoadCredential=").split(":", 1)[0]
        for line in comments
        if line.startswith("LoadCredential=")
    }
    for option in ("--credentials", "--broker-ca", "--broker-cert", "--broker-key"):
        value = words[words.index(option) + 1]
        assert value == "%d" or value.removeprefix("%d/") in loaded, (option, value)


def test_parser_reads_repeats_continuations_and_comments() -> None:
    unit = parse_unit(
        "# head\n[Service]\nDeviceAllow=a rw\nDeviceAllow=b r\nExecStart=/bin/x \\\n"
        "  # inside\n  --flag\n; semi\nEmpty=\n"
    )
    assert unit.values("Service", "DeviceAllow") == ["a rw", "b r"]
    assert unit.single("Service", "ExecStart") == "/bin/x --flag"
    assert unit.values("Service", "Empty") == [""]
    assert unit.comments == ["head", "inside", "semi"]


# --- sysusers and tmpfiles ---------------------------------------------------------------


def _read_db(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


@pytest.fixture(scope="module")
def sysusers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool = require_tool("systemd-sysusers")
    root = tmp_path_factory.mktemp("sysroot")
    (root / "etc").mkdir()
    result = run_tool([tool, f"--root={root}", *map(str, SYSUSERS_FILES)])
    assert result.returncode == 0, result.stderr
    return root


def test_sysusers_create_the_daemon_user_with_its_device_groups(sysusers_root: Path) -> None:
    passwd = _read_db(sysusers_root / "etc/passwd")
    group = _read_db(sysusers_root / "etc/group")
    _, _, uid, gid, _, home, shell = passwd["bodycam"]
    assert int(uid) < 1000  # a system account
    assert group["bodycam"][2] == gid
    assert home == "/var/lib/bodycam"
    assert shell.endswith("/nologin")
    for device_group in ("video", "gpio"):
        assert "bodycam" in group[device_group][3].split(","), device_group
    # /dev/ttyGS* is group bodycam (udev rule); dialout would also open the UARTs.
    assert "dialout" not in group or "bodycam" not in group["dialout"][3].split(",")


def test_sysusers_create_the_dock_agent_user(sysusers_root: Path) -> None:
    passwd = _read_db(sysusers_root / "etc/passwd")
    group = _read_db(sysusers_root / "etc/group")
    _, _, uid, gid, _, home, shell = passwd["bodycam-dock"]
    assert int(uid) < 1000
    assert group["bodycam-dock"][2] == gid
    assert home == "/var/lib/bodycam-dock"
    assert shell.endswith("/nologin")
    extra = [name for name, fields in group.items() if "bodycam-dock" in fields[3].split(",")]
    assert extra == []


def test_sysusers_match_the_units() -> None:
    daemon = load_unit("bodycam.service")
    dock = load_unit("bodycam-dock@.service")
    users = {
        line.name: line
        for path in SYSUSERS_FILES
        for line in parse_sysusers(path.read_text())
        if line.kind == "u"
    }
    assert users[daemon.single("Service", "User")].home == "/var/lib/" + daemon.single(
        "Service", "StateDirectory"
    )
    assert users[dock.single("Service", "User")].home == "/var/lib/" + dock.single(
        "Service", "StateDirectory"
    )


def test_tmpfiles_make_the_state_and_key_directories(sysusers_root: Path) -> None:
    tool = require_tool("systemd-tmpfiles")
    result = run_tool(
        [tool, f"--root={sysusers_root}", "--create", str(SYSTEMD_DIR / "bodycam.tmpfiles")]
    )
    state = sysusers_root / "var/lib/bodycam"
    keys = state / "keys"
    assert state.is_dir()
    assert keys.is_dir()
    assert state.stat().st_mode & 0o7777 == 0o750
    assert keys.stat().st_mode & 0o7777 == 0o700
    uid = int(_read_db(sysusers_root / "etc/passwd")["bodycam"][2])
    if os.geteuid() == 0:
        assert result.returncode == 0, result.stderr
        assert state.stat().st_uid == uid
        assert keys.stat().st_uid == uid
    else:
        # Not root: everything but the chown to bodycam (checked as root) must have worked.
        problems = [line for line in result.stderr.splitlines() if "fchownat()" not in line]
        assert not problems, result.stderr


def test_dock_tmpfiles_keep_the_credentials_from_the_agent(sysusers_root: Path) -> None:
    tool = require_tool("systemd-tmpfiles")
    result = run_tool(
        [tool, f"--root={sysusers_root}", "--create", str(SYSTEMD_DIR / "bodycam-dock.tmpfiles")]
    )
    store = sysusers_root / "var/lib/bodycam-dock"
    credentials = sysusers_root / "etc/bodycam-dock"
    assert store.stat().st_mode & 0o7777 == 0o750
    # Only root (and systemd's LoadCredential=, as root) may open the dock's key.
    assert credentials.stat().st_mode & 0o7777 == 0o700
    uid = int(_read_db(sysusers_root / "etc/passwd")["bodycam-dock"][2])
    if os.geteuid() == 0:
        assert result.returncode == 0, result.stderr
        assert store.stat().st_uid == uid
        assert (credentials.stat().st_uid, credentials.stat().st_gid) == (0, 0)
    else:
        problems = [line for line in result.stderr.splitlines() if "fchownat()" not in line]
        assert not problems, result.stderr


def test_dock_tmpfiles_agree_with_the_unit() -> None:
    unit = load_unit("bodycam-dock@.service")
    lines = {
        fields[1]: fields
        for fields in (
            line.split()
            for line in (SYSTEMD_DIR / "bodycam-dock.tmpfiles").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    }
    store = "/var/lib/" + unit.single("Service", "StateDirectory")
    _, _, mode, user, group, _ = lines[store]
    assert mode == unit.single("Service", "StateDirectoryMode")
    assert (user, group) == (unit.single("Service", "User"), unit.single("Service", "Group"))
    sources = {
        v.split(":", 1)[1].rsplit("/", 1)[0] for v in unit.values("Service", "LoadCredential")
    }
    assert sources == {"/etc/bodycam-dock"}
    assert lines["/etc/bodycam-dock"][2:5] == ["0700", "root", "root"]


def test_tmpfiles_agree_with_the_unit_and_the_config() -> None:
    unit = load_unit("bodycam.service")
    lines = [
        line.split()
        for line in (SYSTEMD_DIR / "bodycam.tmpfiles").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    modes = {path: mode for _, path, mode, *_ in lines}
    config = Config()
    assert modes[str(config.device.state_dir)] == unit.single("Service", "StateDirectoryMode")
    key_dir = config.key_path(config.keys.device_key).parent
    assert modes[str(key_dir)] == "0700"
    assert {owner for _, _, _, owner, *_ in lines} == {unit.single("Service", "User")}
