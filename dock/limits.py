"""Bounds on what a camera may claim, checked before the dock believes or fetches anything.

Everything in a LIST_REPLY and every size in a manifest is input from the link: a rogue or
broken camera can put any number there. Each bound below is the evidence format's own limit
(docs/evidence-format.md, "Limits") or a figure far above what an honest camera produces, so
an honest clip is never refused and a lying one costs the dock a bounded amount of memory,
disk and time. The checks are pure functions: they name the problem, the agent decides
what to do with the clip (refuse it, logged in custody, and leave it on the camera).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

from bodycam.daemon.evidence.journal import MAX_JOURNAL_BYTES
from bodycam.daemon.evidence.manifest import SIGNATURE_SIZE
from bodycam.daemon.evidence.schema import MAX_MANIFEST_BYTES, Manifest
from bodycam.daemon.evidence.segfile import MAX_SEGMENT_INDEX
from bodycam.drivers.link.messages import ClipEntry

__all__ = [
    "LIST_PAGE",
    "MAX_CLIP_BYTES",
    "MAX_JOURNAL_BYTES",
    "MAX_LIST_ENTRIES",
    "MAX_LIST_PAGES",
    "MAX_MANIFEST_BYTES",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_BYTES",
    "SIGNATURE_SIZE",
    "duplicates",
    "entry_problems",
    "fetch_bytes",
    "manifest_problems",
    "stored_problems",
]

# Entries the dock asks for per LIST page (the camera serves at most 64 too).
LIST_PAGE: Final = 64
# Clips one session may list. A card holds a shift or a few: 10,000 clips is weeks of
# footage even at the 10 s minimum clip length, and 10,000 entries are ~2 MB of memory.
MAX_LIST_ENTRIES: Final = 10_000
# Pages needed for MAX_LIST_ENTRIES, plus the last (possibly empty) one: a camera that keeps
# answering with more pages (empty ones too) is cut off here.
MAX_LIST_PAGES: Final = math.ceil(MAX_LIST_ENTRIES / LIST_PAGE) + 1
# Six-digit segment file names (seg-NNNNNN.bcs).
MAX_SEGMENTS: Final = MAX_SEGMENT_INDEX + 1
# One segment is at most 60 s of video (recording.segment_s <= 60); 1 GiB is 140 Mbit/s for
# those 60 s, several times the highest bit rate a body camera records at.
MAX_SEGMENT_BYTES: Final = 1 << 30
# A clip is at most 24 h (recording.max_clip_s); 1 TiB is ~100 Mbit/s for 24 h, beyond any
# camera's card. The real bound of a session is the store's free space, checked per clip.
MAX_CLIP_BYTES: Final = 1 << 40


def entry_problems(entry: ClipEntry) -> list[str]:
    """What is impossible in one listed clip's sizes (empty: nothing), before any fetch."""
    problems: list[str] = []
    if not 0 < entry.manifest_size <= MAX_MANIFEST_BYTES:
        problems.append(
            f"listed manifest of {entry.manifest_size} bytes (1 to {MAX_MANIFEST_BYTES} allowed)"
        )
    if entry.signature_size != SIGNATURE_SIZE:
        problems.append(
            f"listed signature of {entry.signature_size} bytes ({SIGNATURE_SIZE} required)"
        )
    if entry.journal_size > MAX_JOURNAL_BYTES:
        problems.append(
            f"listed journal of {entry.journal_size} bytes (at most {MAX_JOURNAL_BYTES})"
        )
    if entry.segments > MAX_SEGMENTS:
        problems.append(f"listed {entry.segments} segments (at most {MAX_SEGMENTS})")
    if entry.total_bytes > min(MAX_CLIP_BYTES, entry.segments * MAX_SEGMENT_BYTES):
        problems.append(
            f"listed {entry.total_bytes} bytes in {entry.segments} segment(s) "
            f"(at most {MAX_SEGMENT_BYTES} per segment, {MAX_CLIP_BYTES} per clip)"
        )
    return problems


def manifest_problems(manifest: Manifest, entry: ClipEntry) -> list[str]:
    """Where a signature-checked manifest disagrees with its listing or the format's bounds.

    The segment sizes in it decide how much is fetched, so they are bounded here even
    though the camera signed them: a valid signature proves who wrote a number, not that
    the number is sane.
    """
    problems: list[str] = []
    sizes = [segment.size for segment in manifest.segments]
    if len(sizes) > MAX_SEGMENTS:
        problems.append(f"manifest lists {len(sizes)} segments (at most {MAX_SEGMENTS})")
    big = [s for s in manifest.segments if s.size > MAX_SEGMENT_BYTES]
    if big:
        problems.append(
            f"manifest: {big[0].name} is {big[0].size} bytes (at most {MAX_SEGMENT_BYTES})"
        )
    if sum(sizes) != manifest.total_bytes:
        problems.append(
            f"manifest: segments add up to {sum(sizes)} bytes, its total says "
            f"{manifest.total_bytes}"
        )
    if manifest.total_bytes != entry.total_bytes or len(sizes) != entry.segments:
        problems.append(
            f"manifest: {len(sizes)} segment(s), {manifest.total_bytes} bytes; the listing "
            f"said {entry.segments}, {entry.total_bytes}"
        )
    if manifest.chain_head != entry.chain_head.hex():
        problems.append("manifest: chain head differs from the listed one")
    return problems


def stored_problems(manifest: Manifest, entry: ClipEntry, device_id: str) -> list[str]:
    """Why a stored copy with ``manifest`` may not stand for ``entry`` in a COMMIT.

    The last look before the one message that lets the camera delete its clip: the copy
    must name this clip, this camera, and the chain head the camera listed (and COMMIT
    signs). The store keys copies by (device id, clip id) already; this holds even if a
    record were wrong.
    """
    if manifest.device_id != device_id or manifest.clip_id != entry.clip_id.hex():
        return ["the stored copy names another clip or camera; not committed"]
    if manifest.chain_head != entry.chain_head.hex():
        return ["the stored copy's chain head is not the listed one; not committed"]
    return []


def fetch_bytes(entry: ClipEntry) -> int:
    """Bytes a whole transfer of ``entry`` writes (head files and segments)."""
    return entry.manifest_size + entry.signature_size + entry.journal_size + entry.total_bytes


def duplicates(entries: list[ClipEntry]) -> tuple[set[bytes], set[str]]:
    """Clip ids and names listed more than once (an honest camera lists each once)."""
    ids = Counter(e.clip_id for e in entries)
    names = Counter(e.name for e in entries)
    return {k for k, n in ids.items() if n > 1}, {k for k, n in names.items() if n > 1}
