"""What a clip starts with: the recorder's metadata, checked and turned into the ``open`` line."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import ValidationError

from bodycam.daemon.evidence.crypto import WrappedKey
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.keys import fingerprint, public_key_b64
from bodycam.daemon.evidence.schema import EncryptionInfo, OpenEvent, VideoInfo, format_utc
from bodycam.drivers.interfaces import VideoFormat

__all__ = ["ClipInfo", "clip_dir_name", "first_error", "open_event"]


@dataclass(frozen=True)
class ClipInfo:
    """What the recorder knows about a clip when it starts."""

    device_id: str
    officer_id: str
    firmware_version: str
    trigger: str  # "button", "trigger:holster", "rollover", ...
    pre_event_s: float  # configured pre-event length
    video: VideoFormat
    clock_set: bool
    clock_offset_s: float | None
    continues: str | None = None  # previous clip id when this clip is a rollover
    continues_chain_head: str | None = None


def clip_dir_name(started_utc: dt.datetime, clip_id: str) -> str:
    """``20261122T101500Z-1a2b3c4d``: sorts by start time, unique by the clip id prefix."""
    return f"{started_utc.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{clip_id[:8]}"


def first_error(exc: Exception) -> str:
    """The first problem of a validation error, as ``field: message``."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)


def open_event(
    info: ClipInfo,
    *,
    clip_id: str,
    started_utc: dt.datetime,
    device_key: Ed25519PublicKey,
    force_key: X25519PublicKey,
    wrapped: WrappedKey,
) -> OpenEvent:
    """The journal's ``open`` line for a new clip.

    Raises:
        EvidenceError: ``info`` or ``started_utc`` is invalid; the message names the field.
    """
    if (info.continues is None) != (info.continues_chain_head is None):
        raise EvidenceError(
            "cannot start a clip: continues and continues_chain_head go together "
            "(a rollover clip must be linked to its predecessor's chain head)"
        )
    try:
        video = info.video
        return OpenEvent(
            clip_id=clip_id,
            device_id=info.device_id,
            officer_id=info.officer_id,
            firmware_version=info.firmware_version,
            started_utc=format_utc(started_utc),
            clock_set=info.clock_set,
            clock_offset_s=info.clock_offset_s,
            pre_event_s=info.pre_event_s,
            trigger=info.trigger,
            video=VideoInfo(
                width=video.width,
                height=video.height,
                fps=video.fps,
                bitrate=video.bitrate,
                gop=video.gop,
            ),
            encryption=EncryptionInfo(
                ephemeral_public_key=base64.b64encode(wrapped.ephemeral_public_key).decode(),
                wrapped_key=base64.b64encode(wrapped.wrapped_key).decode(),
                force_key_fingerprint=fingerprint(force_key),
            ),
            continues=info.continues,
            continues_chain_head=info.continues_chain_head,
            device_public_key=public_key_b64(device_key),
        )
    except ValueError as exc:
        raise EvidenceError(f"cannot start a clip: {first_error(exc)}") from None
