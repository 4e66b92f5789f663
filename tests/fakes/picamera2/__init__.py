"""A fake ``picamera2`` for tests: the real library's API shape and threading, no camera.

Only imported under the name ``picamera2`` when a test installs it
(:func:`tests.fakes.picamera2_fixture.install_fake_picamera2`). Frames are real H.264
(libx264 through PyAV) produced from a camera thread at the configured frame rate; faults come
from :data:`fake_world`. Written from the facts of picamera2's public API; no code from it.
"""

from __future__ import annotations

from ._world import FakeRecording, FakeWorld, Stage, fake_world
from .picamera2 import CAMERA_THREAD_PREFIX, CompletedRequest, Picamera2

__all__ = [
    "CAMERA_THREAD_PREFIX",
    "CompletedRequest",
    "FakeRecording",
    "FakeWorld",
    "Picamera2",
    "Stage",
    "fake_world",
]
