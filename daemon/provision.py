"""``bodycam provision``: give one camera its identity and the force's public keys.

Run once per camera, on the camera (or on its card mounted with ``--root``), after
``bodycam install``. It:

1. creates the device signing key in ``<state_dir>/keys`` (the private half never leaves
   the camera; a key that exists is kept unless ``--replace-key``: clips on the card are
   signed with it, and the dock knows the camera by it);
2. checks and copies the force's X25519 public key (footage is encrypted to it) and the
   force authority's Ed25519 public key (docks and policies are checked against it);
3. sets ``device.id`` in the config (the line ``bodycam install`` wrote), and reads the
   config back to prove the daemon will accept it;
4. writes ``<state_dir>/identity.json`` (who this camera is, which keys, when) and, with
   ``--enrol-dir``, ``<device id>.pub`` for the force to register with its docks
   (``bodycam store enrol``): a dock accepts clips only from a camera whose key it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bodycam.daemon.config import ConfigError, load_config
from bodycam.daemon.dock.auth import load_authority_public_key
from bodycam.daemon.evidence.keys import (
    fingerprint,
    generate_device_key,
    load_device_key,
    load_force_public_key,
)

_DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The [device] table's id line, as the template writes it.
_ID_LINE = re.compile(r'^(\s*id\s*=\s*)"[^"\n]*"(.*)$', re.MULTILINE)


@dataclass(frozen=True)
class Identity:
    device_id: str
    device_key_fingerprint: str
    force_key_fingerprint: str
    authority_key_fingerprint: str
    key_created: bool
    enrol_file: Path | None


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else root / path


def _set_device_id(config_path: Path, device_id: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    device = re.search(r"^\[device\][^\[]*", text, re.MULTILINE)
    if device is None or _ID_LINE.search(device.group(0)) is None:
        raise ConfigError(
            f'{config_path}: no id line in [device] to set; add  id = "{device_id}"  there'
        )
    table = _ID_LINE.sub(lambda m: f'{m.group(1)}"{device_id}"{m.group(2)}', device.group(0), 1)
    text = text[: device.start()] + table + text[device.end() :]
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(config_path.stat().st_mode & 0o777)
    tmp.replace(config_path)


def _give_to_state_owner(state_dir: Path, paths: list[Path]) -> None:
    """Run as root, make the files provisioning wrote the daemon's (the state dir's owner).

    systemd hands the state directory to the unit's user at start only when the directory
    itself has the wrong owner; a camera re-provisioned after its first boot would otherwise
    keep root-owned keys its daemon cannot read.
    """
    if os.geteuid() != 0:
        return
    owner = state_dir.stat()
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid)


def _copy_key(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.chmod(0o644)
    tmp.replace(target)


def provision(
    config_path: Path,
    *,
    device_id: str,
    force_key: Path,
    authority_key: Path,
    root: Path = Path("/"),
    enrol_dir: Path | None = None,
    replace_key: bool = False,
    now: dt.datetime | None = None,
) -> Identity:
    """Provision the camera whose config is ``root``/``config_path``; see the module docs.

    Raises:
        ConfigError: Bad device id, or the config cannot take it.
        EvidenceError: A key is missing, malformed or of the wrong kind, or the device key
            exists and ``replace_key`` is False.
    """
    if not _DEVICE_ID.fullmatch(device_id):
        raise ConfigError(
            f"device id {device_id!r}: 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes the USB serial number and file names)"
        )
    # Check the keys before touching anything: a wrong file must not half-provision.
    force = load_force_public_key(force_key)
    authority = load_authority_public_key(authority_key)
    config_file = _under(root, config_path)
    config = load_config(config_file)
    state_dir = _under(root, config.device.state_dir)
    key_path = _under(state_dir, config.keys.device_key)
    if key_path.exists() and replace_key:
        for old in (key_path, key_path.with_suffix(".pub")):
            old.unlink(missing_ok=True)
    created = not key_path.exists()
    signing_key = generate_device_key(key_path) if created else load_device_key(key_path)
    _copy_key(force_key, _under(state_dir, config.keys.force_public_key))
    _copy_key(authority_key, _under(state_dir, config.keys.authority_public_key))
    _set_device_id(config_file, device_id)
    if load_config(config_file).device.id != device_id:
        raise ConfigError(f"{config_file}: device.id did not take the new value")
    enrol_file = None
    if enrol_dir is not None:
        enrol_dir.mkdir(parents=True, exist_ok=True)
        enrol_file = enrol_dir / f"{device_id}.pub"
        _copy_key(key_path.with_suffix(".pub"), enrol_file)
    identity = Identity(
        device_id=device_id,
        device_key_fingerprint=fingerprint(signing_key.public_key()),
        force_key_fingerprint=fingerprint(force),
        authority_key_fingerprint=fingerprint(authority),
        key_created=created,
        enrol_file=enrol_file,
    )
    record = {
        "device_id": device_id,
        "device_key": identity.device_key_fingerprint,
        "force_key": identity.force_key_fingerprint,
        "authority_key": identity.authority_key_fingerprint,
        "provisioned_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
    }
    identity_file = state_dir / "identity.json"
    identity_file.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    keys = [
        key_path,
        key_path.with_suffix(".pub"),
        _under(state_dir, config.keys.force_public_key),
        _under(state_dir, config.keys.authority_public_key),
    ]
    _give_to_state_owner(state_dir, [*{p.parent for p in keys}, *keys, identity_file])
    return identity
