"""A stand-in for libcamera's Python binding: just what the picamera2 fake and the driver use.

The real module is a compiled binding that only exists where libcamera is installed (a Pi's
OS image). Its ``Transform(rotation=0, hflip=False, vflip=False, transpose=False)`` keeps the
flags as boolean properties; picamera2 rejects a camera configuration whose ``transform`` is
not a ``libcamera.Transform``, which the fake checks too.
"""

from __future__ import annotations

__all__ = ["Transform"]


class Transform:
    """Mirror/transpose applied by the sensor pipeline."""

    def __init__(
        self,
        rotation: int = 0,
        hflip: bool | int = False,
        vflip: bool | int = False,
        transpose: bool = False,
    ) -> None:
        if rotation not in (0, 180):
            # 90/270 need a transpose the sensors on the camera cannot do; the fake stops here.
            raise ValueError(f"fake libcamera: rotation {rotation} is not supported")
        turned = rotation == 180  # a half turn is both flips
        self.hflip = bool(hflip) ^ turned
        self.vflip = bool(vflip) ^ turned
        self.transpose = bool(transpose)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return (self.hflip, self.vflip, self.transpose) == (
            other.hflip,
            other.vflip,
            other.transpose,
        )

    def __hash__(self) -> int:
        return hash((self.hflip, self.vflip, self.transpose))

    def __repr__(self) -> str:
        flags = f"hflip={self.hflip} vflip={self.vflip} transpose={self.transpose}"
        return f"<libcamera.Transform {flags}>"
