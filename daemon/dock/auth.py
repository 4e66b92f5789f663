"""Who may talk to whom at the dock: the force authority, dock certificates, session proofs.

Three Ed25519 keys meet at a docking:

* the **force authority** key certifies docks and signs policies. Its private half stays at
  the force (offline); every camera holds the public half (``keys.authority_public_key``).
* a **dock key** with a certificate from the authority (:class:`DockCertificate`): a dock
  proves it belongs to the force by signing the session transcript with it.
* the camera's **device key** (the one that signs manifests) proves the camera's identity
  to the dock, which pins it against the force's registry of provisioned cameras.

Every signature covers a context string and the *transcript hash* of the session's two
HELLO payloads. Both HELLOs carry fresh 32-byte nonces, so a proof, a COMMIT or a TIME_SET
recorded in one session is worthless in any other (replay), and nothing unsigned can make a
camera delete footage (forgery).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded, write_file_durably
from bodycam.daemon.evidence.keys import (
    generate_device_key,
    load_device_key,
    load_device_public_key,
    raw_public_bytes,
)
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import DockCertificate

TRANSCRIPT_CONTEXT: Final = b"bodycam/v1/session\x00"
AUTH_DOCK_CONTEXT: Final = b"bodycam/v1/auth-dock\x00"
AUTH_DEVICE_CONTEXT: Final = b"bodycam/v1/auth-device\x00"
COMMIT_CONTEXT: Final = b"bodycam/v1/commit\x00"
TIME_CONTEXT: Final = b"bodycam/v1/time\x00"
MAX_CERT_FILE_BYTES: Final = 4096

__all__ = [
    "AuthError",
    "DockIdentity",
    "authority_id",
    "issue_dock_certificate",
    "load_dock_identity",
    "sign",
    "transcript_hash",
    "verify",
    "verify_dock_certificate",
]


class AuthError(Exception):
    """A proof did not verify; the message says which and why (never a secret)."""


def authority_id(authority: Ed25519PublicKey) -> bytes:
    """The 8-byte issuer id a certificate names: SHA-256 of the authority's raw key."""
    return hashlib.sha256(raw_public_bytes(authority)).digest()[:8]


def transcript_hash(dock_hello: bytes, camera_hello: bytes) -> bytes:
    """The session id: SHA-256 over both HELLO payloads, length-prefixed so they cannot shift."""
    digest = hashlib.sha256(TRANSCRIPT_CONTEXT)
    for payload in (dock_hello, camera_hello):
        digest.update(len(payload).to_bytes(4, "little"))
        digest.update(payload)
    return digest.digest()


def sign(key: Ed25519PrivateKey, context: bytes, *parts: bytes) -> bytes:
    """An Ed25519 signature over ``context`` followed by ``parts``."""
    return key.sign(context + b"".join(parts))


def verify(key: Ed25519PublicKey, signature: bytes, context: bytes, *parts: bytes) -> bool:
    """Whether ``signature`` is ``key``'s over ``context`` followed by ``parts``."""
    try:
        key.verify(signature, context + b"".join(parts))
    except InvalidSignature:
        return False
    return True


def verify_dock_certificate(
    cert: DockCertificate, authority: Ed25519PublicKey, *, now: dt.datetime | None
) -> Ed25519PublicKey:
    """The dock's public key, if ``cert`` was issued by ``authority`` and is valid ``now``.

    Args:
        cert: The certificate the dock presented.
        authority: The force authority's public key (from the camera's provisioning).
        now: The current UTC time, or None when the camera's clock is not set (a camera that
            has never been docked): then the validity window cannot be checked, and only the
            signature is. The dock sets the clock right after authenticating.

    Raises:
        AuthError: Wrong issuer, bad signature, or outside the validity window.
    """
    if cert.version != 1:
        raise AuthError(f"dock certificate version {cert.version} is not supported")
    if cert.issuer != authority_id(authority):
        raise AuthError(
            f"dock certificate of {cert.dock_id!r} is issued by {cert.issuer.hex()}, "
            f"not by this force's authority {authority_id(authority).hex()}"
        )
    if not verify_raw(authority, cert.signature, cert.signed_part()):
        raise AuthError(f"dock certificate of {cert.dock_id!r}: signature invalid")
    if now is not None:
        stamp = int(now.timestamp())
        if stamp < cert.not_before_s:
            raise AuthError(f"dock certificate of {cert.dock_id!r} is not valid yet")
        if stamp > cert.not_after_s:
            raise AuthError(f"dock certificate of {cert.dock_id!r} has expired")
    try:
        return Ed25519PublicKey.from_public_bytes(cert.public_key)
    except ValueError:
        raise AuthError(f"dock certificate of {cert.dock_id!r}: not an Ed25519 key") from None


def verify_raw(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``key``'s over exactly ``message``."""
    return verify(key, signature, b"", message)


def issue_dock_certificate(
    authority: Ed25519PrivateKey,
    dock_key: Ed25519PublicKey,
    dock_id: str,
    *,
    not_before: dt.datetime,
    days: float,
) -> DockCertificate:
    """A certificate for ``dock_key``, valid ``days`` from ``not_before`` (made at the force)."""
    if days <= 0:
        raise ValueError("a certificate must be valid for a positive number of days")
    unsigned = DockCertificate(
        version=1,
        dock_id=dock_id,
        public_key=raw_public_bytes(dock_key),
        not_before_s=int(not_before.timestamp()),
        not_after_s=int((not_before + dt.timedelta(days=days)).timestamp()),
        issuer=authority_id(authority.public_key()),
        signature=bytes(64),
    )
    return dataclasses.replace(unsigned, signature=authority.sign(unsigned.signed_part()))


@dataclass(frozen=True)
class DockIdentity:
    """What a dock proves itself with: its signing key and the authority's certificate."""

    key: Ed25519PrivateKey
    certificate: DockCertificate

    @property
    def dock_id(self) -> str:
        return self.certificate.dock_id


DOCK_KEY_NAME: Final = "dock.key"
DOCK_CERT_NAME: Final = "dock.cert"


def create_dock_identity(
    directory: Path,
    dock_id: str,
    authority_key: Path,
    *,
    days: float,
    now: dt.datetime | None = None,
) -> DockCertificate:
    """Make ``dock.key`` (+ ``dock.pub``) and ``dock.cert`` in ``directory``.

    Raises:
        EvidenceError: The key exists already, or a key cannot be read or written.
    """
    authority = load_device_key(authority_key, what="authority private key")
    key = generate_device_key(directory / DOCK_KEY_NAME)
    cert = issue_dock_certificate(
        authority, key.public_key(), dock_id, not_before=now or dt.datetime.now(dt.UTC), days=days
    )
    try:
        write_file_durably(directory / DOCK_CERT_NAME, cert.encode(), overwrite=True)
    except OSError as exc:
        raise EvidenceError(f"{directory / DOCK_CERT_NAME}: cannot write: {exc.strerror}") from None
    return cert


def load_dock_identity(directory: Path) -> DockIdentity:
    """The dock's key and certificate from its credentials directory.

    Raises:
        EvidenceError: Missing or malformed files, or a certificate for another key.
    """
    key = load_device_key(directory / DOCK_KEY_NAME, what="dock key")
    path = directory / DOCK_CERT_NAME
    try:
        data = read_bounded(path, MAX_CERT_FILE_BYTES, what="dock certificate")
    except FileNotFoundError:
        raise EvidenceError(f"{path}: no such dock certificate file") from None
    try:
        cert = DockCertificate.decode(data)
    except ProtocolError as exc:
        raise EvidenceError(f"{path}: not a dock certificate ({exc.detail})") from None
    if cert.public_key != raw_public_bytes(key.public_key()):
        raise EvidenceError(f"{path}: certifies another key than {directory / DOCK_KEY_NAME}")
    return DockIdentity(key, cert)


def load_authority_public_key(path: Path) -> Ed25519PublicKey:
    """The force authority's public key (PEM or base64 raw), as provisioned on a camera."""
    return load_device_public_key(path, what="authority public key")
