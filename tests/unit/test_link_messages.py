"""Messages: every type round-trips through a frame, and no payload raises anything else."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest
from construct import ConstructError, VarInt
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.drivers.link.errors import ErrorCode, ProtocolError
from bodycam.drivers.link.frame import CHUNK_SIZE, MAX_PAYLOAD, Deframer, frame_bytes
from bodycam.drivers.link.messages import (
    CAMERA_TO_DOCK,
    CERT_CONTEXT,
    DATA_HEADER_SIZE,
    DOCK_TO_CAMERA,
    FW_RESERVED,
    MAX_LIST_ENTRIES,
    MAX_POLICY_SIZE,
    MESSAGE_CLASSES,
    Ack,
    AuthDevice,
    AuthDock,
    Bye,
    ByeAck,
    ByeReason,
    Capability,
    ClipEntry,
    Commit,
    CommitAck,
    CommitStatus,
    ConfigAck,
    ConfigPush,
    Data,
    DockCertificate,
    ErrorReply,
    FileKind,
    Hello,
    ListClips,
    ListReply,
    Message,
    MsgType,
    Read,
    Role,
    Status,
    StatusReq,
    TimeAck,
    TimeSet,
    decode_data,
    decode_message,
    encode_data_header,
    encode_message,
)
from bodycam.drivers.link.spec import describe

FAST = settings(max_examples=200, deadline=None)
U8, U16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF)
U32, U64 = st.integers(0, 0xFFFF_FFFF), st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)


def raw(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


def text(n: int) -> st.SearchStrategy[str]:
    """Str(n) values, including ones of exactly ``n`` bytes in 1-, 2- and 4-byte characters."""
    cut = st.text(max_size=n).map(lambda s: s.encode()[:n].decode("utf-8", "ignore"))
    return cut | st.sampled_from(["", "a" * n, "é" * (n // 2), "😀" * (n // 4)])


def chunk(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300) | st.just(bytes(range(256)) * (n // 256))


clip_entries = st.builds(
    ClipEntry,
    clip_id=raw(16),
    name=text(64),
    started_utc_us=I64,
    segments=U32,
    total_bytes=U64,
    manifest_size=U32,
    manifest_sha256=raw(32),
    signature_size=U16,
    journal_size=U32,
    chain_head=raw(32),
)
certificates = st.builds(
    DockCertificate,
    dock_id=text(64),
    public_key=raw(32),
    not_before_s=I64,
    not_after_s=I64,
    issuer=raw(8),
    signature=raw(64),
)
flags = st.booleans()

STRATEGIES: dict[type[Message], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        protocol_version=U16,
        schema_hash=raw(8),
        role=st.sampled_from(Role),
        node_id=text(64),
        firmware=text(64),
        capabilities=U32.map(Capability),
        max_payload=U32,
        window=U16,
        nonce=raw(32),
    ),
    Ack: st.just(Ack()),
    ErrorReply: st.builds(
        ErrorReply, code=st.sampled_from(ErrorCode), ref_type=U16, detail=text(200)
    ),
    Bye: st.builds(Bye, reason=st.sampled_from(ByeReason)),
    ByeAck: st.just(ByeAck()),
    AuthDock: st.builds(AuthDock, certificate=certificates, signature=raw(64)),
    AuthDevice: st.builds(AuthDevice, device_id=text(64), public_key=raw(32), signature=raw(64)),
    TimeSet: st.builds(TimeSet, utc_us=I64, signature=raw(64)),
    TimeAck: st.builds(TimeAck, previous_utc_us=I64, offset_us=I64, was_set=flags),
    ConfigPush: st.builds(ConfigPush, policy=chunk(MAX_POLICY_SIZE), signature=raw(64)),
    ConfigAck: st.builds(ConfigAck, serial=U32, applied=flags),
    ListClips: st.builds(ListClips, cursor=U32, max_entries=U16),
    ListReply: st.builds(
        ListReply,
        total=U32,
        next_cursor=U32,
        entries=(
            st.lists(clip_entries, max_size=4) | clip_entries.map(lambda e: [e] * MAX_LIST_ENTRIES)
        ).map(tuple),
    ),
    Read: st.builds(
        Read,
        clip_id=raw(16),
        kind=st.sampled_from(FileKind),
        index=U32,
        offset=U64,
        length=st.integers(0, CHUNK_SIZE),
    ),
    Data: st.builds(
        Data,
        clip_id=raw(16),
        kind=st.sampled_from(FileKind),
        index=U32,
        offset=U64,
        file_size=U64,
        data=chunk(CHUNK_SIZE),
    ),
    Commit: st.builds(Commit, clip_id=raw(16), chain_head=raw(32), signature=raw(64)),
    CommitAck: st.builds(CommitAck, clip_id=raw(16), status=st.sampled_from(CommitStatus)),
    StatusReq: st.just(StatusReq()),
    Status: st.builds(
        Status,
        state=text(32),
        battery_percent=st.integers(0, 100) | st.just(255),
        charging=flags,
        storage_total=U64,
        storage_free=U64,
        clips=U32,
        clock_set=flags,
        firmware=text(64),
    ),
}
KNOWN_TYPES = [int(t) for t in MsgType]


def test_every_message_type_has_a_class_and_a_strategy() -> None:
    assert sorted(cls.TYPE for cls in MESSAGE_CLASSES) == sorted(MsgType)
    assert set(STRATEGIES) == set(MESSAGE_CLASSES)
    for cls in MESSAGE_CLASSES:
        names = [sc.name for sc in cls.SPEC.subcons]
        assert names == [f.name for f in fields(cls)], cls


def test_directions_cover_every_type() -> None:
    assert set(MsgType) == DOCK_TO_CAMERA | CAMERA_TO_DOCK
    assert {MsgType.HELLO, MsgType.ACK} == DOCK_TO_CAMERA & CAMERA_TO_DOCK


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.TYPE.name)
@FAST
@given(data=st.data(), seq=U32, ack=U32)
def test_every_message_round_trips_through_a_frame(
    cls: type[Message], data: st.DataObject, seq: int, ack: int
) -> None:
    msg = data.draw(STRATEGIES[cls])
    payload = encode_message(msg)
    assert len(payload) <= MAX_PAYLOAD
    deframer = Deframer()
    (frame,) = deframer.feed(frame_bytes(msg.TYPE, payload, seq=seq, ack=ack))
    assert (frame.type, frame.seq, frame.ack) == (msg.TYPE, seq, ack)
    assert decode_message(frame.type, frame.payload) == msg
    assert decode_message(frame.type, memoryview(frame.payload)) == msg


def try_decode(msg_type: int, payload: bytes) -> Message | ProtocolError:
    """The decoded message or the ProtocolError; any other exception fails the test."""
    try:
        return decode_message(msg_type, payload)
    except ProtocolError as err:
        return err


def mutations(payload: bytes) -> st.SearchStrategy[bytes]:
    """Payloads near a valid one: cut, extended, overwritten or with bytes dropped."""
    n = len(payload)
    return st.one_of(
        st.integers(0, n).map(lambda i: payload[:i]),
        st.binary(min_size=1, max_size=8).map(lambda b: payload + b),
        st.tuples(st.integers(0, max(n - 1, 0)), U8).map(
            lambda p: payload[: p[0]] + bytes([p[1]]) + payload[p[0] + 1 :]
        ),
        st.tuples(st.integers(0, n), st.integers(1, 4)).map(
            lambda p: payload[: p[0]] + payload[p[0] + p[1] :]
        ),
    )


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.TYPE.name)
@FAST
@given(data=st.data())
def test_damaged_payloads_raise_only_protocol_errors(
    cls: type[Message], data: st.DataObject
) -> None:
    msg = data.draw(STRATEGIES[cls])
    payload = data.draw(mutations(encode_message(msg)))
    outcome = try_decode(msg.TYPE, payload)
    if isinstance(outcome, ProtocolError):
        assert outcome.code is ErrorCode.MALFORMED
        assert str(outcome).startswith(f"MALFORMED: {msg.TYPE.name}")
    else:
        # Anything that parses has exactly one encoding: re-encoding gives the same bytes.
        assert encode_message(outcome) == payload


@pytest.mark.parametrize("msg_type", [*KNOWN_TYPES, 0, 0x0F00, 0xFFFF], ids=hex)
@FAST
@given(payload=st.binary(max_size=600))
def test_arbitrary_payloads_raise_only_protocol_errors(msg_type: int, payload: bytes) -> None:
    outcome = try_decode(msg_type, payload)
    if isinstance(outcome, ProtocolError):
        known = msg_type in KNOWN_TYPES
        assert outcome.code is (ErrorCode.MALFORMED if known else ErrorCode.UNKNOWN_MESSAGE)
    else:
        assert encode_message(outcome) == payload


@pytest.mark.parametrize("msg_type", [0, 0x0006, 0x000F, 0x0062, 0x1000, 0xFFFF, *FW_RESERVED])
def test_unknown_and_reserved_types_are_unknown_messages(msg_type: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message(msg_type, b"")
    assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE
    assert f"{msg_type:#06x}" in caught.value.detail
    assert ("firmware" in caught.value.detail) == (msg_type in FW_RESERVED)


HELLO = Hello(1, bytes(8), Role.DOCK, "dock", "fw", Capability.RESUME, 65792, 16, bytes(32))
ENTRY = ClipEntry(bytes(16), "clip", 0, 1, 2, 3, bytes(32), 64, 5, bytes(32))
STATUS = Status("idle", 50, False, 10, 5, 1, True, "fw")


def corrupt(msg: Message, offset: int, value: bytes) -> bytes:
    payload = bytearray(encode_message(msg))
    payload[offset : offset + len(value)] = value
    return bytes(payload)


@pytest.mark.parametrize(
    ("msg_type", "payload", "detail"),
    [
        (MsgType.HELLO, encode_message(HELLO) + b"\x00", "HELLO: 1 trailing bytes"),
        (MsgType.HELLO, encode_message(HELLO)[:-1], "HELLO.nonce: stream read less"),
        (MsgType.HELLO, b"", "HELLO.protocol_version"),
        (MsgType.HELLO, corrupt(HELLO, 10, b"\x03"), "HELLO.role: 3 is not a Role"),
        (MsgType.HELLO, corrupt(HELLO, 11, b"\x41"), "HELLO.node_id: 65 violates <= 64"),
        (MsgType.HELLO, corrupt(HELLO, 12, b"\xff"), "HELLO.node_id: bad UTF-8 at byte 0"),
        (MsgType.HELLO, corrupt(HELLO, 12, b"\xed\xa0\x80\x00"), "HELLO.node_id: bad UTF-8"),
        (MsgType.BYE, b"\x04", "BYE.reason: 4 is not a ByeReason"),
        (MsgType.ACK, b"\x00", "ACK: 1 trailing bytes"),
        (MsgType.ERROR, b"\x00\x00\x00\x00\x00", "ERROR.code: 0 is not a ErrorCode"),
        (MsgType.ERROR, b"\x01\x00\x00\x00\xc9" + b"x" * 201, "ERROR.detail: 201 violates"),
        (MsgType.TIME_ACK, bytes(16) + b"\x02", "TIME_ACK.was_set: flag byte 2"),
        (MsgType.CONFIG_ACK, bytes(4) + b"\xff", "CONFIG_ACK.applied: flag byte 255"),
        (MsgType.CONFIG_PUSH, b"\x01\x20" + bytes(8193 + 64), "CONFIG_PUSH.policy: 8193 viol"),
        (MsgType.LIST_REPLY, bytes(8) + b"\x41\x00", "LIST_REPLY.entries.count: 65 violates"),
        (MsgType.LIST_REPLY, bytes(8) + b"\x01\x00", "LIST_REPLY.entries.items.clip_id"),
        (MsgType.READ, bytes(16) + b"\x05" + bytes(12) + b"\x00\x00\x01\x00", "READ.kind: 5"),
        (MsgType.READ, bytes(16) + b"\x04" + bytes(12) + b"\x01\x00\x01\x00", "READ.length"),
        (MsgType.DATA, bytes(36), "DATA: 36 bytes, shorter than its 37-byte header"),
        (MsgType.DATA, bytes(16) + b"\x00" + bytes(20), "DATA.kind: 0 is not a FileKind"),
        (MsgType.DATA, bytes(16) + b"\x01" + bytes(20 + CHUNK_SIZE + 1), "DATA.data: 65537"),
        (MsgType.COMMIT_ACK, bytes(16) + b"\x03", "COMMIT_ACK.status: 3 is not a CommitStatus"),
        (MsgType.STATUS, corrupt(STATUS, 5, b"\x65"), "STATUS.battery_percent: 101 violates"),
        (MsgType.AUTH_DOCK, b"\x02" + bytes(200), "AUTH_DOCK.certificate.version"),
    ],
)
def test_malformed_payloads_name_the_message_and_field(
    msg_type: MsgType, payload: bytes, detail: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message(msg_type, payload)
    assert caught.value.code is ErrorCode.MALFORMED
    assert str(caught.value).startswith(f"MALFORMED: {detail}")


def test_protocol_error_formats_and_keeps_its_parts() -> None:
    err = ProtocolError(ErrorCode.NO_SUCH_CLIP, "clip 00ff")
    assert str(err) == "NO_SUCH_CLIP: clip 00ff"
    assert (err.code, err.detail, err.args) == (ErrorCode.NO_SUCH_CLIP, "clip 00ff", err.args)


@pytest.mark.parametrize(
    "msg",
    [
        replace(HELLO, node_id="x" * 65),
        replace(HELLO, node_id="é" * 33),
        replace(HELLO, schema_hash=bytes(7)),
        replace(HELLO, role=7),  # type: ignore[arg-type]
        replace(HELLO, window=0x10000),
        replace(STATUS, battery_percent=101),
        replace(STATUS, charging=2),  # type: ignore[arg-type]
        ErrorReply(ErrorCode.BUSY, 0, "d" * 201),
        ConfigPush(bytes(MAX_POLICY_SIZE + 1), bytes(64)),
        ListReply(1, 0, (ENTRY,) * (MAX_LIST_ENTRIES + 1)),
        Read(bytes(16), FileKind.SEGMENT, 0, 0, CHUNK_SIZE + 1),
        Data(bytes(16), FileKind.SEGMENT, 0, 0, 0, bytes(CHUNK_SIZE + 1)),
        Data(bytes(15), FileKind.SEGMENT, 0, 0, 0, b""),
        Data(bytes(16), 9, 0, 0, 0, b""),  # type: ignore[arg-type]
        Data(bytes(16), FileKind.SEGMENT, -1, 0, 0, b""),
    ],
    ids=repr,
)
def test_encoding_an_impossible_message_is_a_value_error(msg: Message) -> None:
    with pytest.raises(ValueError, match=r"cannot encode|bytes|FileKind|DATA"):
        encode_message(msg)


def test_the_largest_messages_fit_one_frame() -> None:
    big_entry = replace(ENTRY, name="😀" * 16)
    largest = [
        ListReply(1, 0, (big_entry,) * MAX_LIST_ENTRIES),
        ConfigPush(bytes(MAX_POLICY_SIZE), bytes(64)),
        Data(bytes(16), FileKind.SEGMENT, 0, 0, 0, bytes(CHUNK_SIZE)),
        ErrorReply(ErrorCode.BUSY, 0, "d" * 200),
    ]
    for msg in largest:
        payload = encode_message(msg)
        assert len(payload) <= MAX_PAYLOAD
        assert decode_message(msg.TYPE, payload) == msg


# --- DATA fast path --------------------------------------------------------------------------

data_fields = st.tuples(raw(16), st.sampled_from(FileKind), U32, U64, U64, chunk(CHUNK_SIZE))


@FAST
@given(fields=data_fields)
def test_data_fast_path_and_spec_build_the_same_bytes(
    fields: tuple[bytes, FileKind, int, int, int, bytes],
) -> None:
    clip_id, kind, index, offset, file_size, chunk_ = fields
    fast = encode_data_header(clip_id, kind, index, offset, file_size) + chunk_
    names = ("clip_id", "kind", "index", "offset", "file_size", "data")
    assert fast == Data.SPEC.build(dict(zip(names, fields, strict=True)))
    decoded = decode_data(fast)
    parsed = Data.SPEC.parse(fast)
    assert [getattr(decoded, n) for n in names] == [parsed[n] for n in names]
    assert decoded == Data(*fields)


near_data = st.builds(
    lambda head, kind, size: head[:16] + bytes([kind]) + head[16:] + bytes(size),
    raw(36),
    st.sampled_from([0, 1, 4, 5, 255]),
    st.sampled_from([0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1]),
)


@FAST
@given(payload=st.binary(max_size=80) | near_data)
def test_data_fast_path_and_spec_refuse_the_same_payloads(payload: bytes) -> None:
    try:
        parsed = Data.SPEC.parse(payload)
    except ConstructError:
        with pytest.raises(ProtocolError):
            decode_data(payload)
        return
    assert decode_data(payload) == Data(**{f.name: parsed[f.name] for f in fields(Data)})


def test_oversized_data_is_refused_by_both_paths() -> None:
    payload = bytes(16) + b"\x04" + bytes(20) + bytes(CHUNK_SIZE + 1)
    with pytest.raises(ConstructError):
        Data.SPEC.parse(payload)
    with pytest.raises(ProtocolError, match=r"DATA\.data"):
        decode_data(payload)


def test_decode_data_does_not_copy_the_chunk() -> None:
    payload = encode_data_header(bytes(16), FileKind.JOURNAL, 0, 0, 3) + b"abc"
    data = decode_data(payload).data
    assert isinstance(data, memoryview)
    assert data.obj is payload
    assert bytes(data) == b"abc"
    via_message = decode_message(MsgType.DATA, payload)
    assert isinstance(via_message, Data)
    assert isinstance(via_message.data, memoryview)
    # A view with a wider item format is still read as bytes: 40 bytes, not 10 items.
    wide = memoryview(payload).cast("I")
    assert len(wide) == 10
    assert decode_data(wide).data == b"abc"


def test_encode_data_header_checks_its_arguments() -> None:
    assert len(encode_data_header(bytes(16), FileKind.SEGMENT, 1, 2, 3)) == DATA_HEADER_SIZE
    with pytest.raises(ValueError, match="16 bytes"):
        encode_data_header(bytes(17), FileKind.SEGMENT, 1, 2, 3)
    with pytest.raises(ValueError, match="FileKind"):
        encode_data_header(bytes(16), 0, 1, 2, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DATA header"):
        encode_data_header(bytes(16), FileKind.SEGMENT, 2**32, 2, 3)


def test_data_with_a_memoryview_chunk_encodes_like_bytes() -> None:
    msg = Data(bytes(16), FileKind.MANIFEST, 0, 5, 10, memoryview(b"hello"))
    assert encode_message(msg) == encode_message(replace(msg, data=b"hello"))


# --- certificate ------------------------------------------------------------------------------


@FAST
@given(cert=certificates)
def test_certificate_round_trips_and_signs_everything_but_its_signature(
    cert: DockCertificate,
) -> None:
    encoded = cert.encode()
    assert DockCertificate.decode(encoded) == cert
    assert cert.signed_part() == CERT_CONTEXT + encoded[:-64]
    assert encoded[-64:] == cert.signature
    assert replace(cert, signature=bytes(64)).signed_part() == cert.signed_part()
    assert replace(cert, not_after_s=cert.not_after_s ^ 1).signed_part() != cert.signed_part()


def test_certificate_decode_refuses_bad_input() -> None:
    cert = DockCertificate(
        dock_id="dock-7",
        public_key=bytes(32),
        not_before_s=0,
        not_after_s=1,
        issuer=bytes(8),
        signature=bytes(64),
    )
    encoded = cert.encode()
    for bad, detail in [
        (b"\x02" + encoded[1:], "DockCertificate.version"),
        (encoded + b"\x00", "DockCertificate: 1 trailing bytes"),
        (encoded[:-1], "DockCertificate.signature"),
        (b"", "DockCertificate.version"),
    ]:
        with pytest.raises(ProtocolError, match=f"^MALFORMED: {detail}"):
            DockCertificate.decode(bad)
    with pytest.raises(ValueError, match="version"):
        replace(cert, version=2).encode()


def test_describe_refuses_constructs_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="VarInt"):
        describe(VarInt)
