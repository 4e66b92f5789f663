"""The force's policy for its cameras, signed by the force authority and pushed by docks.

A policy is canonical JSON (sorted keys, no whitespace) plus a raw 64-byte Ed25519 signature
by the authority over ``POLICY_CONTEXT + policy bytes``. A dock only carries it: it cannot
change a setting, because the camera checks the authority's signature itself. ``serial``
only goes up, so an old policy replayed by a stale dock is refused.

What it sets: who wears the camera (``assignments``, device id -> officer id), the pre-event
length, the reminder-beep interval, whether stealth is allowed, and the video settings.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bodycam.daemon.dock.auth import verify
from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import read_bounded, write_file_durably
from bodycam.daemon.evidence.schema import canonical_json, format_utc

POLICY_CONTEXT: Final = b"bodycam/v1/policy\x00"
MAX_POLICY_BYTES: Final = 8192
POLICY_NAME: Final = "policy.json"
POLICY_SIG_NAME: Final = "policy.sig"

DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class PolicyError(Exception):
    """A policy that cannot be used: unsigned, mis-signed, malformed or older."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PolicyVideo(_Strict):
    width: Annotated[int, Field(ge=64, le=1920, multiple_of=2)]
    height: Annotated[int, Field(ge=64, le=1080, multiple_of=2)]
    fps: Annotated[int, Field(ge=1, le=60)]
    bitrate: Annotated[int, Field(ge=100_000, le=50_000_000)]
    gop: Annotated[int, Field(ge=1, le=300)]


class Policy(_Strict):
    """What the force decides for every camera (the same bounds as the device config)."""

    serial: Annotated[int, Field(ge=1, le=0xFFFF_FFFF)]
    issued_utc: str
    pre_event_s: Annotated[float, Field(ge=0, le=120)] | None = None
    reminder_interval_s: Annotated[float, Field(ge=5, le=3600)] | None = None
    stealth_allowed: bool | None = None
    video: PolicyVideo | None = None
    assignments: dict[DeviceId, Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=dict, max_length=100_000
    )

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude_none=True))

    def config_overrides(self, device_id: str) -> dict[str, dict[str, Any]]:
        """The device config sections this policy replaces, for camera ``device_id``."""
        out: dict[str, dict[str, Any]] = {}
        if self.pre_event_s is not None:
            out.setdefault("recording", {})["pre_event_s"] = self.pre_event_s
        if self.reminder_interval_s is not None:
            out.setdefault("indicators", {})["reminder_interval_s"] = self.reminder_interval_s
        if self.stealth_allowed is not None:
            out.setdefault("policy", {})["stealth_allowed"] = self.stealth_allowed
        if self.video is not None:
            out["video"] = self.video.model_dump()
        if device_id in self.assignments:
            out.setdefault("device", {})["officer_id"] = self.assignments[device_id]
        return out


@dataclass(frozen=True)
class SignedPolicy:
    """The exact bytes that were signed, the signature, and what they say."""

    data: bytes
    signature: bytes
    policy: Policy


def parse_policy(data: bytes, *, source: str) -> Policy:
    """Strictly parse policy bytes (JSON); PolicyError names the first bad field."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: policy is {len(data)} bytes, limit {MAX_POLICY_BYTES}")
    try:
        return Policy.model_validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PolicyError(f"{source}: policy: {where}: {first['msg']}") from None


def check_signed_policy(
    data: bytes, signature: bytes, authority: Ed25519PublicKey, *, source: str
) -> SignedPolicy:
    """Verify the authority's signature, then parse (never parse what is not signed)."""
    if len(signature) != 64 or not verify(authority, signature, POLICY_CONTEXT, data):
        raise PolicyError(f"{source}: policy signature invalid (not from the force authority)")
    return SignedPolicy(data, signature, parse_policy(data, source=source))


def sign_policy(authority: Ed25519PrivateKey, policy: Policy) -> SignedPolicy:
    data = policy.encode()
    return SignedPolicy(data, authority.sign(POLICY_CONTEXT + data), policy)


def policy_from_toml(path: Path, *, now: dt.datetime | None = None) -> Policy:
    """A policy written by a person as TOML (``issued_utc`` is filled in when absent)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    issued = raw.setdefault("issued_utc", format_utc(now or dt.datetime.now(dt.UTC)))
    if isinstance(issued, dt.datetime):  # written as a TOML date-time rather than a string
        try:
            raw["issued_utc"] = format_utc(issued)
        except ValueError:
            raise PolicyError(f"{path}: issued_utc: give a time zone (e.g. Z)") from None
    try:
        data = canonical_json(raw)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{path}: not representable as a policy: {exc}") from None
    return parse_policy(data, source=str(path))


def save_signed_policy(directory: Path, signed: SignedPolicy) -> None:
    """Write ``policy.sig`` then ``policy.json`` durably (the JSON's arrival commits it)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_file_durably(directory / POLICY_SIG_NAME, signed.signature, overwrite=True)
    write_file_durably(directory / POLICY_NAME, signed.data, overwrite=True)


def load_signed_policy(directory: Path, authority: Ed25519PublicKey | None) -> SignedPolicy | None:
    """The policy stored in ``directory`` (None if there is none), checked when a key is given.

    Raises:
        PolicyError: A stored policy that does not verify or parse.
    """
    path = directory / POLICY_NAME
    try:
        data = read_bounded(path, MAX_POLICY_BYTES, what="policy")
        signature = read_bounded(directory / POLICY_SIG_NAME, 64, what="policy signature")
    except FileNotFoundError:
        return None
    except EvidenceError as exc:
        raise PolicyError(str(exc)) from None
    if authority is None:
        return SignedPolicy(data, signature, parse_policy(data, source=str(path)))
    return check_signed_policy(data, signature, authority, source=str(path))
