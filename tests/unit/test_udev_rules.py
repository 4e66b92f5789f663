"""The udev rules: parsed with udev's syntax, then run against simulated devices.

Every key and operator must be one udev accepts in that position, every GOTO must reach a
LABEL further down, and every GROUP must exist (made by the sysusers files, or standard). A
small evaluator then plays the rules for the devices they are written for (a docked camera's
ACM tty and USB node, the camera's gadget tty) and for near misses, so the dock rule is tested
against the ids in bodycam.dock.discovery rather than against its own text. Where udevadm
is installed and a user+mount namespace may be made, udev's own parser reads the files too.
Running the rules against real devices (``udevadm test``) needs them in sysfs: the bench's job.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bodycam.dock.discovery import DEFAULT_PRODUCT_ID, DEFAULT_VENDOR_ID
from tests.unit.systemd_helpers import (
    SYSTEMD_DIR,
    SYSUSERS_FILES,
    UDEV_DIR,
    load_unit,
    require_tool,
    run_tool,
    sysusers_groups,
)

CAMERA_RULES = UDEV_DIR / "70-bodycam-camera.rules"
DOCK_RULES = UDEV_DIR / "70-bodycam-dock.rules"
RULE_FILES = (CAMERA_RULES, DOCK_RULES)

# udev(7), systemd 252: which keys match, which assign, which take {attribute}.
MATCH_OPS = frozenset({"==", "!="})
ASSIGN_OPS = frozenset({"=", "+=", "-=", ":="})
MATCH_ONLY = frozenset(
    {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
     "ATTRS", "CONST", "TAGS", "TEST", "PROGRAM", "RESULT"}
)  # fmt: skip
MATCH_OR_ASSIGN = frozenset({"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"})
ASSIGN_ONLY = frozenset({"OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "OPTIONS"})
# IMPORT{type} is a match: "=", "+=" and ":=" act as "==" (true when the import worked).
IMPORT_OPS = frozenset({"==", "!=", "=", "+=", ":="})
NEEDS_ATTR = frozenset({"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL", "IMPORT"})
MAY_HAVE_ATTR = frozenset({"TEST", "RUN"})
ATTR_VALUES = {
    "IMPORT": {"program", "builtin", "file", "db", "cmdline", "parent"},
    "RUN": {"program", "builtin"},
    "CONST": {"arch", "virt"},
}
LIST_KEYS = frozenset({"SYMLINK", "TAG", "RUN", "ENV", "OPTIONS"})  # where += / -= make sense
ONLY_EQUALS = frozenset({"LABEL", "GOTO"})
# Groups every Debian/Pi OS system has (base-passwd and systemd's own); ours must come from
# the sysusers files.
STANDARD_GROUPS = frozenset(
    {"root", "tty", "dialout", "kmem", "disk", "lp", "cdrom", "tape", "audio", "video",
     "input", "kvm", "render", "sgx", "plugdev", "users", "nogroup"}
)  # fmt: skip

TOKEN = re.compile(
    r"\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]*)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*"
    r'e?"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)'
)


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str

    @property
    def is_match(self) -> bool:
        return self.op in MATCH_OPS or self.key == "IMPORT"


@dataclass(frozen=True)
class Rule:
    lineno: int
    tokens: tuple[Token, ...]


def parse_rules(text: str) -> list[Rule]:
    """Lines of comma-separated ``KEY{attr}OP"value"``; backslash-newline continues a line."""
    rules = []
    logical = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not logical:
            start = lineno
            if raw.lstrip().startswith("#") or not raw.strip():
                continue
        if raw.endswith("\\"):
            logical += raw[:-1]
            continue
        logical += raw
        tokens = []
        position = 0
        line = logical.strip()
        while position < len(line):
            match = TOKEN.match(line, position)
            assert match, f"line {start}: cannot parse from {line[position:]!r}"
            tokens.append(Token(match["key"], match["attr"], match["op"], match["value"]))
            position = match.end()
        rules.append(Rule(start, tuple(tokens)))
        logical = ""
    assert not logical, "the file ends inside a continued line"
    return rules


def rules_of(path: Path) -> list[Rule]:
    return parse_rules(path.read_text(encoding="utf-8"))


def check_token(token: Token) -> str | None:
    """What udev would refuse about this token, or None."""
    key, op = token.key, token.op
    known = MATCH_ONLY | MATCH_OR_ASSIGN | ASSIGN_ONLY | {"IMPORT"}
    if key not in known:
        return f"unknown key {key}"
    allowed: set[str]
    if key == "IMPORT":
        allowed = set(IMPORT_OPS)
    elif key in MATCH_ONLY:
        allowed = set(MATCH_OPS)
    else:
        allowed = set(ASSIGN_OPS) if key in LIST_KEYS else set(ASSIGN_OPS - {"-="})
        if key in ONLY_EQUALS:
            allowed = {"="}
        if key in MATCH_OR_ASSIGN:
            allowed |= MATCH_OPS
    if op not in allowed:
        return f"operator {op} not allowed for {key}"
    if key in NEEDS_ATTR and not token.attr:
        return f"{key} needs {{attribute}}"
    if token.attr is not None and key not in NEEDS_ATTR | MAY_HAVE_ATTR:
        return f"{key} takes no {{attribute}}"
    if token.attr and key in ATTR_VALUES and token.attr not in ATTR_VALUES[key]:
        return f"{key}{{{token.attr}}}: unknown type"
    return None


# --- syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_key_and_operator_is_one_udev_knows(path: Path) -> None:
    problems = [
        f"line {rule.lineno}: {problem}"
        for rule in rules_of(path)
        for token in rule.tokens
        if (problem := check_token(token))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_goto_reaches_a_label_further_down(path: Path) -> None:
    rules = rules_of(path)
    labels = {
        token.value: rule.lineno for rule in rules for token in rule.tokens if token.key == "LABEL"
    }
    for rule in rules:
        for token in rule.tokens:
            if token.key == "GOTO":
                assert token.value in labels, f"line {rule.lineno}: no LABEL {token.value!r}"
                assert labels[token.value] > rule.lineno, f"line {rule.lineno}: LABEL is above"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_group_exists(path: Path) -> None:
    ours = sysusers_groups(*SYSUSERS_FILES)
    groups = {t.value for rule in rules_of(path) for t in rule.tokens if t.key == "GROUP"}
    assert groups
    assert groups <= ours | STANDARD_GROUPS, groups - ours - STANDARD_GROUPS


def test_syntax_checks_catch_mistakes() -> None:
    bad = parse_rules(
        'KERNEL="ttyGS0", GROUP=="x", ATTRS=="y", FROB="1", LABEL+="l", IMPORT{nope}="a"\n'
    )
    problems = [check_token(token) for token in bad[0].tokens]
    assert all(problems), problems
    with pytest.raises(AssertionError, match="cannot parse"):
        parse_rules("KERNEL==ttyGS0\n")
    continued = parse_rules('# c\nSUBSYSTEM=="tty", \\\n  GROUP="g"\n')
    assert [t.key for t in continued[0].tokens] == ["SUBSYSTEM", "GROUP"]


# --- a small udev, enough for these rules -----------------------------------------------


@dataclass
class Device:
    """A device as the rules see it: its own keys and attributes, and its parents'."""

    subsystem: str
    kernel: str
    properties: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    parents: list[Device] = field(default_factory=list)
    action: str = "add"


@dataclass
class Outcome:
    group: str | None = None
    mode: str | None = None
    symlinks: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _compare(value: str | None, token: Token) -> bool:
    hit = value is not None and _glob(value, token.value)
    return hit if token.op == "==" else not hit


def _substitute(value: str, device: Device, env: dict[str, str]) -> str:
    value = value.replace("%k", device.kernel).replace("$kernel", device.kernel)
    return re.sub(r"\$env\{([^}]*)\}|%E\{([^}]*)\}", lambda m: env.get(m[1] or m[2], ""), value)


def _usb_id(device: Device, env: dict[str, str]) -> bool:
    """The usb_id builtin, as far as the rules use it: a file-name-safe serial."""
    usb = next((p for p in device.parents if p.properties.get("DEVTYPE") == "usb_device"), None)
    serial = usb.attrs.get("serial", "") if usb else ""
    if not serial or any(ord(c) < 0x20 for c in serial):
        return False
    env["ID_SERIAL_SHORT"] = re.sub(r"[^0-9A-Za-z#+\-.:=@_]", "_", serial)
    return True


PARENT_KEYS = {"SUBSYSTEMS": "subsystem", "KERNELS": "kernel", "ATTRS": None}


def _rule_matches(rule: Rule, device: Device, env: dict[str, str]) -> bool:
    own = {"ACTION": device.action, "SUBSYSTEM": device.subsystem, "KERNEL": device.kernel}
    parent_tokens = [t for t in rule.tokens if t.key in PARENT_KEYS]
    for token in rule.tokens:
        if not token.is_match or token.key in PARENT_KEYS:
            continue
        if token.key in own:
            ok = _compare(own[token.key], token)
        elif token.key == "ENV":
            ok = _compare(env.get(token.attr or ""), token)
        elif token.key == "ATTR":
            ok = _compare(device.attrs.get(token.attr or ""), token)
        elif token.key == "IMPORT" and token.attr == "builtin" and token.value == "usb_id":
            ok = _usb_id(device, env) != (token.op == "!=")
        else:
            pytest.fail(f"line {rule.lineno}: the test's evaluator does not know {token}")
        if not ok:
            return False
    if not parent_tokens:
        return True

    # All parent keys of one rule must match on the same device (itself or an ancestor).
    def fits(candidate: Device) -> bool:
        for token in parent_tokens:
            if token.key == "ATTRS":
                value = candidate.attrs.get(token.attr or "")
            else:
                value = getattr(candidate, PARENT_KEYS[token.key] or "")
            if not _compare(value, token):
                return False
        return True

    return any(fits(candidate) for candidate in [device, *device.parents])


def play(path: Path, device: Device) -> Outcome:
    """Run one rules file for one event, as udev would (GOTO forward, assignments in order)."""
    rules = rules_of(path)
    outcome = Outcome(env=dict(device.properties))
    index = 0
    while index < len(rules):
        rule = rules[index]
        index += 1
        if all(t.key == "LABEL" for t in rule.tokens):
            continue
        if not _rule_matches(rule, device, outcome.env):
            continue
        for token in rule.tokens:
            if token.is_match:
                continue
            value = _substitute(token.value, device, outcome.env)
            if token.key == "GROUP":
                outcome.group = value
            elif token.key == "MODE":
                outcome.mode = value
            elif token.key == "SYMLINK":
                outcome.symlinks += value.split()
            elif token.key == "TAG":
                outcome.tags.add(value)
            elif token.key == "ENV":
                key = token.attr or ""
                old = outcome.env.get(key, "")
                outcome.env[key] = f"{old} {value}".strip() if token.op == "+=" else value
            elif token.key == "GOTO":
                labels = [
                    i for i, r in enumerate(rules)
                    if i >= index and any(t.key == "LABEL" and t.value == value for t in r.tokens)
                ]  # fmt: skip
                index = labels[0]
                break
            else:
                pytest.fail(f"line {rule.lineno}: the test's evaluator does not apply {token}")
    return outcome


VENDOR = f"{DEFAULT_VENDOR_ID:04x}"
PRODUCT = f"{DEFAULT_PRODUCT_ID:04x}"


def usb_camera(
    *, vendor: str = VENDOR, product_id: str = PRODUCT, product: str = "bodycam camera"
) -> Device:
    return Device(
        "usb",
        "1-1",
        properties={"DEVTYPE": "usb_device"},
        attrs={"idVendor": vendor, "idProduct": product_id, "product": product,
               "serial": "BODYCAM-0042"},
    )  # fmt: skip


def acm_tty(usb: Device, *, kernel: str = "ttyACM0", action: str = "add") -> Device:
    interface = Device("usb", "1-1:1.0", properties={"DEVTYPE": "usb_interface"})
    return Device("tty", kernel, parents=[interface, usb], action=action)


# --- dock host ---------------------------------------------------------------------------


def test_dock_rule_takes_a_camera_with_the_discovery_ids() -> None:
    outcome = play(DOCK_RULES, acm_tty(usb_camera()))
    assert outcome.group == "bodycam-dock"
    assert outcome.mode == "0660"
    assert outcome.env.get("ID_MM_DEVICE_IGNORE") == "1"
    assert "bodycam/BODYCAM-0042" in outcome.symlinks
    assert "systemd" in outcome.tags
    assert outcome.env["SYSTEMD_WANTS"].split() == ["bodycam-dock@ttyACM0.service"]


def test_dock_rule_starts_a_unit_that_exists_for_the_kernel_name() -> None:
    wanted = play(DOCK_RULES, acm_tty(usb_camera(), kernel="ttyACM3")).env["SYSTEMD_WANTS"]
    template = re.sub(r"@[^.]*\.", "@.", wanted)
    assert (SYSTEMD_DIR / template).is_file(), template
    # The instance is the kernel name: the unit binds to dev-<instance>.device, opens /dev/%I.
    assert wanted == "bodycam-dock@ttyACM3.service"
    unit = load_unit(template)
    assert unit.single("Unit", "BindsTo") == "dev-%i.device"
    assert unit.single("Service", "Group") == play(DOCK_RULES, acm_tty(usb_camera())).group


@pytest.mark.parametrize(
    "device",
    [
        acm_tty(usb_camera(vendor="1d6b", product_id="0104")),  # a Pi gadget left at defaults
        acm_tty(usb_camera(product="Pico")),  # another pid.codes prototype, same test id
        acm_tty(usb_camera(vendor="abcd")),
        acm_tty(usb_camera(), action="remove"),
        Device("tty", "ttyS0"),
    ],
    ids=["linux-foundation-gadget", "other-product", "other-vendor", "remove", "uart"],
)
def test_dock_rule_leaves_other_ports_alone(device: Device) -> None:
    outcome = play(DOCK_RULES, device)
    assert outcome.group is None
    assert "SYSTEMD_WANTS" not in outcome.env
    assert outcome.symlinks == []


def test_dock_rule_makes_no_link_without_a_usable_serial() -> None:
    usb = usb_camera()
    usb.attrs["serial"] = ""
    outcome = play(DOCK_RULES, acm_tty(usb))
    assert outcome.group == "bodycam-dock"
    assert outcome.symlinks == []


def test_dock_rule_opens_the_usb_node_for_watch() -> None:
    outcome = play(DOCK_RULES, usb_camera())
    assert (outcome.group, outcome.mode) == ("bodycam-dock", "0660")
    assert play(DOCK_RULES, usb_camera(vendor="abcd")).group is None


def test_dock_rule_text_names_the_discovery_ids() -> None:
    tokens = [t for rule in rules_of(DOCK_RULES) for t in rule.tokens]
    vendors = {t.value for t in tokens if t.attr == "idVendor"}
    products = {t.value for t in tokens if t.attr == "idProduct"}
    assert vendors == {VENDOR}
    assert products == {PRODUCT}


# --- camera ------------------------------------------------------------------------------


def gadget_tty(kernel: str = "ttyGS0", action: str = "add") -> Device:
    return Device("tty", kernel, action=action)


def test_camera_rule_gives_the_gadget_port_to_the_daemon() -> None:
    outcome = play(CAMERA_RULES, gadget_tty())
    daemon = load_unit("bodycam.service")
    assert outcome.group == daemon.single("Service", "Group")
    assert outcome.mode == "0660"
    assert "systemd" in outcome.tags
    assert outcome.env.get("ID_MM_DEVICE_IGNORE") == "1"
    assert play(CAMERA_RULES, gadget_tty("ttyGS1")).group == outcome.group


@pytest.mark.parametrize(
    "device",
    [gadget_tty(action="remove"), Device("tty", "ttyAMA0"), Device("tty", "ttyACM0"),
     Device("usb", "ttyGS0")],
    ids=["remove", "uart", "acm", "not-a-tty"],
)  # fmt: skip
def test_camera_rule_leaves_other_devices_alone(device: Device) -> None:
    outcome = play(CAMERA_RULES, device)
    assert outcome.group is None
    assert outcome.tags == set()


def test_camera_rule_says_how_docking_is_detected() -> None:
    text = CAMERA_RULES.read_text(encoding="utf-8")
    assert "/sys/class/udc/" in text
    assert "ttyGS" in text


# --- udev's own parser -------------------------------------------------------------------


def test_udev_itself_reads_the_rules_without_complaint(tmp_path: Path) -> None:
    """udevadm loads every rules file before it opens the device it is asked about; with a
    device that does not exist it stops there, having touched nothing. The namespace puts
    our files in /run/udev/rules.d and the sysusers-made /etc/group in place, for this process
    only."""
    # ./dev test installs both packages: a missing tool fails, it does not skip.
    udevadm = require_tool("udevadm", "udev")
    sysusers = require_tool("systemd-sysusers")
    unshare = require_tool("unshare", "util-linux")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        shutil.copyfile(path, rules_dir / path.name)
    (tmp_path / "etc").mkdir()
    made = run_tool([sysusers, f"--root={tmp_path}", *map(str, SYSUSERS_FILES)])
    assert made.returncode == 0, made.stderr
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", "true"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user+mount namespace here: {probe.stderr.strip()}")
    # A rules directory udev reads that exists here to mount over (udev makes /run/udev only
    # while running; the package ships /etc/udev/rules.d).
    target = next(
        (d for d in (Path("/run/udev/rules.d"), Path("/etc/udev/rules.d")) if d.is_dir()), None
    )
    if target is None:
        pytest.skip("neither /run/udev/rules.d nor /etc/udev/rules.d exists to mount over")
    script = (
        f'mount --bind "{rules_dir}" "{target}" && '
        f'mount --bind "{tmp_path}/etc/group" /etc/group && '
        f'exec "{udevadm}" test /sys/devices/bodycam-no-such-device'
    )
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    for path in RULE_FILES:
        assert f"Reading rules file: {target}/{path.name}" in output, output
    ours = [
        line for line in output.splitlines() if any(f"{path.name}:" in line for path in RULE_FILES)
    ]
    assert not ours, "\n".join(ours)
