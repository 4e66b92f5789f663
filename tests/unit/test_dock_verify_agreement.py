"""The dock cannot be tricked by what it verifies: it commits what ``bodycam verify`` passes.

One enrolled camera holds a real signed clip for every way the evidence format can be
tampered with on its card (a byte, a length, a missing, swapped, added or borrowed file, an
edited manifest signed by nobody, by another key or not re-signed after its hash chain was
recomputed), plus untouched clips. Each clip is first judged by ``bodycam verify
--device-key`` (the CLI, in process) on the camera's own copy; then the camera docks into a
real :class:`DockAgent` over a pseudo-terminal. For every clip: the dock committed it if and
only if ``bodycam verify`` exited 0, and a clip the dock did not commit is still on the card.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.cli import main as bodycam_main
from bodycam.daemon.dock.auth import load_dock_identity
from bodycam.daemon.evidence.chain import chain_over
from bodycam.daemon.evidence.journal import JOURNAL_NAME
from bodycam.daemon.evidence.keys import fingerprint, public_key_b64
from bodycam.daemon.evidence.manifest import MANIFEST_NAME, SIGNATURE_NAME, load_manifest
from bodycam.daemon.evidence.schema import Manifest, SegmentEntry
from bodycam.daemon.evidence.segfile import HEADER_SIZE, RECORD_FRAME
from bodycam.daemon.evidence.verify import verify_clip
from bodycam.dock.agent import DockAgent, DockReport
from bodycam.dock.report import COMMITTED
from bodycam.dock.store import DockStore
from bodycam.drivers.serial_link import open_serial
from tests.rogue_camera import Force, ScriptedCamera, Unit, bay, make_force
from tests.unit.evidence_helpers import flip_byte

DEVICE = "BODYCAM-AGREE-0001"
SEG = ("seg-000000.bcs", "seg-000001.bcs", "seg-000002.bcs")


@dataclass(frozen=True)
class Card:
    """What a tampering may draw on besides its own clip."""

    donor: Path  # an untouched clip of the same camera
    other_key: Ed25519PrivateKey  # a key that is not the camera's


Tamper = Callable[[Path, Card], None]


def _manifest(clip: Path) -> Manifest:
    return load_manifest(clip)[1]


def _write_unsigned(clip: Path, manifest: Manifest) -> None:
    """Replace the manifest's bytes, leaving the old signature beside them."""
    (clip / MANIFEST_NAME).write_bytes(manifest.encode())


def _sign(clip: Path, manifest: Manifest, key: Ed25519PrivateKey) -> None:
    data = manifest.encode()
    (clip / MANIFEST_NAME).write_bytes(data)
    (clip / SIGNATURE_NAME).write_bytes(key.sign(data))


def _rechained(manifest: Manifest, segments: list[SegmentEntry]) -> Manifest:
    """``manifest`` over ``segments`` with every link, the head and the total recomputed."""
    links = chain_over(
        bytes.fromhex(manifest.clip_id), ((s.index, s.sha256, s.size) for s in segments)
    )
    fixed = [
        s.model_copy(update={"chain": link}) for s, link in zip(segments, links[1:], strict=True)
    ]
    return manifest.model_copy(
        update={
            "segments": fixed,
            "chain_head": links[-1],
            "total_bytes": sum(s.size for s in fixed),
        }
    )


def _as_key(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    public = key.public_key()
    return manifest.model_copy(
        update={
            "device_public_key": public_key_b64(public),
            "device_key_fingerprint": fingerprint(public),
        }
    )


# ----- the tamperings ------------------------------------------------------------------------


def untouched(clip: Path, card: Card) -> None:
    return None


def flip_segment_byte(clip: Path, card: Card) -> None:
    path = clip / SEG[1]
    flip_byte(path, path.stat().st_size // 2)


def flip_segment_header_byte(clip: Path, card: Card) -> None:
    flip_byte(clip / SEG[0], 5)


def truncate_segment(clip: Path, card: Card) -> None:
    path = clip / SEG[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def extend_segment(clip: Path, card: Card) -> None:
    with (clip / SEG[2]).open("ab") as stream:
        stream.write(b"\0")


def delete_middle_segment(clip: Path, card: Card) -> None:
    (clip / SEG[1]).unlink()


def swap_segments(clip: Path, card: Card) -> None:
    first, second = clip / SEG[0], clip / SEG[1]
    spare = clip / "swap.tmp"
    first.rename(spare)
    second.rename(first)
    spare.rename(second)


def segment_from_another_clip(clip: Path, card: Card) -> None:
    shutil.copyfile(card.donor / SEG[1], clip / SEG[1])


def extra_segment_file(clip: Path, card: Card) -> None:
    shutil.copyfile(clip / SEG[2], clip / "seg-000003.bcs")


def leftover_part_file(clip: Path, card: Card) -> None:
    shutil.copyfile(clip / SEG[2], clip / "seg-000003.bcs.part")


def extra_other_file(clip: Path, card: Card) -> None:
    (clip / "notes.txt").write_text("not part of the evidence\n")


def journal_plus_one_byte(clip: Path, card: Card) -> None:
    with (clip / JOURNAL_NAME).open("ab") as stream:
        stream.write(b"x")


def journal_emptied(clip: Path, card: Card) -> None:
    (clip / JOURNAL_NAME).write_bytes(b"")


def journal_deleted(clip: Path, card: Card) -> None:
    (clip / JOURNAL_NAME).unlink()


def manifest_field_edited(clip: Path, card: Card) -> None:
    _write_unsigned(clip, _manifest(clip).model_copy(update={"officer_id": "PC-0000"}))


def manifest_resigned_by_another_key(clip: Path, card: Card) -> None:
    edited = _manifest(clip).model_copy(update={"officer_id": "PC-0000"})
    _sign(clip, edited, card.other_key)


def manifest_forged_by_another_key(clip: Path, card: Card) -> None:
    # A complete forgery: the manifest names the other key, so it verifies unpinned.
    edited = _manifest(clip).model_copy(update={"officer_id": "PC-0000"})
    _sign(clip, _as_key(edited, card.other_key), card.other_key)


def manifest_deleted(clip: Path, card: Card) -> None:
    (clip / MANIFEST_NAME).unlink()


def manifest_garbage(clip: Path, card: Card) -> None:
    (clip / MANIFEST_NAME).write_bytes(b"{not json")


def signature_from_another_clip(clip: Path, card: Card) -> None:
    shutil.copyfile(card.donor / SIGNATURE_NAME, clip / SIGNATURE_NAME)


def signature_flipped(clip: Path, card: Card) -> None:
    flip_byte(clip / SIGNATURE_NAME, 10)


def signature_truncated(clip: Path, card: Card) -> None:
    path = clip / SIGNATURE_NAME
    path.write_bytes(path.read_bytes()[:-1])


def signature_deleted(clip: Path, card: Card) -> None:
    (clip / SIGNATURE_NAME).unlink()


def last_segment_dropped_chain_recomputed(clip: Path, card: Card) -> None:
    # Consistent in every hash, the old signature kept: only the signature can tell.
    manifest = _manifest(clip)
    (clip / SEG[2]).unlink()
    _write_unsigned(clip, _rechained(manifest, manifest.segments[:2]))


def segment_edited_chain_recomputed(clip: Path, card: Card) -> None:
    # A ciphertext byte of the first record changed and its frame's CRC-32 fixed: the
    # segment reads clean without the force key, and every hash in the manifest matches.
    path = clip / SEG[1]
    data = bytearray(path.read_bytes())
    length, _ = RECORD_FRAME.unpack_from(data, HEADER_SIZE)
    start = HEADER_SIZE + RECORD_FRAME.size
    data[start + 3] ^= 0x01
    RECORD_FRAME.pack_into(data, HEADER_SIZE, length, zlib.crc32(data[start : start + length]))
    path.write_bytes(bytes(data))
    manifest = _manifest(clip)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    segments = [
        s.model_copy(update={"sha256": sha}) if s.index == 1 else s for s in manifest.segments
    ]
    _write_unsigned(clip, _rechained(manifest, segments))


def segment_dropped_resigned_by_another_key(clip: Path, card: Card) -> None:
    manifest = _manifest(clip)
    (clip / SEG[2]).unlink()
    forged = _as_key(_rechained(manifest, manifest.segments[:2]), card.other_key)
    _sign(clip, forged, card.other_key)


TAMPERINGS: list[Tamper] = [
    untouched,
    flip_segment_byte,
    flip_segment_header_byte,
    truncate_segment,
    extend_segment,
    delete_middle_segment,
    swap_segments,
    segment_from_another_clip,
    extra_segment_file,
    leftover_part_file,
    extra_other_file,
    journal_plus_one_byte,
    journal_emptied,
    journal_deleted,
    manifest_field_edited,
    manifest_resigned_by_another_key,
    manifest_forged_by_another_key,
    manifest_deleted,
    manifest_garbage,
    signature_from_another_clip,
    signature_flipped,
    signature_truncated,
    signature_deleted,
    last_segment_dropped_chain_recomputed,
    segment_edited_chain_recomputed,
    segment_dropped_resigned_by_another_key,
    untouched,
]


# ----- the two judges ------------------------------------------------------------------------


def bodycam_verify(clip: Path, device_pub: Path) -> tuple[int, str]:
    """``bodycam verify CLIP --device-key PUB``, in process: exit code and output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = bodycam_main(["verify", str(clip), "--device-key", str(device_pub)])
    return code, out.getvalue().strip()


async def dock_once(force: Force, unit: Unit, store: DockStore) -> DockReport:
    """One docking of ``unit`` into a real agent, the camera on a pseudo-terminal."""
    agent = DockAgent(store, load_dock_identity(force.dock("dock")), retry_s=2.0)
    async with bay(ScriptedCamera(unit), "bay-1") as port:
        link = open_serial(port)
        try:
            return await agent.serve(link)
        finally:
            link.close()


@dataclass
class Clip:
    name: str  # the clip directory on the card
    tampering: str
    verify_code: int = -1
    verify_said: str = ""
    dock_status: str = "not listed"
    dock_said: str = ""


def make_card(tmp_path: Path) -> tuple[Force, Unit, list[Clip]]:
    force = make_force(tmp_path / "force")
    unit = force.camera(DEVICE, clips=0)
    dirs = [unit.record(seed=n, records=3, segments=3) for n in range(len(TAMPERINGS))]
    card = Card(donor=dirs[-1], other_key=Ed25519PrivateKey.generate())
    clips: list[Clip] = []
    for directory, tamper in zip(dirs, TAMPERINGS, strict=True):
        tamper(directory, card)
        clips.append(Clip(directory.name, tamper.__name__))
    return force, unit, clips


def test_the_recomputed_chain_variants_differ_only_in_their_signature(tmp_path: Path) -> None:
    # The strongest forgeries are as consistent as a forger can make them: what tells them
    # apart is the signature (or, pinned, the key) and nothing else.
    _, unit, clips = make_card(tmp_path)
    by_kind = {c.tampering: unit.clips_dir / c.name for c in clips}
    for kind in ("last_segment_dropped_chain_recomputed", "segment_edited_chain_recomputed"):
        verdict = verify_clip(by_kind[kind])
        assert verdict.problems == ["manifest: signature invalid (edited?)"], (kind, verdict)
    for kind in ("manifest_forged_by_another_key", "segment_dropped_resigned_by_another_key"):
        assert verify_clip(by_kind[kind]).ok, kind  # unpinned: a perfect forgery
        assert not verify_clip(by_kind[kind], device_key=unit.public_key).ok, kind


async def test_the_dock_commits_exactly_what_bodycam_verify_passes(tmp_path: Path) -> None:
    force, unit, clips = make_card(tmp_path)
    for clip in clips:
        clip.verify_code, clip.verify_said = bodycam_verify(
            unit.clips_dir / clip.name, unit.public_key_path
        )
    assert {c.verify_code for c in clips} == {0, 1}, [(c.tampering, c.verify_code) for c in clips]

    store = DockStore(tmp_path / "store", retention_days=31)
    store.register_device(DEVICE, unit.public_key_path)
    report = await dock_once(force, unit, store)
    assert report.authenticated, report.error
    by_name = {c.name: c for c in clips}
    for outcome in report.clips:
        assert outcome.name in by_name, outcome  # the dock saw no clip the card does not hold
        by_name[outcome.name].dock_status = outcome.status
        by_name[outcome.name].dock_said = "; ".join(outcome.problems)

    # Every breach at once, so that a failure names each clip and what each judge said.
    breaches = [
        f"{c.tampering} ({c.name}): bodycam verify exit {c.verify_code} [{c.verify_said}]; "
        f"dock {c.dock_status} [{c.dock_said}]"
        for c in clips
        if (c.dock_status == COMMITTED) != (c.verify_code == 0)
    ]
    ids = {o.name: o.clip_id for o in report.clips}
    for clip in clips:
        on_card = (unit.clips_dir / clip.name).exists()
        if clip.dock_status != COMMITTED:
            if not on_card:
                breaches.append(f"{clip.tampering}: not committed, yet gone from the camera")
            continue
        if on_card:
            breaches.append(f"{clip.tampering}: committed, yet still on the camera")
        stored = store.stored_clip_dir(DEVICE, ids[clip.name])
        if stored is None or bodycam_verify(stored, unit.public_key_path)[0] != 0:
            breaches.append(f"{clip.tampering}: committed, but the store holds no verified copy")
    assert not breaches, "\n".join(breaches)
