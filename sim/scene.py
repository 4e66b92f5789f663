"""A synthetic scene for the simulated sensor, with the frame counter burned into the picture.

Every frame shows a panning textured background, a moving disc, the frame counter and the UTC
time in large digits (a small bitmap font drawn with numpy), and a barcode of the frame
counter along the bottom edge. The barcode is what makes the simulator testable end to end:
decode any frame that came out of the recorder, read its counter, and a lost, duplicated or
reordered frame is visible.

Barcode layout (computed from the frame size alone, so the reader needs nothing else): two
rows of 22 cells in a gray strip that the moving scene never enters. Each row opens with two
reference cells (white, black in the first row; black, white in the second) that give the
reader its threshold after the encoder has shifted the levels; the other 40 cells carry the
32-bit counter and a CRC-8 of it, most significant bit first.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["COUNTER_BITS", "SceneRenderer", "crc8", "read_frame_counter"]

COUNTER_BITS = 32
_CHECK_BITS = 8
_ROWS = 2
_COLS = 22  # 2 reference cells + 20 data cells per row
_DATA_PER_ROW = _COLS - 2

# Limited-range ("TV") levels, as a real sensor pipeline hands to the encoder.
_BLACK = 16
_WHITE = 235
_STRIP_GRAY = 128
_NEUTRAL_CHROMA = 128
# The reader gives up below this white-black difference (a gray or washed-out frame).
_MIN_CONTRAST = 40.0

Plane = npt.NDArray[np.uint8]


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


# CRC-8/AUTOSAR (poly 0x2F): Hamming distance 4 over a 32-bit payload, so any three flipped
# cells are caught; init/xorout 0xFF so an all-black data field is not a valid code word.
_CRC8_TABLE = _crc8_table(0x2F)


def crc8(data: bytes) -> int:
    """Return the CRC-8 (poly 0x2F, init 0xFF, xorout 0xFF) that guards the barcode."""
    crc = 0xFF
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc ^ 0xFF


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the barcode sits in a frame of a given size."""

    cell_w: int
    cell_h: int
    x0: int  # left edge of the first cell
    y0: int  # top edge of the first row of cells
    strip_top: int  # first row of the gray strip; the moving scene stays above it


@functools.lru_cache(maxsize=16)
def _layout(width: int, height: int) -> _Layout:
    cell_w = width // _COLS
    cell_h = max(8, (height // 20) & ~1)
    pad = max(2, (cell_h // 4) & ~1)
    strip_h = _ROWS * cell_h + 2 * pad
    return _Layout(
        cell_w=cell_w,
        cell_h=cell_h,
        x0=(width - _COLS * cell_w) // 2,
        y0=height - strip_h + pad,
        strip_top=height - strip_h,
    )


def _cell_levels(counter: int) -> Plane:
    """The (rows, cols) luma levels of the barcode cells for ``counter``."""
    word = (counter << _CHECK_BITS) | crc8(counter.to_bytes(4, "big"))
    nbits = COUNTER_BITS + _CHECK_BITS
    bits = (word >> np.arange(nbits - 1, -1, -1, dtype=np.uint64)) & 1
    data = np.where(bits.reshape(_ROWS, _DATA_PER_ROW) != 0, _WHITE, _BLACK)
    refs = np.array([[_WHITE, _BLACK], [_BLACK, _WHITE]])
    return np.concatenate([refs, data], axis=1).astype(np.uint8)


def read_frame_counter(luma: npt.NDArray[np.generic]) -> int | None:
    """Decode the frame counter from a frame's luma plane.

    Args:
        luma: The Y plane, shape ``(height, width)``, as rendered or as decoded (limited or
            full range; the reference cells calibrate the threshold).

    Returns:
        The counter, or None when the barcode is missing, too faint, or fails its CRC.
    """
    if luma.ndim != 2:
        return None
    height, width = luma.shape
    if width < 128 or height < 96:
        return None
    lay = _layout(width, height)
    block = luma[
        lay.y0 : lay.y0 + _ROWS * lay.cell_h, lay.x0 : lay.x0 + _COLS * lay.cell_w
    ].reshape(_ROWS, lay.cell_h, _COLS, lay.cell_w)
    # Sample only the middle of each cell: the edges carry the encoder's ringing.
    iy, ix = lay.cell_h // 4, lay.cell_w // 4
    inner = block[:, iy : lay.cell_h - iy, :, ix : lay.cell_w - ix]
    means = inner.astype(np.float32).mean(axis=(1, 3))
    white = np.array([means[0, 0], means[1, 1]])
    black = np.array([means[0, 1], means[1, 0]])
    contrast = white - black
    if float(contrast.min()) < _MIN_CONTRAST:
        return None
    threshold = ((white + black) / 2)[:, None]
    data = means[:, 2:]
    # A cell near the threshold is half covered or smeared: refuse rather than guess.
    if bool((np.abs(data - threshold) < (contrast[:, None] * 0.15)).any()):
        return None
    word = 0
    for bit in (data > threshold).reshape(-1):
        word = (word << 1) | int(bit)
    counter, check = word >> _CHECK_BITS, word & 0xFF
    if crc8(counter.to_bytes(4, "big")) != check:
        return None
    return counter


# A 5x7 bitmap font, only the characters the overlay needs.
_FONT_ROWS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "#": (".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    " ": (".....",) * 7,
}
_CHARS = "".join(_FONT_ROWS)
_TEXT_COLS = 16  # the longest line: "HH:MM:SS.mmm UTC"


def _glyph_bank(scale: int) -> Plane:
    """Every glyph as a full character cell (ink on the box colour), shape (n, 9s, 6s)."""
    bank = np.full((len(_CHARS), 9, 6), _BLACK, dtype=np.uint8)
    for i, char in enumerate(_CHARS):
        ink = np.array([[c == "#" for c in row] for row in _FONT_ROWS[char]])
        bank[i, 1:8, 0:5][ink] = _WHITE
    return bank.repeat(scale, axis=1).repeat(scale, axis=2)


def _periodic_noise(
    rng: np.random.Generator, rows: int, cols: int, sigma_px: float
) -> npt.NDArray[np.float32]:
    """Smooth noise in [-1, 1] that wraps around horizontally (so a pan can loop seamlessly)."""
    spectrum = np.fft.rfft2(rng.standard_normal((rows, cols)))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    spectrum *= np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fx * fx + fy * fy))
    field = np.fft.irfft2(spectrum, s=(rows, cols))
    peak = float(np.abs(field).max()) or 1.0
    return (field / peak).astype(np.float32)


class SceneRenderer:
    """Draws yuv420p frames of the synthetic scene.

    All static parts (background texture, disc sprite, glyphs, barcode strip) are computed
    once here; ``render`` only slices and copies, so a 720p frame costs well under 2 ms.
    """

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2 or width < 128 or height < 96:
            raise ValueError(f"scene: {width}x{height} must be even and at least 128x96")
        self._w, self._h = width, height
        self._lay = _layout(width, height)
        self._scene_h = self._lay.strip_top
        rng = np.random.default_rng(20240501)
        self._init_background(rng)
        self._init_disc()
        self._scale = max(1, min(width // 160, height // 120))
        self._glyphs = _glyph_bank(self._scale)
        self._char_index = np.zeros(256, dtype=np.intp)
        for i, char in enumerate(_CHARS):
            self._char_index[ord(char)] = i
        self._text_xy = (2 * self._scale, 2 * self._scale)

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def barcode_top(self) -> int:
        """First row of the barcode strip; nothing else is ever drawn at or below it."""
        return self._lay.strip_top

    def _init_background(self, rng: np.random.Generator) -> None:
        w, sh = self._w, self._scene_h
        # A sky-to-ground gradient, blotches at two scales and fine grain: enough detail that
        # the encoder has real work to do, as with a real street scene.
        grad = np.linspace(175.0, 85.0, sh, dtype=np.float32)[:, None]
        luma = (
            grad
            + 38.0 * _periodic_noise(rng, sh, w, sigma_px=max(4.0, w / 40))
            + 16.0 * _periodic_noise(rng, sh, w, sigma_px=1.5)
            + rng.uniform(-7.0, 7.0, (sh, w)).astype(np.float32)
        )
        tile_y = np.clip(luma, _BLACK, _WHITE).astype(np.uint8)
        self._bg_y = np.concatenate([tile_y, tile_y], axis=1)
        ch, cw = sh // 2, w // 2
        sky = np.linspace(1.0, -1.0, ch, dtype=np.float32)[:, None]
        tint = _periodic_noise(rng, ch, cw, sigma_px=max(3.0, cw / 30))
        tile_u = np.clip(128 + 22 * sky + 12 * tint, 16, 240).astype(np.uint8)
        tile_v = np.clip(128 - 14 * sky + 16 * tint, 16, 240).astype(np.uint8)
        self._bg_u = np.concatenate([tile_u, tile_u], axis=1)
        self._bg_v = np.concatenate([tile_v, tile_v], axis=1)
        self._pan_step = 2 * max(1, w // 320)  # even, so chroma stays aligned

    def _init_disc(self) -> None:
        radius = max(6, self._scene_h // 6)
        d = 2 * radius
        yy, xx = np.mgrid[0:d, 0:d].astype(np.float32) + 0.5
        dist = np.hypot(yy - radius, xx - radius)
        self._disc_mask = dist <= radius
        stripes = ((xx + yy) // max(2, d // 8)) % 2 == 0
        self._disc_y = np.where(stripes, 200, 70).astype(np.uint8)
        half = radius
        cy, cx = np.mgrid[0:half, 0:half].astype(np.float32) + 0.5
        self._disc_mask_c = np.hypot(cy - half / 2, cx - half / 2) <= half / 2
        self._disc_u = np.full((half, half), 90, dtype=np.uint8)
        self._disc_v = np.full((half, half), 190, dtype=np.uint8)
        self._disc_d = d

    def render(self, frame_index: int, when: dt.datetime, *, out: Plane | None = None) -> Plane:
        """Draw frame ``frame_index`` showing the time ``when``.

        Args:
            frame_index: The counter to burn in, 0 <= frame_index < 2**32; it also drives the
                motion, so the same index always gives the same scene.
            when: The time to print (naive values are taken as UTC).
            out: Optional buffer of the result's shape to draw into instead of a new array
                (the encoder thread reuses one buffer).

        Returns:
            A yuv420p buffer of shape ``(height * 3 // 2, width)``: Y, then U, then V.
        """
        if not 0 <= frame_index < 1 << COUNTER_BITS:
            raise ValueError(f"scene: frame_index {frame_index} outside 0..2**32-1")
        w, h = self._w, self._h
        if out is None:
            out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        elif out.shape != (h * 3 // 2, w) or not out.flags.c_contiguous:
            raise ValueError("scene: out must be a C-contiguous (height*3//2, width) buffer")
        flat = out.reshape(-1)
        y = flat[: h * w].reshape(h, w)
        u = flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)
        v = flat[h * w * 5 // 4 :].reshape(h // 2, w // 2)

        sh = self._scene_h
        off = (frame_index * self._pan_step) % w
        y[:sh] = self._bg_y[:, off : off + w]
        u[: sh // 2] = self._bg_u[:, off // 2 : off // 2 + w // 2]
        v[: sh // 2] = self._bg_v[:, off // 2 : off // 2 + w // 2]
        self._draw_disc(frame_index, y, u, v)
        self._draw_text(frame_index, when, y, u, v)
        self._draw_barcode(frame_index, y, u, v)
        return out

    def _draw_disc(self, frame_index: int, y: Plane, u: Plane, v: Plane) -> None:
        d = self._disc_d
        # Incommensurate periods: the disc wanders over the whole scene, never repeating soon.
        fx = 0.5 + 0.5 * math.sin(2 * math.pi * frame_index / 97.0)
        fy = 0.5 + 0.5 * math.sin(2 * math.pi * frame_index / 61.0 + 1.0)
        x0 = int(fx * (self._w - d)) & ~1
        y0 = int(fy * (self._scene_h - d)) & ~1
        np.copyto(y[y0 : y0 + d, x0 : x0 + d], self._disc_y, where=self._disc_mask)
        cy, cx, half = y0 // 2, x0 // 2, d // 2
        np.copyto(u[cy : cy + half, cx : cx + half], self._disc_u, where=self._disc_mask_c)
        np.copyto(v[cy : cy + half, cx : cx + half], self._disc_v, where=self._disc_mask_c)

    def _draw_text(self, frame_index: int, when: dt.datetime, y: Plane, u: Plane, v: Plane) -> None:
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC)
        lines = (
            f"#{frame_index:010d}",
            f"{when:%Y-%m-%d}",
            f"{when:%H:%M:%S}.{when.microsecond // 1000:03d} UTC",
        )
        text = "".join(line.ljust(_TEXT_COLS)[:_TEXT_COLS] for line in lines)
        codes = self._char_index[np.frombuffer(text.encode("ascii", "replace"), np.uint8)]
        n, ch, cw = len(lines), self._glyphs.shape[1], self._glyphs.shape[2]
        # (lines * cols, ch, cw) -> (lines * ch, cols * cw): the whole text block in one copy.
        block = (
            self._glyphs[codes]
            .reshape(n, _TEXT_COLS, ch, cw)
            .transpose(0, 2, 1, 3)
            .reshape(n * ch, _TEXT_COLS * cw)
        )
        tx, ty = self._text_xy
        bh, bw = min(block.shape[0], self._scene_h - ty), min(block.shape[1], self._w - tx)
        y[ty : ty + bh, tx : tx + bw] = block[:bh, :bw]
        cy0, cy1, cx0, cx1 = ty // 2, (ty + bh + 1) // 2, tx // 2, (tx + bw + 1) // 2
        u[cy0:cy1, cx0:cx1] = _NEUTRAL_CHROMA
        v[cy0:cy1, cx0:cx1] = _NEUTRAL_CHROMA

    def _draw_barcode(self, frame_index: int, y: Plane, u: Plane, v: Plane) -> None:
        lay = self._lay
        y[lay.strip_top :] = _STRIP_GRAY
        u[lay.strip_top // 2 :] = _NEUTRAL_CHROMA
        v[lay.strip_top // 2 :] = _NEUTRAL_CHROMA
        cells = _cell_levels(frame_index).repeat(lay.cell_h, axis=0).repeat(lay.cell_w, axis=1)
        y[lay.y0 : lay.y0 + cells.shape[0], lay.x0 : lay.x0 + cells.shape[1]] = cells
