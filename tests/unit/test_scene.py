"""The synthetic scene: counter barcode round trips, raw and through H.264."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import av
import numpy as np
import pytest

from bodycam.sim.scene import SceneRenderer, crc8, read_frame_counter

WHEN = dt.datetime(2024, 5, 1, 12, 34, 56, 789_000, tzinfo=dt.UTC)
VALUES = [0, 1, 12345, 2**31 - 1, 2**32 - 1]
# (width, height, bitrate): the low end of what a deployment would configure per size.
SIZES = [(160, 120, 200_000), (320, 240, 500_000), (1280, 720, 8_000_000)]
RAW_SIZES = [(128, 96), (160, 120), (320, 240), (1280, 720), (1920, 1080)]


def _luma(buffer: np.ndarray, height: int) -> np.ndarray:
    return buffer[:height]


def test_crc8_matches_the_published_check_value() -> None:
    # CRC-8/AUTOSAR catalogue check value for b"123456789".
    assert crc8(b"123456789") == 0xDF


@pytest.mark.parametrize(("width", "height"), RAW_SIZES)
def test_counter_round_trip_on_raw_frame(width: int, height: int) -> None:
    renderer = SceneRenderer(width, height)
    for value in VALUES:
        frame = renderer.render(value, WHEN)
        assert frame.shape == (height * 3 // 2, width)
        assert frame.dtype == np.uint8
        assert read_frame_counter(_luma(frame, height)) == value


@pytest.mark.parametrize(("width", "height", "bitrate"), SIZES)
def test_counter_round_trip_through_h264(width: int, height: int, bitrate: int) -> None:
    renderer = SceneRenderer(width, height)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 30)
    encoder.framerate = Fraction(30, 1)
    encoder.bit_rate = bitrate
    encoder.gop_size = 30
    encoder.max_b_frames = 0
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    decoder = av.CodecContext.create("h264", "r")
    # A run of consecutive counters (as the camera produces), then the big jumps.
    sequence = [*range(8), *VALUES[2:], 2**31]
    decoded: list[int | None] = []
    for pts, value in enumerate([*sequence, None]):
        frame = None
        if value is not None:
            frame = av.VideoFrame.from_numpy_buffer(renderer.render(value, WHEN), "yuv420p")
            frame.pts = pts
        for packet in encoder.encode(frame):
            for picture in decoder.decode(packet):
                assert (picture.width, picture.height) == (width, height)
                decoded.append(read_frame_counter(picture.to_ndarray(format="gray")))
    assert decoded == sequence


@pytest.mark.parametrize(("width", "height"), [(160, 120), (1920, 1080)])
def test_plain_gray_frame_reads_as_none(width: int, height: int) -> None:
    assert read_frame_counter(np.full((height, width), 128, dtype=np.uint8)) is None


def test_flipped_cells_fail_the_check() -> None:
    renderer = SceneRenderer(320, 240)
    luma = _luma(renderer.render(12345, WHEN), 240).copy()
    assert read_frame_counter(luma) == 12345
    # At 320 wide the 22 cells are 14 px, centred: the last column of cells (two check bits)
    # spans x 300..313. Inverting them must be caught by the CRC, not misread.
    top = renderer.barcode_top
    luma[top:, 300:314] = 251 - luma[top:, 300:314]
    assert read_frame_counter(luma) is None


def test_wrong_shape_or_tiny_frame_reads_as_none() -> None:
    assert read_frame_counter(np.zeros((10, 10), dtype=np.uint8)) is None
    assert read_frame_counter(np.zeros((120, 160, 3), dtype=np.uint8)) is None


def test_barcode_strip_holds_nothing_but_the_barcode() -> None:
    renderer = SceneRenderer(160, 120)
    top = renderer.barcode_top
    for index in range(0, 200, 3):  # the disc visits the whole scene over these frames
        strip = _luma(renderer.render(index, WHEN), 120)[top:]
        assert set(np.unique(strip).tolist()) <= {16, 128, 235}
        assert (strip[0] == 128).all()  # the gray band that separates it from the scene


def test_scene_moves_and_has_texture() -> None:
    renderer = SceneRenderer(320, 240)
    first = _luma(renderer.render(10, WHEN), 240)[: renderer.barcode_top].astype(np.int16)
    second = _luma(renderer.render(11, WHEN), 240)[: renderer.barcode_top].astype(np.int16)
    assert np.abs(first - second).mean() > 2.0
    assert first.std() > 15.0


def test_time_is_burned_in_but_not_into_the_barcode() -> None:
    renderer = SceneRenderer(320, 240)
    later = WHEN + dt.timedelta(milliseconds=1)
    a = _luma(renderer.render(7, WHEN), 240)
    b = _luma(renderer.render(7, later), 240)
    changed_rows = np.nonzero((a != b).any(axis=1))[0]
    assert changed_rows.size > 0
    assert changed_rows.max() < 60  # only the text block at the top
    assert read_frame_counter(b) == 7


def test_render_into_buffer_reuses_it() -> None:
    renderer = SceneRenderer(160, 120)
    out = np.zeros((180, 160), dtype=np.uint8)
    result = renderer.render(42, WHEN, out=out)
    assert result is out
    assert read_frame_counter(out[:120]) == 42
    with pytest.raises(ValueError, match="out must be"):
        renderer.render(42, WHEN, out=np.zeros((120, 160), dtype=np.uint8))


@pytest.mark.parametrize(("width", "height"), [(161, 120), (160, 121), (64, 48)])
def test_unsupported_sizes_are_refused(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="must be even"):
        SceneRenderer(width, height)


def test_counter_outside_32_bits_is_refused() -> None:
    renderer = SceneRenderer(160, 120)
    with pytest.raises(ValueError, match="outside"):
        renderer.render(2**32, WHEN)
    with pytest.raises(ValueError, match="outside"):
        renderer.render(-1, WHEN)
