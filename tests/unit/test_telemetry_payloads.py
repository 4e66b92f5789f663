"""Telemetry topics, ids, broker URLs and payloads: round trips and hostile input."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.daemon.config import ConfigError
from bodycam.daemon.status import DeviceStatus
from bodycam.daemon.telemetry import payloads as p
from bodycam.daemon.telemetry.broker import BrokerAddress, parse_broker_url
from bodycam.daemon.telemetry.settings import read_password_file
from bodycam.daemon.telemetry.topics import (
    ALL,
    CameraTopics,
    DockTopics,
    TopicInfo,
    parse_topic,
    validate_id,
)

T0 = 1_767_225_600.125  # 2026-01-01T00:00:00.125Z

# ----- broker URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.example", BrokerAddress("broker.example", 1883, tls=False)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("mqtt://10.0.0.5:1884", BrokerAddress("10.0.0.5", 1884, tls=False)),
        ("MQTTS://Broker.Example:9000/", BrokerAddress("broker.example", 9000, tls=True)),
        ("mqtt://[::1]:1883", BrokerAddress("::1", 1883, tls=False)),
    ],
)
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected
    assert parse_broker_url(expected.url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("broker:1883", "expected mqtt://"),
        ("http://broker", "expected mqtt://"),
        ("ws://broker", "expected mqtt://"),
        ("mqtt://", "host is missing"),
        ("mqtt://:1883", "host is missing"),
        ("mqtt://broker:0", "port"),
        ("mqtt://broker:65536", "port"),
        ("mqtt://broker:x", "port"),
        ("mqtt://broker/topic", "only scheme, host and port"),
        ("mqtt://broker?x=1", "only scheme, host and port"),
    ],
)
def test_bad_broker_urls_say_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_broker_url(url)


def test_credentials_in_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ValueError, match=r"telemetry\.username") as info:
        parse_broker_url("mqtts://cam:s3cret@broker")
    assert "s3cret" not in str(info.value)


# ----- topics and ids -------------------------------------------------------------------


def test_camera_topics() -> None:
    t = CameraTopics("CAM-0001")
    assert t.root == "bodycam/v1/camera/CAM-0001"
    assert t.state == "bodycam/v1/camera/CAM-0001/state"
    assert t.event == "bodycam/v1/camera/CAM-0001/event"
    assert t.online == "bodycam/v1/camera/CAM-0001/online"
    assert t.progress == "bodycam/v1/camera/CAM-0001/progress"
    assert ALL == "bodycam/v1/#"


def test_dock_topics() -> None:
    t = DockTopics("dock.station-7")
    assert t.state == "bodycam/v1/dock/dock.station-7/state"
    assert t.event == "bodycam/v1/dock/dock.station-7/event"
    assert t.bay(3) == "bodycam/v1/dock/dock.station-7/bay/3"
    with pytest.raises(ValueError, match="bay"):
        t.bay("3/#")


@pytest.mark.parametrize(
    "bad", ["", "a/b", "cam+1", "cam#", "#", "+", "x" * 65, "kamera-ü", "a b", "a\x00", "/"]
)
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in a topic"):
        validate_id(bad)
    with pytest.raises(ValueError):
        CameraTopics(bad)
    with pytest.raises(ValueError):
        DockTopics(bad)


def test_parse_topic_round_trip() -> None:
    cam, dock = CameraTopics("C1"), DockTopics("D1")
    assert parse_topic(cam.state) == TopicInfo("camera", "C1", "state")
    assert parse_topic(cam.event) == TopicInfo("camera", "C1", "event")
    assert parse_topic(cam.online) == TopicInfo("camera", "C1", "online")
    assert parse_topic(dock.progress) == TopicInfo("dock", "D1", "progress")
    assert parse_topic(dock.bay("2")) == TopicInfo("dock", "D1", "bay", "2")


@pytest.mark.parametrize(
    "topic",
    [
        "bodycam/v2/camera/C1/state",
        "other/v1/camera/C1/state",
        "bodycam/v1/phone/C1/state",
        "bodycam/v1/camera/C1",
        "bodycam/v1/camera/C1/secrets",
        "bodycam/v1/camera/C1/bay/1",
        "bodycam/v1/dock/D1/bay/1/extra",
        "bodycam/v1/camera/C+1/state",
        "bodycam/v1/camera//state",
    ],
)
def test_parse_topic_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(ValueError):
        parse_topic(topic)


# ----- payloads: round trips ------------------------------------------------------------


def test_state_round_trip_with_device_status() -> None:
    status = DeviceStatus(device_id="CAM-1", firmware="1.2.3", battery_percent=81.5)
    payload = p.encode_state(7, T0, p.body_json(dataclasses.asdict(status)))
    doc = json.loads(payload)
    assert doc["v"] == 1
    assert doc["seq"] == 7
    assert doc["t"] == "2026-01-01T00:00:00.125Z"
    decoded = p.decode_state(payload)
    assert decoded.seq == 7
    assert decoded.t == datetime(2026, 1, 1, 0, 0, 0, 125_000, tzinfo=UTC)
    assert decoded.state == json.loads(status.to_json())


def test_event_round_trip() -> None:
    payload = p.encode_event(3, T0, "clip_closed", {"clip_id": "c1", "n": 2}, critical=True)
    event = p.decode_event(payload)
    assert (event.seq, event.kind, event.critical) == (3, "clip_closed", True)
    assert event.data == {"clip_id": "c1", "n": 2}
    assert p.decode_event(p.encode_event(4, T0, "x", None, critical=False)).data == {}


def test_progress_and_online() -> None:
    progress = p.decode_progress(p.encode_progress(9, T0, p.body_json({"clip": "c", "pct": 50})))
    assert progress.progress == {"clip": "c", "pct": 50}
    assert p.decode_online(p.ONLINE) is True
    assert p.decode_online(p.OFFLINE) is False
    assert p.decode("online", b"1") is True
    assert isinstance(p.decode("bay", p.encode_state(1, T0, "{}")), p.StateMessage)


def test_body_json_is_canonical() -> None:
    assert p.body_json({"b": 1, "a": 2}) == p.body_json({"a": 2, "b": 1}) == '{"a":2,"b":1}'


class _Mode(enum.Enum):
    STEALTH = "stealth"


def test_awkward_values_become_valid_json() -> None:
    # What a daemon might hand in by mistake must not raise, and must stay strict JSON.
    state: dict[Any, Any] = {
        "nan": math.nan,
        "inf": -math.inf,
        "path": Path("/var/lib/bodycam"),
        "when": datetime(2026, 1, 1, tzinfo=UTC),
        "mode": _Mode.STEALTH,
        "tags": {"b", "a"},
        "raw": b"\x01\x02",
        "tuple": (1, 2),
        7: "int key",
        "obj": object(),
    }
    state["self"] = state  # a cycle
    text = p.body_json(state)
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["nan"] is None
    assert doc["inf"] is None
    assert doc["path"] == "/var/lib/bodycam"
    assert doc["mode"] == "stealth"
    assert doc["tags"] == ["a", "b"]
    assert doc["raw"] == "0102"
    assert doc["7"] == "int key"


def test_oversized_event_is_cut_to_a_marker() -> None:
    payload = p.encode_event(1, T0, "big", {"blob": "x" * 200_000}, critical=True)
    assert len(payload) <= p.MAX_PAYLOAD_BYTES
    event = p.decode_event(payload)
    assert event.data["truncated"] is True
    assert event.data["bytes"] > 200_000


def test_bad_event_kinds_are_repaired_for_the_wire() -> None:
    assert p.safe_kind("clip closed/#") == "clip_closed__"
    assert p.safe_kind("") == "unknown"
    assert len(p.safe_kind("k" * 100)) == 64
    event = p.decode_event(p.encode_event(1, T0, "a b", None, critical=True))
    assert event.kind == "a_b"


# ----- payloads: hostile input ----------------------------------------------------------

_GOOD = {"v": 1, "seq": 1, "t": "2026-01-01T00:00:00.000Z"}


def _doc(**fields: Any) -> bytes:
    doc = {**_GOOD, **fields}
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP}).encode()


_DROP: Any = object()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b"null", "JSON object"),
        (_doc(v=_DROP, state={}), "'v'"),
        (_doc(v=True, state={}), "'v'"),
        (_doc(v=2, state={}), "version 2 is not supported"),
        (_doc(seq=-1, state={}), "'seq'"),
        (_doc(seq="1", state={}), "'seq'"),
        (_doc(seq=True, state={}), "'seq'"),
        (_doc(seq=2**64, state={}), "'seq'"),
        (_doc(t=_DROP, state={}), "'t'"),
        (_doc(t=12, state={}), "'t'"),
        (_doc(t="yesterday", state={}), "ISO 8601"),
        (_doc(t="2026-01-01T00:00:00", state={}), "UTC offset"),
        (_doc(t="2026-01-01T00:00:00Z" + " " * 50, state={}), "'t'"),
        (_doc(state=[1]), "'state'"),
        (_doc(state=_DROP), "'state'"),
        (b"[" * 100_000 + b"]" * 100_000, "limit"),
        (b"[" * 60_000, "nests too deeply|not JSON"),
        (b'{"v": 1, "state": ' + b"1" * 70_000 + b"}", "limit"),
        (_doc(state={}).replace(b'"state": {}', b'"state": {"x": NaN}'), "NaN"),
        (_doc(state={}).replace(b'"state": {}', b'"state": {"x": -Infinity}'), "Infinity"),
    ],
)
def test_malformed_state_raises_payload_error(payload: bytes, says: str) -> None:
    with pytest.raises(p.PayloadError, match=says):
        p.decode_state(payload)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"kind": "a/b", "critical": True, "data": {}}, "'kind'"),
        ({"kind": "", "critical": True, "data": {}}, "'kind'"),
        ({"kind": 5, "critical": True, "data": {}}, "'kind'"),
        ({"kind": "k", "critical": 1, "data": {}}, "'critical'"),
        ({"kind": "k", "critical": True, "data": "x"}, "'data'"),
        ({"kind": "k", "critical": True}, "'data'"),
    ],
)
def test_malformed_event_raises_payload_error(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(p.PayloadError, match=says):
        p.decode_event(_doc(**fields))


@pytest.mark.parametrize("payload", [b"", b"2", b"true", b"01", b"1\n"])
def test_malformed_online(payload: bytes) -> None:
    with pytest.raises(p.PayloadError):
        p.decode_online(payload)


def test_payload_error_is_a_value_error() -> None:
    # Consumers that catch ValueError (as for parse_topic) also catch payload errors.
    assert issubclass(p.PayloadError, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_arbitrary_bytes_never_crash_a_decoder(payload: bytes) -> None:
    for channel in ("state", "event", "progress", "online", "bay"):
        with contextlib.suppress(p.PayloadError):
            p.decode(channel, payload)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(0, 2**62))
def test_any_json_state_round_trips(state: dict[str, Any], seq: int) -> None:
    decoded = p.decode_state(p.encode_state(seq, T0, p.body_json(state)))
    assert decoded.seq == seq
    assert decoded.state == json.loads(json.dumps(state))


def test_password_file_is_read_stripped_and_a_missing_one_names_the_option(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret\n")
    assert read_password_file(secret, what="telemetry.password_file") == "s3cret"
    assert read_password_file(None, what="telemetry.password_file") is None
    with pytest.raises(ConfigError, match=r"nope \(--password-file\): cannot read"):
        read_password_file(tmp_path / "nope", what="--password-file")
