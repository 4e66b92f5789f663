"""Dock certificates, the session transcript and dock identities on disk."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.dock.auth import (
    AUTH_DOCK_CONTEXT,
    COMMIT_CONTEXT,
    DOCK_CERT_NAME,
    DOCK_KEY_NAME,
    AuthError,
    authority_id,
    create_dock_identity,
    issue_dock_certificate,
    load_dock_identity,
    sign,
    transcript_hash,
    verify,
    verify_dock_certificate,
)
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import generate_device_key, raw_public_bytes
from bodycam.drivers.link.messages import DockCertificate

T0 = dt.datetime(2026, 11, 22, 10, 0, 0, tzinfo=dt.UTC)
DAYS = 30


@pytest.fixture
def authority() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def dock_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def cert(authority: Ed25519PrivateKey, dock_key: Ed25519PrivateKey) -> DockCertificate:
    return issue_dock_certificate(
        authority, dock_key.public_key(), "dock-bay-1", not_before=T0, days=DAYS
    )


def _flip(data: bytes, index: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


# ----- certificates -----------------------------------------------------------------------


def test_issued_certificate_verifies_and_yields_the_dock_key(
    authority: Ed25519PrivateKey, dock_key: Ed25519PrivateKey, cert: DockCertificate
) -> None:
    key = verify_dock_certificate(cert, authority.public_key(), now=T0 + dt.timedelta(days=1))
    assert raw_public_bytes(key) == raw_public_bytes(dock_key.public_key())
    # The key it yields checks the dock's signatures.
    signature = sign(dock_key, AUTH_DOCK_CONTEXT, b"t" * 32)
    assert verify(key, signature, AUTH_DOCK_CONTEXT, b"t" * 32)


def test_certificate_fields(authority: Ed25519PrivateKey, cert: DockCertificate) -> None:
    assert cert.dock_id == "dock-bay-1"
    assert cert.not_before_s == int(T0.timestamp())
    assert cert.not_after_s == int((T0 + dt.timedelta(days=DAYS)).timestamp())
    assert cert.issuer == authority_id(authority.public_key())
    assert len(cert.issuer) == 8
    # The wire encoding round-trips (what a dock.cert file and AUTH_DOCK carry).
    assert DockCertificate.decode(cert.encode()) == cert


def test_certificate_of_another_authority_is_rejected_naming_the_issuer(
    cert: DockCertificate,
) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(AuthError, match="issued by") as info:
        verify_dock_certificate(cert, other, now=T0)
    assert cert.issuer.hex() in str(info.value)
    assert authority_id(other).hex() in str(info.value)


def test_forged_issuer_field_does_not_help(
    dock_key: Ed25519PrivateKey, authority: Ed25519PrivateKey
) -> None:
    # A rogue authority writes our issuer id into its certificate: the signature gives it away.
    rogue = Ed25519PrivateKey.generate()
    forged = dataclasses.replace(
        issue_dock_certificate(rogue, dock_key.public_key(), "rogue", not_before=T0, days=1),
        issuer=authority_id(authority.public_key()),
    )
    with pytest.raises(AuthError, match="signature invalid"):
        verify_dock_certificate(forged, authority.public_key(), now=T0)


@pytest.mark.parametrize(
    "change",
    [
        {"dock_id": "dock-bay-2"},
        {"public_key": raw_public_bytes(Ed25519PrivateKey.generate().public_key())},
        {"not_before_s": int(T0.timestamp()) - 1},
        {"not_after_s": int((T0 + dt.timedelta(days=DAYS)).timestamp()) + 86_400},
    ],
    ids=["dock_id", "public_key", "not_before", "not_after"],
)
def test_tampered_field_is_rejected(
    authority: Ed25519PrivateKey, cert: DockCertificate, change: dict[str, object]
) -> None:
    tampered = dataclasses.replace(cert, **change)  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="signature invalid"):
        verify_dock_certificate(tampered, authority.public_key(), now=T0)
    # Even with the validity window unchecked.
    with pytest.raises(AuthError, match="signature invalid"):
        verify_dock_certificate(tampered, authority.public_key(), now=None)


def test_bad_signature_is_rejected(authority: Ed25519PrivateKey, cert: DockCertificate) -> None:
    for index in (0, 31, 63):
        bad = dataclasses.replace(cert, signature=_flip(cert.signature, index))
        with pytest.raises(AuthError, match="signature invalid"):
            verify_dock_certificate(bad, authority.public_key(), now=T0)


def test_signature_by_the_dock_itself_is_rejected(
    authority: Ed25519PrivateKey, dock_key: Ed25519PrivateKey, cert: DockCertificate
) -> None:
    self_signed = dataclasses.replace(cert, signature=dock_key.sign(cert.signed_part()))
    with pytest.raises(AuthError, match="signature invalid"):
        verify_dock_certificate(self_signed, authority.public_key(), now=T0)


def test_unsupported_version_is_rejected(
    authority: Ed25519PrivateKey, cert: DockCertificate
) -> None:
    with pytest.raises(AuthError, match="version 2"):
        verify_dock_certificate(
            dataclasses.replace(cert, version=2), authority.public_key(), now=T0
        )


def test_validity_window_bounds(authority: Ed25519PrivateKey, cert: DockCertificate) -> None:
    public = authority.public_key()
    start = T0
    end = T0 + dt.timedelta(days=DAYS)
    verify_dock_certificate(cert, public, now=start)
    verify_dock_certificate(cert, public, now=end)
    with pytest.raises(AuthError, match="expired"):
        verify_dock_certificate(cert, public, now=end + dt.timedelta(seconds=1))
    with pytest.raises(AuthError, match="not valid yet"):
        verify_dock_certificate(cert, public, now=start - dt.timedelta(seconds=1))


def test_without_a_clock_only_the_signature_is_checked(
    authority: Ed25519PrivateKey, cert: DockCertificate
) -> None:
    public = authority.public_key()
    with pytest.raises(AuthError, match="expired"):
        verify_dock_certificate(cert, public, now=T0 + dt.timedelta(days=DAYS + 400))
    # The same expired certificate passes when the camera's clock was never set ...
    verify_dock_certificate(cert, public, now=None)
    # ... but a bad signature or another issuer never does.
    with pytest.raises(AuthError, match="signature invalid"):
        verify_dock_certificate(
            dataclasses.replace(cert, signature=_flip(cert.signature)), public, now=None
        )
    with pytest.raises(AuthError, match="issued by"):
        verify_dock_certificate(cert, Ed25519PrivateKey.generate().public_key(), now=None)


def test_issuing_for_no_time_is_refused(
    authority: Ed25519PrivateKey, dock_key: Ed25519PrivateKey
) -> None:
    for days in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            issue_dock_certificate(authority, dock_key.public_key(), "d", not_before=T0, days=days)


# ----- transcript and signatures ----------------------------------------------------------


def test_transcript_hash_depends_on_both_hellos() -> None:
    dock, camera = b"dock hello payload", b"camera hello payload"
    base = transcript_hash(dock, camera)
    assert len(base) == 32
    assert transcript_hash(dock, camera) == base
    assert transcript_hash(_flip(dock, 5), camera) != base
    assert transcript_hash(dock, _flip(camera, 5)) != base
    assert transcript_hash(dock + b"x", camera) != base
    assert transcript_hash(dock, camera + b"x") != base
    assert transcript_hash(camera, dock) != base


def test_transcript_hash_cannot_be_shifted_across_the_boundary() -> None:
    dock, camera = b"AAAA", b"BBBB"
    base = transcript_hash(dock, camera)
    for cut in range(1, len(dock)):
        assert transcript_hash(dock[:cut], dock[cut:] + camera) != base
    for cut in range(1, len(camera)):
        assert transcript_hash(dock + camera[:cut], camera[cut:]) != base
    assert transcript_hash(b"", dock + camera) != base
    assert transcript_hash(dock + camera, b"") != base


def test_sign_and_verify_bind_key_context_and_parts() -> None:
    key = Ed25519PrivateKey.generate()
    transcript = bytes(range(32))
    signature = sign(key, COMMIT_CONTEXT, transcript, b"clip", b"head")
    assert verify(key.public_key(), signature, COMMIT_CONTEXT, transcript, b"clip", b"head")
    assert not verify(key.public_key(), signature, AUTH_DOCK_CONTEXT, transcript, b"clip", b"head")
    assert not verify(key.public_key(), signature, COMMIT_CONTEXT, transcript, b"clip", b"HEAD")
    assert not verify(
        key.public_key(), signature, COMMIT_CONTEXT, _flip(transcript), b"clip", b"head"
    )
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify(other, signature, COMMIT_CONTEXT, transcript, b"clip", b"head")
    assert not verify(
        key.public_key(), _flip(signature), COMMIT_CONTEXT, transcript, b"clip", b"head"
    )


# ----- dock identity on disk ----------------------------------------------------------------


@pytest.fixture
def authority_file(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    path = tmp_path / "force" / "authority.key"
    return path, generate_device_key(path)


def test_created_identity_loads_and_verifies(
    tmp_path: Path, authority_file: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, authority = authority_file
    directory = tmp_path / "dock"
    cert = create_dock_identity(directory, "dock-bay-7", path, days=10, now=T0)
    identity = load_dock_identity(directory)
    assert identity.certificate == cert
    assert identity.dock_id == "dock-bay-7"
    assert raw_public_bytes(identity.key.public_key()) == cert.public_key
    key = verify_dock_certificate(cert, authority.public_key(), now=T0 + dt.timedelta(days=9))
    assert raw_public_bytes(key) == cert.public_key
    with pytest.raises(AuthError, match="expired"):
        verify_dock_certificate(cert, authority.public_key(), now=T0 + dt.timedelta(days=11))


def test_creating_over_an_existing_key_is_refused(
    tmp_path: Path, authority_file: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, _ = authority_file
    directory = tmp_path / "dock"
    create_dock_identity(directory, "dock-a", path, days=10, now=T0)
    key_before = (directory / DOCK_KEY_NAME).read_bytes()
    with pytest.raises(EvidenceError):
        create_dock_identity(directory, "dock-b", path, days=10, now=T0)
    assert (directory / DOCK_KEY_NAME).read_bytes() == key_before


def test_certificate_for_another_key_is_rejected(
    tmp_path: Path, authority_file: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, _ = authority_file
    create_dock_identity(tmp_path / "a", "dock-a", path, days=10, now=T0)
    create_dock_identity(tmp_path / "b", "dock-b", path, days=10, now=T0)
    shutil.copyfile(tmp_path / "b" / DOCK_CERT_NAME, tmp_path / "a" / DOCK_CERT_NAME)
    with pytest.raises(EvidenceError, match="another key"):
        load_dock_identity(tmp_path / "a")


def test_missing_or_malformed_files_are_evidence_errors(
    tmp_path: Path, authority_file: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, _ = authority_file
    directory = tmp_path / "dock"
    with pytest.raises(EvidenceError):
        load_dock_identity(directory)  # nothing at all
    create_dock_identity(directory, "dock-a", path, days=10, now=T0)
    cert_path = directory / DOCK_CERT_NAME
    good = cert_path.read_bytes()

    cert_path.unlink()
    with pytest.raises(EvidenceError, match="no such dock certificate"):
        load_dock_identity(directory)

    cert_path.write_bytes(good[:-1])
    with pytest.raises(EvidenceError, match="not a dock certificate"):
        load_dock_identity(directory)

    cert_path.write_bytes(good)
    (directory / DOCK_KEY_NAME).unlink()
    with pytest.raises(EvidenceError):
        load_dock_identity(directory)
