"""Key files: the device's Ed25519 signing key and the force's X25519 key pair.

The device key signs manifests and never leaves the camera. The force key pair decides who can
read footage: the camera holds only the public half, the force keeps the private half off the
camera. Private keys are PEM (PKCS#8), mode 0600, written atomically and never overwritten:
replacing a device key by accident would orphan every manifest it signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded, write_file_durably

MAX_KEY_FILE_BYTES: Final = 64 * 1024

_log = logging.getLogger(__name__)

__all__ = [
    "fingerprint",
    "generate_device_key",
    "generate_force_keypair",
    "load_device_key",
    "load_device_public_key",
    "load_force_private_key",
    "load_force_public_key",
    "public_key_b64",
    "raw_public_bytes",
]


def raw_public_bytes(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """The raw public key in standard base64, as recorded in manifests."""
    return base64.b64encode(raw_public_bytes(key)).decode("ascii")


def fingerprint(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of SHA-256(raw key)."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:16]


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _public_pem(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise EvidenceError(f"{path}: already exists; refusing to overwrite a key")


def _prepare_dir(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"{path.parent}: cannot create key directory: {exc.strerror}") from None


def generate_device_key(path: Path) -> Ed25519PrivateKey:
    """Create the device signing key at ``path`` and its public half beside it (``.pub``).

    Raises:
        EvidenceError: Either file exists already, or they cannot be written.
    """
    public_path = path.with_suffix(".pub")
    if public_path == path:
        raise EvidenceError(f"{path}: a private key file must not end in .pub")
    _refuse_existing(path, public_path)
    _prepare_dir(path)
    key = Ed25519PrivateKey.generate()
    try:
        write_file_durably(path, _private_pem(key), mode=0o600, overwrite=False)
        write_file_durably(public_path, _public_pem(key.public_key()), overwrite=False)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot write key: {exc.strerror}") from None
    return key


def generate_force_keypair(private_path: Path, public_path: Path) -> None:
    """Create a force X25519 key pair (run on the force's side, never on a camera).

    Raises:
        EvidenceError: Either file exists already, or they cannot be written.
    """
    if private_path == public_path:
        raise EvidenceError(f"{private_path}: private and public key paths must differ")
    _refuse_existing(private_path, public_path)
    _prepare_dir(private_path)
    _prepare_dir(public_path)
    key = X25519PrivateKey.generate()
    try:
        write_file_durably(private_path, _private_pem(key), mode=0o600, overwrite=False)
        write_file_durably(public_path, _public_pem(key.public_key()), overwrite=False)
    except OSError as exc:
        raise EvidenceError(f"{private_path}: cannot write key: {exc.strerror}") from None


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return read_bounded(path, MAX_KEY_FILE_BYTES, what=what)
    except FileNotFoundError:
        raise EvidenceError(f"{path}: no such {what} file") from None


def _load_private(path: Path, what: str) -> object:
    data = _read_key_file(path, what)
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        raise EvidenceError(f"{path}: {what} is password-protected; not supported") from None
    except (ValueError, binascii.Error):
        raise EvidenceError(f"{path}: not a PEM private key (expected the {what})") from None
    except Exception as exc:  # cryptography reports some malformed input as its own types
        raise EvidenceError(f"{path}: cannot load the {what}: {type(exc).__name__}") from None


def _load_public(path: Path, what: str) -> object:
    """A PEM public key, or one line of base64 of the raw 32 bytes (as in a manifest)."""
    data = _read_key_file(path, what)
    if b"-----BEGIN" in data:
        try:
            return load_pem_public_key(data)
        except (ValueError, binascii.Error):
            raise EvidenceError(f"{path}: not a PEM public key (expected the {what})") from None
        except Exception as exc:
            raise EvidenceError(f"{path}: cannot load the {what}: {type(exc).__name__}") from None
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise EvidenceError(f"{path}: neither PEM nor base64 (expected the {what})") from None
    if len(raw) != 32:
        raise EvidenceError(f"{path}: a raw public key is 32 bytes, found {len(raw)}")
    return raw


def _kind(key: object) -> str:
    return type(key).__name__.lstrip("_")


def load_device_key(path: Path, *, what: str = "device key") -> Ed25519PrivateKey:
    """Load an Ed25519 signing key: the device's (or, named by ``what``, a dock's or authority's).

    Raises:
        EvidenceError: Missing, unreadable, malformed, or not an Ed25519 private key.
    """
    key = _load_private(path, what)
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path}: not an Ed25519 private key (found {_kind(key)})")
    return key


def load_device_public_key(path: Path, *, what: str = "device public key") -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM, or base64 of the 32 raw bytes); ``what`` names it.

    Raises:
        EvidenceError: Missing, unreadable, malformed, or not an Ed25519 public key.
    """
    key = _load_public(path, what)
    if isinstance(key, bytes):
        try:
            return Ed25519PublicKey.from_public_bytes(key)
        except ValueError:
            raise EvidenceError(f"{path}: not a valid Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path}: not an Ed25519 public key (found {_kind(key)})")
    return key


def load_force_public_key(path: Path) -> X25519PublicKey:
    """Load the force's X25519 public key (PEM, or base64 of the 32 raw bytes).

    Raises:
        EvidenceError: Missing, unreadable, malformed, or not an X25519 public key.
    """
    key = _load_public(path, "force public key")
    if isinstance(key, bytes):
        try:
            return X25519PublicKey.from_public_bytes(key)
        except ValueError:
            raise EvidenceError(f"{path}: not a valid X25519 public key") from None
    if not isinstance(key, X25519PublicKey):
        raise EvidenceError(f"{path}: not an X25519 public key (found {_kind(key)})")
    return key


def load_force_private_key(path: Path) -> X25519PrivateKey:
    """Load the force's X25519 private key (needed only to export footage).

    Raises:
        EvidenceError: Missing, unreadable, malformed, or not an X25519 private key.
    """
    key = _load_private(path, "force private key")
    if not isinstance(key, X25519PrivateKey):
        raise EvidenceError(f"{path}: not an X25519 private key (found {_kind(key)})")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        # Not fatal (an investigator may hold it on removable media) but worth a log line.
        _log.warning("%s: force private key is readable by others", path)
    return key
