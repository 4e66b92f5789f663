"""The evidence store: encrypted, hash-chained, signed clips that survive power loss.

``docs/evidence-format.md`` is the specification of everything written here. The camera
side uses :class:`ClipWriter` and :func:`recover_clips`; anyone may run :func:`verify_clip`;
only the holder of the force private key can :func:`export_clip`.
"""

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.export import ExportResult, decrypt_segment, export_clip
from bodycam.daemon.evidence.keys import (
    fingerprint,
    generate_device_key,
    generate_force_keypair,
    load_device_key,
    load_device_public_key,
    load_force_private_key,
    load_force_public_key,
)
from bodycam.daemon.evidence.recovery import RecoveryReport, recover_clips
from bodycam.daemon.evidence.schema import SealedSegment
from bodycam.daemon.evidence.store import ClipSummary, list_clips, read_manifest
from bodycam.daemon.evidence.verify import ClipVerdict, verify_clip, verify_path
from bodycam.daemon.evidence.writer import ClipInfo, ClipWriter

__all__ = [
    "ClipInfo",
    "ClipSummary",
    "ClipVerdict",
    "ClipWriter",
    "EvidenceError",
    "ExportResult",
    "RecoveryReport",
    "SealedSegment",
    "decrypt_segment",
    "export_clip",
    "fingerprint",
    "generate_device_key",
    "generate_force_keypair",
    "list_clips",
    "load_device_key",
    "load_device_public_key",
    "load_force_private_key",
    "load_force_public_key",
    "read_manifest",
    "recover_clips",
    "verify_clip",
    "verify_path",
]
