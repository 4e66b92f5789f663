"""A bad cable between two ByteLinks: flipped bits, line noise, and a camera pulled out.

Tests and benchmarks put it in the middle of camera <-> pty1 <-> FaultyCable <-> pty2 <->
dock. It forwards whatever each side reads to the other, and on the way

* XORs bytes with a random non-zero value at ``flip_rate`` per byte. The positions are
  drawn as geometric gaps between flips, so the cost is per flip and per read, never per
  byte, and an unfaulted chunk is forwarded as the very object that was read;
* after a forwarded read, with probability ``garbage_rate``, appends 1-300 random bytes,
  half the time containing the frame magic so that the receiver's resync is exercised;
* ``cut`` closes both ends at once; ``cut_after`` does so once a number of bytes passed.

For the far ends to see a cut, the cable must hold the pty masters (the camera and the dock
open the slave paths). With ``SimDockPort`` on the camera side the port keeps its own slave
open, as a real gadget port outlives the host closing it: call its ``unplug`` as well to
lift the camera out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass

from bodycam.drivers.interfaces import ByteLink, LinkClosedError

log = logging.getLogger(__name__)

FRAME_MAGIC = b"\xbc\xa7"
MAX_GARBAGE = 300
DIRECTIONS = ("a->b", "b->a")


@dataclass(frozen=True, slots=True)
class CableStats:
    """What passed through the cable so far."""

    a_to_b: int = 0
    """Payload bytes forwarded from a to b (garbage not counted)."""
    b_to_a: int = 0
    flipped: int = 0
    """Bytes changed by a flip, both directions."""
    garbage: int = 0
    """Garbage bytes inserted, both directions."""
    cut: bool = False


class _Direction:
    """Forwarding state of one direction."""

    def __init__(self, name: str, src: ByteLink, dst: ByteLink) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.passed = 0
        self.cut_at: int | None = None
        self.until_flip = 0  # bytes to pass unharmed before the next flip


class FaultyCable:
    """Forwards bytes between ``a`` and ``b`` with injected faults.

    Args:
        a: One end (say the camera's pty master side).
        b: The other end.
        flip_rate: Probability that any forwarded byte is corrupted (0 <= p <= 1).
        garbage_rate: Probability that garbage follows a forwarded read (0 <= p <= 1).
        seed: Seed for a reproducible run.
    """

    def __init__(
        self,
        a: ByteLink,
        b: ByteLink,
        *,
        flip_rate: float = 0.0,
        garbage_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        for label, rate in (("flip_rate", flip_rate), ("garbage_rate", garbage_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be within [0, 1], got {rate}")
        self._a = a
        self._b = b
        self._flip_rate = flip_rate
        self._garbage_rate = garbage_rate
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        # log(1 - p) once, for the geometric gaps between flips.
        self._log_keep = math.log1p(-flip_rate) if 0.0 < flip_rate < 1.0 else 0.0
        self._dirs = {
            "a->b": _Direction("a->b", a, b),
            "b->a": _Direction("b->a", b, a),
        }
        for direction in self._dirs.values():
            direction.until_flip = self._flip_gap()
        self._flipped = 0
        self._garbage = 0
        self._cut = False

    @property
    def stats(self) -> CableStats:
        """A snapshot of the counters."""
        return CableStats(
            a_to_b=self._dirs["a->b"].passed,
            b_to_a=self._dirs["b->a"].passed,
            flipped=self._flipped,
            garbage=self._garbage,
            cut=self._cut,
        )

    async def run(self) -> None:
        """Forward both ways until cut, until either side closes, or until cancelled.

        Both ends are closed when this returns (or is cancelled).
        """
        try:
            async with asyncio.TaskGroup() as group:
                for direction in self._dirs.values():
                    group.create_task(self._forward(direction), name=f"cable {direction.name}")
        finally:
            self._close_ends()

    def cut(self) -> None:
        """Cut the cable: both ends close at once, as when a camera is pulled mid-transfer."""
        if not self._cut:
            log.info("faulty cable: cut (a->b %d B, b->a %d B)", *self._passed())
        self._cut = True
        self._close_ends()

    def cut_after(self, nbytes: int, direction: str = "a->b") -> None:
        """Cut once exactly ``nbytes`` payload bytes have passed in ``direction``.

        Counts from the start of the run, so bytes already passed count too (a value at or
        below them cuts at the next read in that direction).
        """
        if direction not in self._dirs:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        self._dirs[direction].cut_at = nbytes

    async def _forward(self, direction: _Direction) -> None:
        try:
            while not self._cut:
                data = await direction.src.read()
                limit = direction.cut_at
                cut_now = limit is not None and direction.passed + len(data) >= limit
                if cut_now:
                    assert limit is not None  # for mypy: cut_now implies it
                    data = data[: max(0, limit - direction.passed)]
                chunks = self._damage(direction, data)
                direction.passed += len(data)
                if chunks:
                    await direction.dst.write(*chunks)
                if cut_now:
                    self.cut()
        except LinkClosedError as exc:
            if not self._cut:
                log.info("faulty cable: %s ended: %s", direction.name, exc)
        finally:
            # One side gone means the cable is gone: the other direction stops as well.
            self._close_ends()

    def _damage(self, direction: _Direction, data: bytes) -> list[bytes | bytearray]:
        size = len(data)
        out: bytes | bytearray = data
        if self._flip_rate > 0.0 and direction.until_flip < size:
            damaged = bytearray(data)  # the only copy, and only when a flip lands in here
            pos = direction.until_flip
            while pos < size:
                damaged[pos] ^= self._rng.randrange(1, 256)
                self._flipped += 1
                pos += 1 + self._flip_gap()
            direction.until_flip = pos - size
            out = damaged
        elif self._flip_rate > 0.0:
            direction.until_flip -= size
        chunks: list[bytes | bytearray] = [out] if size else []
        if size and self._garbage_rate > 0.0 and self._rng.random() < self._garbage_rate:
            chunks.append(self._garbage_bytes())
        return chunks

    def _flip_gap(self) -> int:
        """Unharmed bytes before the next flip: geometric with success probability p."""
        if self._flip_rate <= 0.0:
            return 1 << 62  # never, as far as any run is concerned
        if self._flip_rate >= 1.0:
            return 0
        # Inverse CDF of the geometric distribution; 1 - random() lies in (0, 1].
        return int(math.log(1.0 - self._rng.random()) / self._log_keep)

    def _garbage_bytes(self) -> bytes:
        size = self._rng.randint(1, MAX_GARBAGE)
        junk = bytearray(self._rng.randbytes(size))
        if size >= len(FRAME_MAGIC) and self._rng.random() < 0.5:
            at = self._rng.randrange(size - len(FRAME_MAGIC) + 1)
            junk[at : at + len(FRAME_MAGIC)] = FRAME_MAGIC
        self._garbage += size
        return bytes(junk)

    def _close_ends(self) -> None:
        self._a.close()
        self._b.close()

    def _passed(self) -> tuple[int, int]:
        return self._dirs["a->b"].passed, self._dirs["b->a"].passed
