"""``bodycam install --root`` and ``bodycam provision``: the tree an image builder gets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bodycam.daemon.cli import main
from bodycam.daemon.config import ConfigError, load_config
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import generate_device_key, generate_force_keypair
from bodycam.daemon.install import install, wanted_by
from bodycam.daemon.provision import provision
from bodycam.dock.store import DockStore
from bodycam.drivers import usb_gadget
from tests.fakes.sysfs import FakeConfigfs, FakeUdc


def _force_keys(tmp_path: Path) -> tuple[Path, Path]:
    keys = tmp_path / "force-keys"
    keys.mkdir()
    generate_force_keypair(keys / "force.key", keys / "force.pub")
    generate_device_key(keys / "authority.key")
    return keys / "force.pub", keys / "authority.pub"


def _provision_cam_1(tmp_path: Path, root: Path) -> None:
    force_pub, authority_pub = _force_keys(tmp_path)
    provision(
        Path("/etc/bodycam/config.toml"),
        device_id="CAM-1",
        force_key=force_pub,
        authority_key=authority_pub,
        root=root,
    )


def test_camera_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    report = install(root, role="camera", venv=False)
    units = root / "usr/lib/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == ["bodycam-gadget.service", "bodycam.service"]
    assert (root / "usr/lib/udev/rules.d/70-bodycam-camera.rules").is_file()
    assert (root / "usr/lib/sysusers.d/bodycam.conf").is_file()
    assert (root / "usr/lib/tmpfiles.d/bodycam.conf").is_file()
    # Enabled the way systemctl enable does it: an absolute link inside the image.
    link = root / "etc/systemd/system/multi-user.target.wants/bodycam.service"
    assert link.is_symlink()
    assert link.readlink() == Path("/usr/lib/systemd/system/bodycam.service")
    assert link in report.enabled
    # No login prompt on the dock's serial port.
    getty = root / "etc/systemd/system/serial-getty@ttyGS0.service"
    assert getty.is_symlink()
    assert getty.readlink() == Path("/dev/null")
    state = root / "var/lib/bodycam"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    # The service user exists in the image (systemd-sysusers --root ran).
    passwd = (root / "etc/passwd").read_text()
    assert any(line.startswith("bodycam:") for line in passwd.splitlines())
    # The config is one the daemon accepts, for the Pi board, not yet provisioned.
    config = load_config(root / "etc/bodycam/config.toml")
    assert config.device.board == "pi"
    assert config.device.id == "UNPROVISIONED"
    assert config.device.state_dir == Path("/var/lib/bodycam")


def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, venv=False)
    config = root / "etc/bodycam/config.toml"
    config.write_text(config.read_text().replace("pre_event_s = 30.0", "pre_event_s = 10.0"))
    report = install(root, venv=False)
    assert config in report.kept
    assert load_config(config).recording.pre_event_s == 10.0


def test_dock_tree(tmp_path: Path) -> None:
    root = tmp_path / "dock"
    report = install(root, role="dock", venv=False)
    assert (root / "usr/lib/systemd/system/bodycam-dock@.service").is_file()
    assert (root / "usr/lib/udev/rules.d/70-bodycam-dock.rules").is_file()
    assert report.enabled == []  # started per camera by udev, never enabled
    passwd = (root / "etc/passwd").read_text()
    assert any(line.startswith("bodycam-dock:") for line in passwd.splitlines())
    assert not (root / "etc/bodycam/config.toml").exists()
    assert (root / "usr/lib/tmpfiles.d/bodycam-dock.conf").is_file()
    # The credentials are root's alone (the unit loads them with LoadCredential=); the store
    # directory is the agent's, so `store init` can run as bodycam-dock at once.
    credentials = root / "etc/bodycam-dock"
    store = root / "var/lib/bodycam-dock"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.stat().st_mode) == 0o750
    if os.geteuid() == 0:
        uid = int(next(line for line in passwd.splitlines() if line.startswith("bodycam-dock:"))
                  .split(":")[2])  # fmt: skip
        assert store.stat().st_uid == uid
        assert (credentials.stat().st_uid, credentials.stat().st_gid) == (0, 0)
    # The store is made by `store init` as its owner, a step the report names, in order.
    steps = report.next_steps
    assert [i for i, step in enumerate(steps) if "keygen dock" in step] == [0]
    assert "sudo -u bodycam-dock /opt/bodycam/venv/bin/bodycam store init" in steps[1]
    assert "store enrol" in steps[2]
    assert not list(store.iterdir())


def test_dock_install_again_keeps_store_and_credentials(tmp_path: Path) -> None:
    root = tmp_path / "dock"
    install(root, role="dock", venv=False)
    key = root / "etc/bodycam-dock/dock.key"
    key.write_bytes(b"key")
    key.chmod(0o600)
    (root / "etc/bodycam-dock/dock.cert").write_bytes(b"cert")
    store_toml = root / "var/lib/bodycam-dock/store.toml"
    store_toml.write_text("retention_days = 90\n")
    report = install(root, role="dock", venv=False)  # an upgrade
    assert key.read_bytes() == b"key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert store_toml.read_text() == "retention_days = 90\n"
    # Done steps are not asked for again.
    assert not any("keygen dock" in step or "store init" in step for step in report.next_steps)


def test_install_command_prints_the_dock_next_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "dock"
    assert main(["install", "--root", str(root), "--role", "dock", "--no-venv"]) == 0
    out = capsys.readouterr().out
    assert "next 2: sudo -u bodycam-dock /opt/bodycam/venv/bin/bodycam store init" in out


def test_wanted_by_reads_only_the_install_section() -> None:
    text = "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=multi-user.target a.target\n"
    assert wanted_by(text) == ["multi-user.target", "a.target"]


def test_provision_then_the_daemon_accepts_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, venv=False)
    force_pub, authority_pub = _force_keys(tmp_path)
    enrol = tmp_path / "enrol"
    identity = provision(
        Path("/etc/bodycam/config.toml"),
        device_id="MET-BWV-004711",
        force_key=force_pub,
        authority_key=authority_pub,
        root=root,
        enrol_dir=enrol,
    )
    assert identity.key_created
    keys = root / "var/lib/bodycam/keys"
    assert stat.S_IMODE((keys / "device.key").stat().st_mode) == 0o600
    assert (keys / "force.pub").read_bytes() == force_pub.read_bytes()
    assert (keys / "authority.pub").read_bytes() == authority_pub.read_bytes()
    record = json.loads((root / "var/lib/bodycam/identity.json").read_text())
    assert record["device_id"] == "MET-BWV-004711"
    assert record["device_key"] == identity.device_key_fingerprint
    config = load_config(root / "etc/bodycam/config.toml")
    assert config.device.id == "MET-BWV-004711"
    # The enrolment file registers the camera with a dock store.
    assert identity.enrol_file == enrol / "MET-BWV-004711.pub"
    store = DockStore(tmp_path / "store")
    store.register_device("MET-BWV-004711", identity.enrol_file)
    # Provisioning again keeps the key (clips on the card are signed with it).
    again = provision(
        Path("/etc/bodycam/config.toml"),
        device_id="MET-BWV-004711",
        force_key=force_pub,
        authority_key=authority_pub,
        root=root,
    )
    assert not again.key_created
    assert again.device_key_fingerprint == identity.device_key_fingerprint


def test_daemon_check_accepts_the_provisioned_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, venv=False)
    _provision_cam_1(tmp_path, root)
    # The config names /var/lib/bodycam; point the check at the image's copy of it.
    config = root / "etc/bodycam/config.toml"
    text = config.read_text().replace('"/var/lib/bodycam"', f'"{root}/var/lib/bodycam"')
    checked = tmp_path / "checked.toml"
    checked.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "bodycam.daemon.cli", "daemon", "--check", "--config", str(checked)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "config OK: camera CAM-1 on the pi board" in result.stdout


def test_provision_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, venv=False)
    force_pub, authority_pub = _force_keys(tmp_path)
    config = Path("/etc/bodycam/config.toml")
    with pytest.raises(ConfigError, match="device id"):
        provision(
            config, device_id="a/b", force_key=force_pub, authority_key=authority_pub, root=root
        )
    # The keys swapped: each is the wrong kind, and nothing is written.
    with pytest.raises(EvidenceError):
        provision(
            config, device_id="CAM-1", force_key=authority_pub, authority_key=force_pub, root=root
        )
    assert not (root / "var/lib/bodycam/keys/device.key").exists()
    assert load_config(root / config.relative_to("/")).device.id == "UNPROVISIONED"


def test_install_and_provision_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert main(["install", "--root", str(root), "--no-venv"]) == 0
    out = capsys.readouterr().out
    assert "enabled" in out
    force_pub, authority_pub = _force_keys(tmp_path)
    args = ["provision", "--root", str(root), "--device-id", "CAM-9", "--force-key"]
    assert main([*args, str(force_pub), "--authority-key", str(authority_pub)]) == 0
    assert "camera CAM-9: device key created" in capsys.readouterr().out
    # A bad key file is one line on stderr, not a traceback.
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    assert main([*args, str(bad), "--authority-key", str(authority_pub)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("bodycam: error:")
    assert "Traceback" not in err


@pytest.mark.slow
def test_install_builds_the_venv(tmp_path: Path) -> None:
    # A wheel of this checkout (pip fetches its build backend from the package index, as
    # any wheel build does), installed without dependencies: proves the
    # venv is made with the system site-packages (picamera2 comes from the OS) and that the
    # console script lands where the units expect it.
    dist = tmp_path / "dist"
    checkout = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(dist),
            str(checkout),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("bodycam-*.whl"))
    root = tmp_path / "root"
    install(root, packages=[str(wheel)], pip_args=["--no-deps", "--no-index"])
    venv = root / "opt/bodycam/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin/bodycam").is_file()
    # The units and rules are inside the wheel too, so an installed bodycam can lay them out.
    names = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.resources as r; print(sorted(p.name for p in "
            "r.files('bodycam.systemd').iterdir()))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "bodycam.service" in names


def test_gadget_command_uses_the_device_id_as_usb_serial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    udc = FakeUdc(tmp_path / "udc")
    udc.add("fe980000.usb")
    configfs = tmp_path / "configfs"
    # configfs's own rules (attributes appear on mkdir, ...) come from the fake.
    fake = FakeConfigfs(configfs, udc)
    monkeypatch.setattr(usb_gadget, "OsConfigfsOps", lambda: fake)
    config = tmp_path / "config.toml"
    config.write_text('[device]\nid = "MET-BWV-004711"\nboard = "pi"\n')
    args = ["gadget", "up", "--config", str(config), "--configfs", str(configfs)]
    assert main([*args, "--udc-class", str(tmp_path / "udc")]) == 0
    assert "bound to fe980000.usb" in capsys.readouterr().out
    gadget = configfs / "usb_gadget/bodycam"
    assert (gadget / "strings/0x409/serialnumber").read_text().strip() == "MET-BWV-004711"
    assert (gadget / "strings/0x409/product").read_text().strip().startswith("bodycam")
    assert (gadget / "idVendor").read_text().strip() == "0x1209"
    assert main(["gadget", "down", "--configfs", str(configfs)]) == 0
    assert not gadget.exists()
    # No controller: one clear line naming what to fix, exit code 2.
    udc.remove("fe980000.usb")
    assert main([*args, "--udc-class", str(tmp_path / "udc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bodycam: error:")
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_provision_as_root_gives_the_keys_to_the_state_dirs_owner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, venv=False)
    state = root / "var/lib/bodycam"
    os.chown(state, 4242, 4242)  # the daemon ran once: systemd gave it to the bodycam user
    _provision_cam_1(tmp_path, root)
    for path in (state / "keys", state / "keys/device.key", state / "identity.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4242), path
