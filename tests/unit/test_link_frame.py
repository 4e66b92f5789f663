"""Frame layer: the construct spec and the struct fast path agree, and the deframer survives."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import pytest
from construct import ChecksumError
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.frame import (
    FLAG_IGNORABLE,
    HEADER_SIZE,
    HEADER_SPEC,
    MAGIC,
    MAX_FRAME,
    MAX_PAYLOAD,
    TRAILER_SIZE,
    Deframer,
    Frame,
    crc16_ccitt_false,
    encode_frame,
    frame_bytes,
    pack_header,
    unpack_header,
)

FAST = settings(max_examples=200, deadline=None)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)


@dataclass(frozen=True)
class Spec:
    """What a test frame should decode to."""

    type: int
    flags: int
    seq: int
    ack: int
    payload: bytes

    def wire(self) -> bytes:
        return frame_bytes(self.type, self.payload, seq=self.seq, ack=self.ack, flags=self.flags)

    def frame(self) -> Frame:
        return Frame(self.type, self.flags, self.seq, self.ack, self.payload)


specs = st.builds(
    Spec,
    type=U16,
    flags=st.sampled_from([0, FLAG_IGNORABLE]),
    seq=U32,
    ack=U32,
    payload=st.binary(max_size=300),
)
no_magic_garbage = st.binary(max_size=60).map(lambda b: b.replace(MAGIC[:1], b"\x00"))


def spec_header(**fields: int) -> bytes:
    """A header built by the construct spec (any field values, header CRC computed)."""
    data: bytes = HEADER_SPEC.build(fields)
    return data


def feed_in_pieces(deframer: Deframer, stream: bytes, cuts: list[int]) -> list[Frame]:
    """Feed ``stream`` split at ``cuts``, checking the buffer bound after every feed."""
    out: list[Frame] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        out += deframer.feed(stream[start:end])
        assert deframer.buffered < MAX_FRAME
    return out


def accounted(deframer: Deframer, fed: int, frames: list[Frame]) -> bool:
    """Every byte fed is in an accepted frame, counted as garbage, or still buffered."""
    in_frames = sum(HEADER_SIZE + len(f.payload) + TRAILER_SIZE for f in frames)
    return fed == in_frames + deframer.stats.garbage_bytes + deframer.buffered


def flush(deframer: Deframer) -> list[Frame]:
    """Magic-free filler: completes any pending (fake) frame so what it swallowed comes out."""
    return deframer.feed(bytes(MAX_FRAME))


# --- header: construct spec versus struct fast path ------------------------------------------


@FAST
@given(t=U16, flags=st.sampled_from([0, 1]), seq=U32, ack=U32, length=st.integers(0, MAX_PAYLOAD))
def test_spec_and_fast_path_build_the_same_header(
    t: int, flags: int, seq: int, ack: int, length: int
) -> None:
    fast = pack_header(t, seq=seq, ack=ack, length=length, flags=flags)
    spec = spec_header(version=1, flags=flags, type=t, seq=seq, ack=ack, length=length)
    assert fast == spec
    parsed = HEADER_SPEC.parse(fast)
    header = unpack_header(fast)
    assert (parsed.version, parsed.flags, parsed.type, parsed.seq, parsed.ack) == (
        header.version,
        header.flags,
        header.type,
        header.seq,
        header.ack,
    )
    assert (parsed.length, parsed.hcrc) == (header.length, header.hcrc) == (length, header.hcrc)
    assert header.hcrc == crc16_ccitt_false(fast[:18])


@FAST
@given(rest=st.binary(min_size=HEADER_SIZE - 2, max_size=HEADER_SIZE - 2))
def test_spec_and_fast_path_read_any_header_alike(rest: bytes) -> None:
    data = MAGIC + rest
    header = unpack_header(data)
    if header.hcrc != crc16_ccitt_false(data[:18]):
        with pytest.raises(ChecksumError):
            HEADER_SPEC.parse(data)
        return
    parsed = HEADER_SPEC.parse(data)
    assert [parsed[k] for k in ("version", "flags", "type", "seq", "ack", "length", "hcrc")] == [
        header.version,
        header.flags,
        header.type,
        header.seq,
        header.ack,
        header.length,
        header.hcrc,
    ]
    assert (
        spec_header(**{k: parsed[k] for k in parsed if k not in ("_io", "magic", "hcrc")}) == data
    )


def test_unpack_header_rejects_short_or_magicless_input() -> None:
    with pytest.raises(ProtocolError, match="MALFORMED"):
        unpack_header(MAGIC + bytes(10))
    with pytest.raises(ProtocolError, match="bad magic"):
        unpack_header(bytes(HEADER_SIZE))


# --- encoding --------------------------------------------------------------------------------


def test_encode_frame_returns_the_payload_object_and_a_crc_over_everything() -> None:
    payload = memoryview(bytearray(b"chunk" * 100))
    header, body, trailer = encode_frame(0x41, payload, seq=7, ack=6, flags=FLAG_IGNORABLE)
    assert body is payload
    assert len(header) == HEADER_SIZE
    assert len(trailer) == TRAILER_SIZE
    assert int.from_bytes(trailer, "little") == zlib.crc32(header + bytes(payload))
    assert unpack_header(header).length == 500
    frames = Deframer().feed(header + bytes(body) + trailer)
    assert frames == [Frame(0x41, FLAG_IGNORABLE, 7, 6, bytes(payload))]
    assert frames[0].ignorable


@pytest.mark.parametrize(
    ("msg_type", "seq", "ack", "flags", "size"),
    [
        (-1, 0, 0, 0, 0),
        (0x10000, 0, 0, 0, 0),
        (1, -1, 0, 0, 0),
        (1, 0x1_0000_0000, 0, 0, 0),
        (1, 0, 0x1_0000_0000, 0, 0),
        (1, 0, 0, 2, 0),
        (1, 0, 0, -1, 0),
        (1, 0, 0, 0, MAX_PAYLOAD + 1),
    ],
)
def test_encode_frame_refuses_what_no_receiver_accepts(
    msg_type: int, seq: int, ack: int, flags: int, size: int
) -> None:
    with pytest.raises(ValueError, match=r"u16|u32|flags|MAX_PAYLOAD"):
        encode_frame(msg_type, bytes(size), seq=seq, ack=ack, flags=flags)


def test_encode_frame_accepts_the_largest_payload_and_refuses_strided_views() -> None:
    assert len(frame_bytes(1, bytes(MAX_PAYLOAD), seq=1, ack=0)) == MAX_FRAME
    with pytest.raises(ValueError, match="contiguous"):
        encode_frame(1, memoryview(bytes(10))[::2], seq=1, ack=0)


# --- deframing -------------------------------------------------------------------------------


def test_a_frame_split_at_every_byte_boundary_is_recovered_exactly_once() -> None:
    # The payload holds the magic and a whole header, to tempt a wrong resync.
    inner = frame_bytes(5, b"", seq=1, ack=1)
    spec = Spec(0x31, 0, 9, 8, b"x" + MAGIC + inner + b"tail")
    wire = spec.wire()
    for cut in range(len(wire) + 1):
        deframer = Deframer()
        frames = deframer.feed(wire[:cut]) + deframer.feed(wire[cut:])
        assert frames == [spec.frame()], cut
        assert deframer.buffered == 0
        assert deframer.stats.garbage_bytes == 0
    deframer = Deframer()
    frames = [f for i in range(len(wire)) for f in deframer.feed(wire[i : i + 1])]
    assert frames == [spec.frame()]


@FAST
@given(data=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_random_bytes_never_raise_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    deframer = Deframer()
    frames = feed_in_pieces(deframer, data, cuts)
    assert accounted(deframer, len(data), frames)


header_fragments = st.one_of(
    st.binary(max_size=40),
    st.just(MAGIC),
    st.just(MAGIC[:1]),
    st.builds(
        lambda t, length: pack_header(t, seq=1, ack=0, length=length),
        U16,
        st.integers(0, MAX_PAYLOAD),
    ),
)


@FAST
@given(pieces=st.lists(header_fragments, max_size=30), cuts=st.lists(st.integers(0, 2000)))
def test_magic_and_plausible_headers_in_garbage_never_raise(
    pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    deframer = Deframer()
    frames = feed_in_pieces(deframer, data, cuts) + flush(deframer)
    assert accounted(deframer, len(data) + MAX_FRAME, frames)
    assert deframer.buffered == 0


@FAST
@given(
    items=st.lists(st.tuples(st.binary(max_size=60), specs), max_size=8),
    tail=st.binary(max_size=60),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_frames_between_garbage_come_out_in_order(
    items: list[tuple[bytes, Spec]], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(garbage + spec.wire() for garbage, spec in items) + tail
    deframer = Deframer()
    # Garbage may itself hold a plausible header that swallows what follows until its claimed
    # length has arrived; the flush supplies that, after which nothing may be missing.
    frames = feed_in_pieces(deframer, stream, cuts) + flush(deframer)
    assert frames == [spec.frame() for _, spec in items]
    assert deframer.stats.frames == len(items)
    assert accounted(deframer, len(stream) + MAX_FRAME, frames)


@FAST
@given(
    items=st.lists(st.tuples(no_magic_garbage, specs), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_garbage_without_magic_delays_nothing(
    items: list[tuple[bytes, Spec]], cuts: list[int]
) -> None:
    stream = b"".join(garbage + spec.wire() for garbage, spec in items)
    deframer = Deframer()
    assert feed_in_pieces(deframer, stream, cuts) == [spec.frame() for _, spec in items]
    assert deframer.stats.garbage_bytes == sum(len(garbage) for garbage, _ in items)
    assert deframer.buffered == 0


@FAST
@given(
    items=st.lists(
        st.tuples(no_magic_garbage, specs, st.none() | st.integers(0, 10**6)), max_size=8
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_every_flipped_frame_is_rejected_and_every_intact_one_recovered(
    items: list[tuple[bytes, Spec, int | None]], cuts: list[int]
) -> None:
    stream = bytearray()
    intact: list[Frame] = []
    in_header = in_body = 0
    for garbage, spec, flip in items:
        wire = bytearray(spec.wire())
        if flip is None:
            intact.append(spec.frame())
        else:
            bit = flip % (8 * len(wire))
            wire[bit // 8] ^= 1 << (bit % 8)
            in_header += 2 <= bit // 8 < HEADER_SIZE
            in_body += bit // 8 >= HEADER_SIZE
        stream += garbage + wire
    deframer = Deframer()
    frames = feed_in_pieces(deframer, bytes(stream), cuts) + flush(deframer)
    assert frames == intact
    stats = deframer.stats
    assert stats.frames == len(intact)
    assert stats.bad_crc == in_body  # the header CRC passed, the frame CRC did not
    assert stats.bad_header >= in_header  # more if a rejected frame's bytes held the magic
    assert stats.oversized == 0  # a flipped length fails the header CRC first
    assert accounted(deframer, len(stream) + MAX_FRAME, frames)


@FAST
@given(
    before=st.lists(specs, max_size=3),
    victim=specs,
    cut=st.integers(1, 10**6),
    after=st.lists(specs, max_size=3),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_a_truncated_frame_costs_only_itself(
    before: list[Spec], victim: Spec, cut: int, after: list[Spec], cuts: list[int]
) -> None:
    wire = victim.wire()
    short = wire[: cut % len(wire)] or wire[:1]
    stream = b"".join(s.wire() for s in before) + short + b"".join(s.wire() for s in after)
    deframer = Deframer()
    frames = feed_in_pieces(deframer, stream, cuts) + flush(deframer)
    assert frames == [s.frame() for s in before + after]
    assert accounted(deframer, len(stream) + MAX_FRAME, frames)


@FAST
@given(before=st.lists(specs, max_size=3), victim=specs, cut=st.integers(1, 10**6))
def test_a_frame_truncated_at_the_end_waits_in_the_buffer(
    before: list[Spec], victim: Spec, cut: int
) -> None:
    wire = victim.wire()
    short = wire[: cut % len(wire)] or wire[:1]
    deframer = Deframer()
    frames = deframer.feed(b"".join(s.wire() for s in before) + short)
    assert frames == [s.frame() for s in before]
    assert deframer.buffered == len(short)
    assert deframer.feed(wire[len(short) :]) == [victim.frame()]


@FAST
@given(
    length=st.integers(MAX_PAYLOAD + 1, 0xFFFF_FFFF),
    follower=specs,
    cuts=st.lists(st.integers(0, 500), max_size=6),
)
def test_an_oversized_length_is_rejected_at_once(
    length: int, follower: Spec, cuts: list[int]
) -> None:
    header = spec_header(version=1, flags=0, type=0x41, seq=3, ack=2, length=length)
    deframer = Deframer()
    # No flush: the bogus length must not make the deframer wait for its bytes.
    frames = feed_in_pieces(deframer, header + follower.wire(), cuts)
    assert frames == [follower.frame()]
    assert deframer.stats.oversized == 1
    assert deframer.buffered == 0


def test_a_smaller_max_payload_is_enforced() -> None:
    deframer = Deframer(max_payload=100)
    frames = deframer.feed(
        frame_bytes(1, bytes(101), seq=1, ack=0) + frame_bytes(1, bytes(100), seq=2, ack=0)
    )
    assert [f.seq for f in frames] == [2]
    assert deframer.stats.oversized == 1
    with pytest.raises(ValueError, match="max_payload"):
        Deframer(max_payload=MAX_PAYLOAD + 1)


@pytest.mark.parametrize(
    ("fields", "counter"),
    [
        ({"version": 2, "flags": 0}, "bad_header"),
        ({"version": 0, "flags": 0}, "bad_header"),
        ({"version": 1, "flags": 2}, "bad_header"),
        ({"version": 1, "flags": 0x81}, "bad_header"),
    ],
)
def test_bad_version_or_unknown_flags_reject_the_header(
    fields: dict[str, int], counter: str
) -> None:
    bad = spec_header(type=1, seq=1, ack=0, length=0, **fields) + bytes(4)
    good = Spec(2, 0, 0, 5, b"").wire()
    deframer = Deframer()
    assert deframer.feed(bad + good) == [Frame(2, 0, 0, 5, b"")]
    assert getattr(deframer.stats, counter) == 1
    assert deframer.stats.garbage_bytes == len(bad)


def test_a_bad_header_crc_is_rejected_without_waiting() -> None:
    header = bytearray(pack_header(1, seq=1, ack=0, length=60000))
    header[18] ^= 0xFF
    good = Spec(2, 0, 0, 5, b"ok").wire()
    deframer = Deframer()
    assert deframer.feed(bytes(header) + good) == [Frame(2, 0, 0, 5, b"ok")]
    assert deframer.stats.bad_header == 1


def test_a_lone_first_magic_byte_is_kept_and_runs_of_it_are_not() -> None:
    deframer = Deframer()
    assert deframer.feed(b"\xbc" * 100_000) == []
    assert deframer.buffered == 1
    assert deframer.stats.garbage_bytes == 99_999
    wire = Spec(1, 0, 1, 0, b"p").wire()
    assert deframer.feed(wire[1:]) == [Frame(1, 0, 1, 0, b"p")]


def test_a_long_pending_frame_stays_below_max_frame() -> None:
    deframer = Deframer()
    wire = frame_bytes(0x41, bytes(MAX_PAYLOAD), seq=1, ack=0)
    assert deframer.feed(wire[:-1]) == []
    assert deframer.buffered == MAX_FRAME - 1
    assert deframer.feed(wire[-1:] + wire) == [Frame(0x41, 0, 1, 0, bytes(MAX_PAYLOAD))] * 2
    assert deframer.buffered == 0


def test_inputs_of_every_buffer_type_are_copied_not_kept() -> None:
    wire = Spec(3, 0, 4, 5, b"payload").wire()
    for kind in (bytes, bytearray, memoryview):
        deframer = Deframer()
        first = bytearray(wire[:10])
        assert deframer.feed(kind(first)) == []
        first[:] = bytes(10)  # the caller reuses its read buffer
        assert deframer.feed(kind(wire[10:])) == [Frame(3, 0, 4, 5, b"payload")]
    strided = memoryview(bytes(b for byte in wire for b in (byte, 0)))[::2]
    frames = Deframer().feed(strided)
    assert frames == [Frame(3, 0, 4, 5, b"payload")]
    assert type(frames[0].payload) is bytes


def test_reset_drops_a_partial_frame_as_garbage() -> None:
    deframer = Deframer()
    wire = Spec(1, 0, 1, 0, b"abc").wire()
    deframer.feed(wire[:-2])
    deframer.reset()
    assert deframer.buffered == 0
    assert deframer.stats.garbage_bytes == len(wire) - 2
    assert deframer.feed(wire) == [Frame(1, 0, 1, 0, b"abc")]


def test_many_frames_in_one_read_and_one_frame_in_many_reads() -> None:
    specs_ = [Spec(0x41, 0, n, n - 1, bytes([n]) * 65_000) for n in range(1, 6)]
    stream = b"".join(s.wire() for s in specs_)
    deframer = Deframer()
    assert deframer.feed(stream) == [s.frame() for s in specs_]
    frames = [f for i in range(0, len(stream), 4095) for f in deframer.feed(stream[i : i + 4095])]
    assert frames == [s.frame() for s in specs_]
    assert deframer.stats.frames == 10
    assert deframer.stats.garbage_bytes == 0


# --- abandoning a partial frame ----------------------------------------------------------------


def test_abandon_with_nothing_buffered_does_nothing() -> None:
    deframer = Deframer()
    assert deframer.abandon() == []
    assert deframer.stats.abandoned == 0


@FAST
@given(
    length=st.integers(1, MAX_PAYLOAD),
    followers=st.lists(specs, min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_an_abandoned_forged_header_gives_up_the_frames_behind_it(
    length: int, followers: list[Spec], cuts: list[int]
) -> None:
    forged = spec_header(version=1, flags=0, type=0x30, seq=9, ack=0, length=length)
    behind = b"".join(s.wire() for s in followers)
    if len(behind) >= length + TRAILER_SIZE:
        behind = behind[:0]  # the frames would complete the forged one: not this case
        followers = []
    deframer = Deframer()
    frames = feed_in_pieces(deframer, forged + behind, cuts)
    assert frames == []  # everything waits behind the forged length
    frames = deframer.abandon()
    assert frames == [s.frame() for s in followers]
    assert deframer.stats.abandoned == 1
    assert deframer.buffered == 0
    assert accounted(deframer, len(forged) + len(behind), frames)


def test_a_frame_beginning_inside_an_abandoned_one_is_found() -> None:
    honest = Spec(0x01, 0, 5, 4, b"hello").wire()
    cut = Spec(0x41, 0, 4, 3, bytes(500)).wire()[:100]  # cut short by a reconnect
    deframer = Deframer()
    assert deframer.feed(cut + honest) == []
    assert deframer.abandon() == [Frame(0x01, 0, 5, 4, b"hello")]
    assert accounted(deframer, len(cut) + len(honest), [Frame(0x01, 0, 5, 4, b"hello")])


def test_each_forged_header_is_abandoned_in_turn() -> None:
    forged = spec_header(version=1, flags=0, type=0x30, seq=9, ack=0, length=4000)
    honest = Spec(0x01, 0, 5, 4, b"hello")
    deframer = Deframer()
    assert deframer.feed(forged + forged + honest.wire()) == []
    assert deframer.abandon() == []  # the second forged header is now pending
    assert deframer.buffered == len(forged) + len(honest.wire())
    assert deframer.abandon() == [honest.frame()]
    assert deframer.stats.abandoned == 2
    assert deframer.buffered == 0
