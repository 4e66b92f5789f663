"""The force policy: signed by the authority, parsed strictly, laid over the device config."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.daemon.config import Config
from bodycam.daemon.dock.policy import (
    MAX_POLICY_BYTES,
    POLICY_CONTEXT,
    POLICY_NAME,
    POLICY_SIG_NAME,
    Policy,
    PolicyError,
    PolicyVideo,
    SignedPolicy,
    check_signed_policy,
    load_signed_policy,
    parse_policy,
    policy_from_toml,
    save_signed_policy,
    sign_policy,
)
from bodycam.daemon.evidence.schema import canonical_json, format_utc

ISSUED = "2026-11-22T09:00:00.000000Z"
NOW = dt.datetime(2026, 11, 22, 10, 30, 15, 250_000, tzinfo=dt.UTC)


@pytest.fixture
def authority() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _full_policy() -> Policy:
    return Policy(
        serial=7,
        issued_utc=ISSUED,
        pre_event_s=45.0,
        reminder_interval_s=300.0,
        stealth_allowed=True,
        video=PolicyVideo(width=1920, height=1080, fps=25, bitrate=6_000_000, gop=50),
        assignments={"CAM-1": "PC-1001", "CAM-2": "PC-2002"},
    )


def _signed_raw(authority: Ed25519PrivateKey, document: dict[str, Any]) -> tuple[bytes, bytes]:
    """Sign arbitrary JSON as the authority would (even JSON that is not a valid policy)."""
    data = canonical_json(document)
    return data, authority.sign(POLICY_CONTEXT + data)


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_sign_and_check_round_trip(authority: Ed25519PrivateKey) -> None:
    policy = _full_policy()
    signed = sign_policy(authority, policy)
    assert signed.data == policy.encode()
    checked = check_signed_policy(
        signed.data, signed.signature, authority.public_key(), source="test"
    )
    assert checked == SignedPolicy(signed.data, signed.signature, policy)
    assert checked.policy.assignments == {"CAM-1": "PC-1001", "CAM-2": "PC-2002"}


def test_encoding_is_canonical_json_without_unset_fields() -> None:
    data = Policy(serial=3, issued_utc=ISSUED, stealth_allowed=False).encode()
    assert data == (
        b'{"assignments":{},"issued_utc":"2026-11-22T09:00:00.000000Z",'
        b'"serial":3,"stealth_allowed":false}'
    )
    assert parse_policy(data, source="t") == Policy(
        serial=3, issued_utc=ISSUED, stealth_allowed=False
    )


def test_policy_signed_by_another_key_is_rejected(authority: Ed25519PrivateKey) -> None:
    signed = sign_policy(Ed25519PrivateKey.generate(), _full_policy())
    with pytest.raises(PolicyError, match="signature invalid"):
        check_signed_policy(signed.data, signed.signature, authority.public_key(), source="t")


def test_signature_without_the_policy_context_is_rejected(authority: Ed25519PrivateKey) -> None:
    data = _full_policy().encode()
    with pytest.raises(PolicyError, match="signature invalid"):
        check_signed_policy(data, authority.sign(data), authority.public_key(), source="t")


def test_any_flipped_byte_is_rejected(authority: Ed25519PrivateKey) -> None:
    signed = sign_policy(authority, _full_policy())
    public = authority.public_key()
    for index in (0, len(signed.data) // 2, len(signed.data) - 1):
        with pytest.raises(PolicyError, match="signature invalid"):
            check_signed_policy(_flip(signed.data, index), signed.signature, public, source="t")
    for index in (0, 32, 63):
        with pytest.raises(PolicyError, match="signature invalid"):
            check_signed_policy(signed.data, _flip(signed.signature, index), public, source="t")
    for signature in (b"", signed.signature[:63], signed.signature + b"\x00"):
        with pytest.raises(PolicyError, match="signature invalid"):
            check_signed_policy(signed.data, signature, public, source="t")


def test_what_is_not_signed_is_never_parsed(authority: Ed25519PrivateKey) -> None:
    # Garbage with a wrong signature is refused for its signature, not for its content.
    with pytest.raises(PolicyError, match="signature invalid"):
        check_signed_policy(b"{not json", bytes(64), authority.public_key(), source="t")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"video": {"width": 640, "height": 480, "fps": 30, "bitrate": 1_000_000, "gop": 30,
                    "codec": "h265"}}, "video.codec"),
        ({"serial": 0}, "serial"),
        ({"serial": 2**32}, "serial"),
        ({"serial": "7"}, "serial"),
        ({"pre_event_s": 121}, "pre_event_s"),
        ({"pre_event_s": -1}, "pre_event_s"),
        ({"reminder_interval_s": 4}, "reminder_interval_s"),
        ({"stealth_allowed": 1}, "stealth_allowed"),
        ({"video": {"width": 641, "height": 480, "fps": 30, "bitrate": 1_000_000, "gop": 30}},
         "video.width"),
        ({"video": {"width": 640, "height": 480, "fps": 61, "bitrate": 1_000_000, "gop": 30}},
         "video.fps"),
        ({"assignments": {"bad id!": "PC-1"}}, "assignments"),
        ({"assignments": {"CAM-1": "x" * 65}}, "assignments.CAM-1"),
    ],
)  # fmt: skip
def test_invalid_signed_policy_is_rejected_naming_the_field(
    authority: Ed25519PrivateKey, change: dict[str, Any], field: str
) -> None:
    document: dict[str, Any] = {"serial": 7, "issued_utc": ISSUED}
    document.update(change)
    data, signature = _signed_raw(authority, document)
    with pytest.raises(PolicyError) as info:
        check_signed_policy(data, signature, authority.public_key(), source="pushed")
    message = str(info.value)
    assert message.startswith("pushed: policy: ")
    assert f": {field}" in message


def test_missing_required_field_is_named() -> None:
    with pytest.raises(PolicyError, match="issued_utc"):
        parse_policy(b'{"serial":1}', source="t")


def test_oversized_policy_is_refused_before_parsing() -> None:
    data = canonical_json({"serial": 1, "issued_utc": "x" * MAX_POLICY_BYTES})
    with pytest.raises(PolicyError, match="limit"):
        parse_policy(data, source="t")


def test_config_overrides_map_every_field_and_only_this_devices_assignment() -> None:
    policy = _full_policy()
    assert policy.config_overrides("CAM-1") == {
        "recording": {"pre_event_s": 45.0},
        "indicators": {"reminder_interval_s": 300.0},
        "policy": {"stealth_allowed": True},
        "video": {"width": 1920, "height": 1080, "fps": 25, "bitrate": 6_000_000, "gop": 50},
        "device": {"officer_id": "PC-1001"},
    }
    assert policy.config_overrides("CAM-2")["device"] == {"officer_id": "PC-2002"}
    assert "device" not in policy.config_overrides("CAM-3")


def test_config_overrides_leave_unset_fields_alone() -> None:
    assert Policy(serial=1, issued_utc=ISSUED).config_overrides("CAM-1") == {}
    partial = Policy(serial=1, issued_utc=ISSUED, stealth_allowed=False)
    assert partial.config_overrides("CAM-1") == {"policy": {"stealth_allowed": False}}


def test_config_overrides_apply_to_the_device_config() -> None:
    # Every key the policy sets must exist in the device config (a typo would be refused).
    config = Config().with_overrides(**_full_policy().config_overrides("CAM-2"))
    assert config.recording.pre_event_s == 45.0
    assert config.indicators.reminder_interval_s == 300.0
    assert config.policy.stealth_allowed is True
    assert (config.video.width, config.video.height, config.video.fps) == (1920, 1080, 25)
    assert (config.video.bitrate, config.video.gop) == (6_000_000, 50)
    assert config.device.officer_id == "PC-2002"
    # Sections the policy does not touch keep their values.
    assert config.recording.segment_s == Config().recording.segment_s


def test_save_and_load_round_trip(tmp_path: Path, authority: Ed25519PrivateKey) -> None:
    directory = tmp_path / "state"
    signed = sign_policy(authority, _full_policy())
    save_signed_policy(directory, signed)
    assert (directory / POLICY_NAME).read_bytes() == signed.data
    assert (directory / POLICY_SIG_NAME).read_bytes() == signed.signature
    assert load_signed_policy(directory, authority.public_key()) == signed
    assert load_signed_policy(directory, None) == signed  # unchecked, still parsed


def test_saving_a_newer_policy_replaces_the_old(
    tmp_path: Path, authority: Ed25519PrivateKey
) -> None:
    save_signed_policy(tmp_path, sign_policy(authority, Policy(serial=1, issued_utc=ISSUED)))
    newer = sign_policy(authority, Policy(serial=2, issued_utc=ISSUED, pre_event_s=10))
    save_signed_policy(tmp_path, newer)
    loaded = load_signed_policy(tmp_path, authority.public_key())
    assert loaded is not None
    assert loaded.policy.serial == 2


def test_load_without_a_policy_is_none(tmp_path: Path, authority: Ed25519PrivateKey) -> None:
    assert load_signed_policy(tmp_path / "nothing", authority.public_key()) is None
    # A policy whose signature file never arrived is not a policy either.
    (tmp_path / POLICY_NAME).write_bytes(_full_policy().encode())
    assert load_signed_policy(tmp_path, authority.public_key()) is None


def test_load_rejects_tampered_or_foreign_policies(
    tmp_path: Path, authority: Ed25519PrivateKey
) -> None:
    signed = sign_policy(authority, _full_policy())
    save_signed_policy(tmp_path, signed)
    with pytest.raises(PolicyError, match="signature invalid"):
        load_signed_policy(tmp_path, Ed25519PrivateKey.generate().public_key())
    (tmp_path / POLICY_NAME).write_bytes(signed.data.replace(b"PC-1001", b"PC-1002"))
    with pytest.raises(PolicyError, match="signature invalid"):
        load_signed_policy(tmp_path, authority.public_key())
    (tmp_path / POLICY_NAME).write_bytes(b"x" * (MAX_POLICY_BYTES + 1))
    with pytest.raises(PolicyError):
        load_signed_policy(tmp_path, authority.public_key())


def test_policy_from_toml_fills_issued_utc(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'serial = 4\npre_event_s = 20.5\n\n[assignments]\nCAM-1 = "PC-7"\n', encoding="utf-8"
    )
    policy = policy_from_toml(path, now=NOW)
    assert policy.issued_utc == format_utc(NOW) == "2026-11-22T10:30:15.250000Z"
    assert policy.serial == 4
    assert policy.pre_event_s == 20.5
    assert policy.assignments == {"CAM-1": "PC-7"}


def test_policy_from_toml_keeps_a_given_issued_utc(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(f'serial = 4\nissued_utc = "{ISSUED}"\n', encoding="utf-8")
    assert policy_from_toml(path, now=NOW).issued_utc == ISSUED


def test_policy_from_toml_without_now_uses_the_current_time(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("serial = 4\n", encoding="utf-8")
    before = dt.datetime.now(dt.UTC)
    issued = policy_from_toml(path).issued_utc
    after = dt.datetime.now(dt.UTC)
    assert format_utc(before) <= issued <= format_utc(after)


def test_policy_from_toml_errors_are_policy_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    with pytest.raises(PolicyError, match="cannot read"):
        policy_from_toml(path, now=NOW)
    path.write_text("serial = \n", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid TOML"):
        policy_from_toml(path, now=NOW)
    path.write_text("serial = 4\n[video]\nwidth = 100000\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"video\.width"):
        policy_from_toml(path, now=NOW)


def test_policy_from_toml_with_a_toml_datetime_is_handled(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    # A person writing TOML naturally writes a date as a TOML datetime, not as a string.
    path.write_text("serial = 4\nissued_utc = 2026-11-22T09:00:00Z\n", encoding="utf-8")
    # Accepted or refused with a PolicyError; never an exception the CLI does not expect.
    with contextlib.suppress(PolicyError):
        policy_from_toml(path, now=NOW)


def test_signed_toml_policy_survives_the_round_trip(
    tmp_path: Path, authority: Ed25519PrivateKey
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("serial = 9\nstealth_allowed = false\n", encoding="utf-8")
    signed = sign_policy(authority, policy_from_toml(path, now=NOW))
    assert json.loads(signed.data)["issued_utc"] == format_utc(NOW)
    checked = check_signed_policy(signed.data, signed.signature, authority.public_key(), source="t")
    assert checked.policy.serial == 9
    assert checked.policy.stealth_allowed is False
