"""Garbage on the dock link: the camera answers nothing it should not and still docks."""

from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path

from bodycam.drivers.link.frame import (
    FRAME_VERSION,
    MAGIC,
    Deframer,
    crc16_ccitt_false,
    frame_bytes,
)
from bodycam.drivers.link.messages import FileKind, ListClips, MsgType, Read, encode_message
from tests.acceptance.gestures import record_clip
from tests.acceptance.reference_dock import ReferenceDock, open_dock_link
from tests.acceptance.rig import CameraRig, needs_part


def _with_bad_crc(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def _bad_frames() -> list[bytes]:
    rng = random.Random(20261122)
    oversized = struct.pack("<2sBBHIII", MAGIC, FRAME_VERSION, 0, MsgType.HELLO, 1, 0, 0xFFFF_FFF0)
    return [
        rng.randbytes(4096),  # line noise
        oversized + struct.pack("<H", crc16_ccitt_false(oversized)),  # a 4 GiB "frame"
        frame_bytes(0x7777, b"unknown message type", seq=1, ack=0),
        frame_bytes(MsgType.HELLO, b"\x00" * 3, seq=2, ack=0),  # malformed payload
        _with_bad_crc(frame_bytes(MsgType.STATUS_REQ, b"", seq=3, ack=0)),
        # Footage requested without authenticating first.
        frame_bytes(
            MsgType.LIST, encode_message(ListClips(cursor=0, max_entries=10)), seq=4, ack=0
        ),
        frame_bytes(
            MsgType.READ,
            encode_message(
                Read(clip_id=bytes(16), kind=FileKind.MANIFEST, index=0, offset=0, length=4096)
            ),
            seq=5,
            ack=0,
        ),
        frame_bytes(MsgType.HELLO, b"", seq=6, ack=0)[:11],  # cut off mid-header
    ]


async def _spray(port: str, listen_s: float) -> list[int]:
    """Write every bad frame, listen for ``listen_s``; the types of the frames that came back."""
    link = open_dock_link(port)
    deframer = Deframer()
    seen: list[int] = []
    try:
        for chunk in _bad_frames():
            await link.write(bytes(chunk))
        try:
            async with asyncio.timeout(listen_s):
                while True:
                    seen += [frame.type for frame in deframer.feed(await link.read())]
        except TimeoutError:
            pass
    finally:
        link.close()
    return seen


def test_bad_frames_get_nothing_and_the_camera_still_docks(rig: CameraRig, tmp_path: Path) -> None:
    needs_part(lambda: record_clip(rig))
    port = needs_part(rig.dock)
    replies = asyncio.run(_spray(port, listen_s=2.0))
    assert MsgType.LIST_REPLY not in replies
    assert MsgType.DATA not in replies

    dock = ReferenceDock(
        tmp_path, rig.identity, rig.identity.authority_key, session_s=rig.timeouts.session_s
    )
    report = dock.offload(port)
    assert report.error is None, report.error
    assert len(report.committed) >= 1
    assert report.rejected == []
    assert report.camera_status is not None
    assert report.camera_status.clips == 0
