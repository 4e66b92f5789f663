"""docs/protocol.md against the code: schema hash, schema text and every test vector, both ways.

The vectors are fixed text in the document. To write a new one, build it with
:func:`render_message_vector` / :func:`render_stream_vector` once and paste the output.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import fields, is_dataclass, replace
from enum import IntEnum, IntFlag
from pathlib import Path
from types import UnionType
from typing import Any

import pytest
from construct import Int32ul, Struct

from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.frame import (
    HEADER_SIZE,
    TRAILER_SIZE,
    Deframer,
    DeframerStats,
    Frame,
    frame_bytes,
)
from bodycam.drivers.link.messages import (
    MESSAGE_CLASSES,
    SCHEMA_HASH,
    ClipEntry,
    Hello,
    Message,
    MsgType,
    Role,
    decode_message,
    encode_message,
    schema_entries,
    schema_hash,
    schema_text,
)
from bodycam.drivers.link.spec import Str

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BY_TYPE = {cls.TYPE: cls for cls in MESSAGE_CLASSES}


# --- reading the document --------------------------------------------------------------------


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def fenced(kind: str) -> list[str]:
    """Bodies of the ```kind blocks of the document, in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", doc_text(), flags=re.MULTILINE | re.DOTALL)


def parse_block(body: str) -> dict[str, str]:
    """``key: value`` lines; indented lines continue the previous value."""
    block: dict[str, str] = {}
    key = ""
    for line in body.splitlines():
        if line[:1].isspace():
            block[key] += "\n" + line.strip()
        elif line.strip():
            key, _, value = line.partition(":")
            assert key not in block, f"{key} twice in a vector"
            block[key] = value.strip()
    return block


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


VECTORS = [parse_block(body) for body in fenced("vector")]
MESSAGE_VECTORS = [v for v in VECTORS if "fields" in v]
PAYLOAD_VECTORS = [v for v in VECTORS if "error" in v]
STREAM_VECTORS = [v for v in VECTORS if "stream" in v]
FRAMES_BY_NAME = {v["name"]: v for v in VECTORS if "frame" in v}


def vector_id(vector: dict[str, str]) -> str:
    return vector["name"]


# --- message fields <-> JSON -----------------------------------------------------------------


def hints(cls: type[Any]) -> dict[str, Any]:
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in fields(cls)}


def to_json(value: Any, hint: Any) -> Any:
    """A field value as the vectors write it: bytes as hex, enums by name, records as objects."""
    if is_dataclass(value):
        return {name: to_json(getattr(value, name), h) for name, h in hints(type(value)).items()}
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, IntFlag):
        members = [m for m in type(value) if m in value]
        assert sum(int(m) for m in members) == value, "unknown bits in a vector"
        return [m.name for m in members]
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, tuple):
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return [to_json(v, item) for v in value]
    return value


def from_json(value: Any, hint: Any) -> Any:
    """Inverse of :func:`to_json` given the field's type hint."""
    if isinstance(hint, UnionType):  # bytes | memoryview
        return bytes.fromhex(value)
    if typing.get_origin(hint) is tuple:
        return tuple(from_json(v, typing.get_args(hint)[0]) for v in value)
    if hint is bytes:
        return bytes.fromhex(value)
    if isinstance(hint, type) and issubclass(hint, IntFlag):
        return hint(sum(hint[n] for n in value))
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        return hint[value]
    if isinstance(hint, type) and is_dataclass(hint):
        return hint(**{n: from_json(value[n], h) for n, h in hints(hint).items()})
    assert isinstance(value, hint), (value, hint)
    return value


def message_from_json(type_name: str, data: dict[str, Any]) -> Message:
    cls = BY_TYPE[MsgType[type_name]]
    assert set(data) == set(hints(cls)), f"{type_name}: fields {sorted(data)}"
    return cls(**{name: from_json(data[name], h) for name, h in hints(cls).items()})


def message_to_json(msg: Message) -> dict[str, Any]:
    return {name: to_json(getattr(msg, name), h) for name, h in hints(type(msg)).items()}


# --- writing vectors (used once to produce the document's text) ------------------------------


def hex_lines(data: bytes, indent: str = "  ") -> list[str]:
    out = []
    for row in range(0, len(data), 32):
        part = data[row : row + 32]
        out.append(indent + " ".join(part[i : i + 4].hex() for i in range(0, len(part), 4)))
    return out


def frame_hex(wire: bytes) -> list[str]:
    """Header, payload and trailer on lines of their own."""
    return [
        *hex_lines(wire[:HEADER_SIZE]),
        *hex_lines(wire[HEADER_SIZE:-TRAILER_SIZE]),
        *hex_lines(wire[-TRAILER_SIZE:]),
    ]


def render_message_vector(name: str, msg: Message, *, seq: int, ack: int, flags: int = 0) -> str:
    """A ```vector block for ``msg`` sent in a frame with these header fields."""
    wire = frame_bytes(msg.TYPE, encode_message(msg), seq=seq, ack=ack, flags=flags)
    body = json.dumps(message_to_json(msg), indent=2).splitlines()
    lines = [f"name: {name}", f"type: {msg.TYPE.name}", f"seq: {seq}", f"ack: {ack}"]
    lines += [f"flags: {flags}", f"fields: {body[0]}", *("  " + b for b in body[1:])]
    return "\n".join(["```vector", *lines, "frame:", *frame_hex(wire), "```"])


def render_payload_vector(
    name: str, msg_type: int, payload: bytes, *, seq: int, ack: int, flags: int = 0
) -> str:
    """A ```vector block for an intact frame whose payload must not decode."""
    wire = frame_bytes(msg_type, payload, seq=seq, ack=ack, flags=flags)
    try:
        decode_message(msg_type, payload)
    except ProtocolError as err:
        error = err.code.name
    else:
        raise AssertionError("payload vector decodes")
    lines = [f"name: {name}", f"type: {msg_type:#06x}", f"seq: {seq}", f"ack: {ack}"]
    lines += [f"flags: {flags}", f"payload: {payload.hex()}", f"error: {error}"]
    return "\n".join(["```vector", *lines, "frame:", *frame_hex(wire), "```"])


def render_stream_vector(name: str, stream: bytes, yields: list[str]) -> str:
    """A ```vector block for a byte stream and what a fresh deframer makes of it."""
    deframer = Deframer()
    deframer.feed(stream)
    stats = json.dumps(stats_dict(deframer.stats))
    lines = [f"name: {name}", "stream:", *hex_lines(stream)]
    lines += [f"yields: {', '.join(yields) or '-'}", f"stats: {stats}"]
    return "\n".join(["```vector", *lines, f"buffered: {deframer.buffered}", "```"])


def stats_dict(stats: DeframerStats) -> dict[str, int]:
    # ``abandoned`` counts a receiver's timeouts, never what a byte stream alone yields.
    return {f.name: getattr(stats, f.name) for f in fields(stats) if f.name != "abandoned"}


def frame_of(vector: dict[str, str]) -> Frame:
    return Frame(
        int(vector["type"], 0) if vector["type"][:1].isdigit() else MsgType[vector["type"]],
        int(vector["flags"]),
        int(vector["seq"]),
        int(vector["ack"]),
        b"",
    )


# --- the checks ------------------------------------------------------------------------------


def test_the_document_has_vectors_of_every_kind() -> None:
    assert MESSAGE_VECTORS
    assert PAYLOAD_VECTORS
    assert STREAM_VECTORS
    assert len({v["name"] for v in VECTORS}) == len(VECTORS), "vector names must be unique"
    assert all(v in MESSAGE_VECTORS + PAYLOAD_VECTORS + STREAM_VECTORS for v in VECTORS)


def test_every_message_type_has_a_vector() -> None:
    covered = {MsgType[v["type"]] for v in MESSAGE_VECTORS}
    assert covered == set(MsgType), f"no vector for {set(MsgType) - covered}"
    roles = {json.loads(v["fields"])["role"] for v in MESSAGE_VECTORS if v["type"] == "HELLO"}
    assert roles == {r.name for r in Role}
    assert any(v.get("error") == "UNKNOWN_MESSAGE" for v in PAYLOAD_VECTORS)
    assert any(v.get("error") == "MALFORMED" for v in PAYLOAD_VECTORS)


@pytest.mark.parametrize("vector", MESSAGE_VECTORS, ids=vector_id)
def test_message_vector_decodes_to_its_fields(vector: dict[str, str]) -> None:
    deframer = Deframer()
    (frame,) = deframer.feed(unhex(vector["frame"]))
    assert deframer.buffered == 0
    assert replace(frame, payload=b"") == frame_of(vector)
    msg = decode_message(frame.type, frame.payload)
    assert message_to_json(msg) == json.loads(vector["fields"])
    if isinstance(msg, Hello):
        assert msg.schema_hash == SCHEMA_HASH, "HELLO vectors carry the current schema hash"


@pytest.mark.parametrize("vector", MESSAGE_VECTORS, ids=vector_id)
def test_message_vector_fields_encode_to_its_frame(vector: dict[str, str]) -> None:
    msg = message_from_json(vector["type"], json.loads(vector["fields"]))
    wire = frame_bytes(
        msg.TYPE,
        encode_message(msg),
        seq=int(vector["seq"]),
        ack=int(vector["ack"]),
        flags=int(vector["flags"]),
    )
    assert wire.hex() == unhex(vector["frame"]).hex()


@pytest.mark.parametrize("vector", PAYLOAD_VECTORS, ids=vector_id)
def test_payload_vector_is_an_intact_frame_that_does_not_decode(vector: dict[str, str]) -> None:
    payload = unhex(vector["payload"])
    expected = frame_of(vector)
    (frame,) = Deframer().feed(unhex(vector["frame"]))
    assert frame == replace(expected, payload=payload)
    with pytest.raises(ProtocolError) as caught:
        decode_message(frame.type, frame.payload)
    assert caught.value.code is ErrorCode[vector["error"]]
    wire = frame_bytes(
        expected.type, payload, seq=expected.seq, ack=expected.ack, flags=expected.flags
    )
    assert wire == unhex(vector["frame"])


@pytest.mark.parametrize("vector", STREAM_VECTORS, ids=vector_id)
def test_stream_vector_yields_what_it_says(vector: dict[str, str]) -> None:
    deframer = Deframer()
    frames = deframer.feed(unhex(vector["stream"]))
    names = [n.strip() for n in vector["yields"].split(",") if n.strip() not in ("", "-")]
    expected = [Deframer().feed(unhex(FRAMES_BY_NAME[n]["frame"]))[0] for n in names]
    assert frames == expected
    assert stats_dict(deframer.stats) == json.loads(vector["stats"])
    assert deframer.buffered == int(vector["buffered"])


def test_documented_schema_hash_is_the_computed_one() -> None:
    found = re.findall(r"^Schema hash: `([0-9a-f]{16})`", doc_text(), flags=re.MULTILINE)
    assert found == [SCHEMA_HASH.hex()], (
        "the message declarations changed: update the schema hash, the schema text and the "
        "vectors in docs/protocol.md (and think about PROTOCOL_VERSION)"
    )


def test_documented_schema_text_is_the_computed_one() -> None:
    assert fenced("schema") == [schema_text()]


def test_schema_text_is_deterministic_and_covers_every_declaration() -> None:
    text = schema_text()
    assert text == schema_text()
    for cls in MESSAGE_CLASSES:
        assert f"message {cls.TYPE:#06x} {cls.TYPE.name}:" in text
    assert "record ClipEntry:" in text
    assert "record DockCertificate:" in text
    assert "frame header:" in text


def altered(label: str, spec: Any) -> list[tuple[str, Any]]:
    """The schema entries with the declaration called ``label`` replaced by ``spec``."""
    entries = schema_entries()
    assert label in dict(entries)
    return [(name, spec if name == label else old) for name, old in entries]


@pytest.mark.parametrize(
    "change",
    ["wider", "renamed", "bound", "reordered", "dropped", "added"],
)
def test_any_change_to_a_declaration_changes_the_hash(change: str) -> None:
    subcons = list(Hello.SPEC.subcons)
    window = subcons.index(Hello.SPEC.window)
    node_id = subcons.index(Hello.SPEC.node_id)
    if change == "wider":
        subcons[window] = "window" / Int32ul
    elif change == "renamed":
        subcons[window] = "window_size" / Hello.SPEC.window.subcon
    elif change == "bound":
        subcons[node_id] = "node_id" / Str(63)
    elif change == "reordered":
        subcons[window], subcons[window - 1] = subcons[window - 1], subcons[window]
    elif change == "dropped":
        del subcons[window]
    else:
        subcons.append("extra" / Int32ul)
    entries = altered("message 0x0001 HELLO", Struct(*subcons))
    assert schema_hash(entries) != SCHEMA_HASH
    assert schema_hash(altered("message 0x0001 HELLO", Hello.SPEC)) == SCHEMA_HASH


def test_a_change_inside_a_record_changes_the_hash() -> None:
    subcons = ["name" / Str(32) if sc.name == "name" else sc for sc in ClipEntry.SPEC.subcons]
    assert schema_hash(altered("record ClipEntry", Struct(*subcons))) != SCHEMA_HASH
