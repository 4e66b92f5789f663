"""The hash chain over a clip's sealed segments.

``chain_0 = SHA-256("bodycam/v1/chain" | clip id)`` and
``chain_i = SHA-256(chain_(i-1) | u32 index | segment SHA-256 | u64 size)`` (big-endian, raw
32-byte digests). The head after the last segment goes into the signed manifest, and a
rollover clip records its predecessor's head, so a missing, reordered or altered segment
breaks the chain even across clips.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Final

CHAIN_LABEL: Final = b"bodycam/v1/chain"


def chain_start(clip_id: bytes) -> str:
    """``chain_0`` of a clip, hex."""
    return hashlib.sha256(CHAIN_LABEL + clip_id).hexdigest()


def chain_next(previous: str, index: int, segment_sha256: str, size: int) -> str:
    """``chain_i`` from ``chain_(i-1)`` and segment ``index``'s hash and size, hex."""
    return hashlib.sha256(
        bytes.fromhex(previous)
        + struct.pack(">I", index)
        + bytes.fromhex(segment_sha256)
        + struct.pack(">Q", size)
    ).hexdigest()


def chain_over(clip_id: bytes, segments: Iterable[tuple[int, str, int]]) -> list[str]:
    """Every ``chain_i`` for ``(index, sha256, size)`` triples in order; [chain_0] first."""
    links = [chain_start(clip_id)]
    for index, sha, size in segments:
        links.append(chain_next(links[-1], index, sha, size))
    return links
