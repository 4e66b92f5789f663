"""The key hierarchy: clip key, per-segment keys, record AEAD, and wrapping to the force key.

The camera holds only the force's X25519 *public* key. Each clip gets a fresh random 32-byte
clip key, which lives in memory while the clip is open and is stored only wrapped to the force
key. Whoever holds the card (or the camera) therefore holds ciphertext and nothing that
decrypts it; only the force's private key unwraps a clip key.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bodycam.daemon.evidence.errors import EvidenceError

CLIP_KEY_SIZE: Final = 32
SEGMENT_KEY_INFO: Final = b"bodycam/v1/segment-key"
WRAP_KEY_INFO: Final = b"bodycam/v1/clip-key-wrap"
# The KEK comes from a fresh ephemeral key pair and encrypts exactly one message, so a fixed
# nonce is safe and there is nothing else to store.
WRAP_NONCE: Final = bytes(12)
WRAPPED_KEY_SIZE: Final = CLIP_KEY_SIZE + 16

ALGORITHMS: Final = {
    "aead": "AES-256-GCM",
    "kdf": "HKDF-SHA256",
    "key_agreement": "X25519",
}


def new_clip_key() -> bytes:
    """A fresh random clip key (kept in memory only, never written in the clear)."""
    return secrets.token_bytes(CLIP_KEY_SIZE)


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def raw_public(key: X25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def segment_key(clip_key: bytes, clip_id: bytes, index: int) -> bytes:
    """Per-segment AES-256 key: HKDF-SHA256(clip key, info = label | clip id | u32 index)."""
    return _hkdf(clip_key, SEGMENT_KEY_INFO + clip_id + struct.pack(">I", index))


def record_nonce(record_index: int) -> bytes:
    """The 96-bit GCM nonce of a record: its index in the segment, big-endian.

    Unique because every segment has its own key and a record index is never reused within a
    segment (the writer refuses further records after a failed write; see ``ClipWriter``).
    """
    return record_index.to_bytes(12, "big")


def record_aad(header_bytes: bytes, record_index: int) -> bytes:
    """AAD binding a record to its segment header (clip id, segment index) and position."""
    return header_bytes + struct.pack(">I", record_index)


class SegmentCipher:
    """Encrypts or decrypts the records of one segment."""

    def __init__(self, clip_key: bytes, clip_id: bytes, index: int, header_bytes: bytes) -> None:
        self._aead = AESGCM(segment_key(clip_key, clip_id, index))
        self._header = header_bytes

    def encrypt(self, record_index: int, chunk: bytes) -> bytes:
        """Ciphertext with the 16-byte tag appended."""
        return self._aead.encrypt(
            record_nonce(record_index), chunk, record_aad(self._header, record_index)
        )

    def decrypt(self, record_index: int, ciphertext: bytes) -> bytes:
        """Plaintext of one record.

        Raises:
            EvidenceError: The GCM tag does not verify (altered, moved, or the wrong key).
        """
        try:
            return self._aead.decrypt(
                record_nonce(record_index), ciphertext, record_aad(self._header, record_index)
            )
        except InvalidTag:
            raise EvidenceError(f"record {record_index}: authentication failed") from None


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A clip key wrapped to the force's public key."""

    ephemeral_public_key: bytes  # 32 raw bytes
    wrapped_key: bytes  # 48 bytes: AES-GCM ciphertext of the clip key, tag included


def _kek(shared: bytes, ephemeral_public: bytes, force_public: bytes, clip_id: bytes) -> bytes:
    # Both public keys go into the info, as HPKE does, so the KEK is bound to this exchange.
    return _hkdf(shared, WRAP_KEY_INFO + ephemeral_public + force_public + clip_id)


def wrap_clip_key(clip_key: bytes, clip_id: bytes, force_key: X25519PublicKey) -> WrappedKey:
    """Wrap ``clip_key`` so that only the holder of the force private key can unwrap it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = raw_public(ephemeral.public_key())
    shared = ephemeral.exchange(force_key)
    kek = _kek(shared, ephemeral_public, raw_public(force_key), clip_id)
    wrapped = AESGCM(kek).encrypt(WRAP_NONCE, clip_key, clip_id)
    return WrappedKey(ephemeral_public, wrapped)


def unwrap_clip_key(wrapped: WrappedKey, clip_id: bytes, force_key: X25519PrivateKey) -> bytes:
    """Recover a clip key with the force private key.

    Raises:
        EvidenceError: The key does not unwrap (the wrong force key, or altered).
    """
    if len(wrapped.ephemeral_public_key) != 32 or len(wrapped.wrapped_key) != WRAPPED_KEY_SIZE:
        raise EvidenceError("wrapped clip key has the wrong size")
    try:
        ephemeral_public = X25519PublicKey.from_public_bytes(wrapped.ephemeral_public_key)
        shared = force_key.exchange(ephemeral_public)
    except ValueError:
        raise EvidenceError("wrapped clip key: invalid ephemeral public key") from None
    kek = _kek(shared, wrapped.ephemeral_public_key, raw_public(force_key.public_key()), clip_id)
    try:
        return AESGCM(kek).decrypt(WRAP_NONCE, wrapped.wrapped_key, clip_id)
    except InvalidTag:
        raise EvidenceError(
            "the clip key does not unwrap with this force private key (wrong key?)"
        ) from None
