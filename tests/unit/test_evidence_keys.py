"""Key files: created private and atomically, never overwritten, loaded with clear errors."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bodycam.daemon.evidence import (
    EvidenceError,
    fingerprint,
    generate_device_key,
    generate_force_keypair,
    load_device_key,
    load_device_public_key,
    load_force_private_key,
    load_force_public_key,
)
from bodycam.daemon.evidence.keys import public_key_b64


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_key_is_private_pem_with_public_half(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device.key"
    key = generate_device_key(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public_path = tmp_path / "keys" / "device.pub"
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert fingerprint(load_device_key(path).public_key()) == fingerprint(key.public_key())
    assert fingerprint(load_device_public_key(public_path)) == fingerprint(key.public_key())
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_device_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    generate_device_key(path)
    before = path.read_bytes()
    with pytest.raises(EvidenceError, match="refusing to overwrite"):
        generate_device_key(path)
    assert path.read_bytes() == before


def test_force_keypair(tmp_path: Path) -> None:
    private, public = tmp_path / "force.key", tmp_path / "force.pub"
    generate_force_keypair(private, public)
    assert _mode(private) == 0o600
    from_private = load_force_private_key(private).public_key()
    assert fingerprint(load_force_public_key(public)) == fingerprint(from_private)
    with pytest.raises(EvidenceError, match="refusing to overwrite"):
        generate_force_keypair(private, tmp_path / "other.pub")


def test_public_key_as_base64_line(tmp_path: Path) -> None:
    key = generate_device_key(tmp_path / "device.key")
    line = tmp_path / "pinned.txt"
    line.write_text(public_key_b64(key.public_key()) + "\n")
    assert fingerprint(load_device_public_key(line)) == fingerprint(key.public_key())
    line.write_text("c2hvcnQ=\n")
    with pytest.raises(EvidenceError, match="32 bytes, found 5"):
        load_device_public_key(line)


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(EvidenceError, match=f"{missing}: no such device key file"):
        load_device_key(missing)
    generate_force_keypair(tmp_path / "force.key", tmp_path / "force.pub")
    with pytest.raises(EvidenceError, match=r"force\.key: not an Ed25519 private key"):
        load_device_key(tmp_path / "force.key")
    with pytest.raises(EvidenceError, match=r"force\.pub: not an Ed25519 public key"):
        load_device_public_key(tmp_path / "force.pub")
    generate_device_key(tmp_path / "device.key")
    with pytest.raises(EvidenceError, match=r"device\.key: not an X25519 private key"):
        load_force_private_key(tmp_path / "device.key")
    with pytest.raises(EvidenceError, match=r"device\.pub: not an X25519 public key"):
        load_force_public_key(tmp_path / "device.pub")
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(EvidenceError, match=r"garbage\.key: not a PEM private key"):
        load_device_key(garbage)


def test_oversized_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.key"
    with path.open("wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(EvidenceError, match="over the 65536-byte limit"):
        load_device_key(path)


def test_fingerprint_is_sha256_of_the_raw_key(tmp_path: Path) -> None:
    key = generate_device_key(tmp_path / "device.key").public_key()
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert fingerprint(key) == hashlib.sha256(raw).hexdigest()[:16]
