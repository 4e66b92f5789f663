"""Fake ``picamera2.outputs``: the ``Output`` base class encoders hand their frames to.

As in picamera2, an encoder calls ``outputframe(frame, keyframe, timestamp, packet, audio)``
on each of its outputs from the thread that produced the frame (never the caller's), with
``timestamp`` in microseconds. ``start``/``stop`` bracket a recording.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Output"]


class Output:
    """Receives encoded frames from an encoder; subclasses override :meth:`outputframe`."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts  # the real class writes timestamps there; the fake only keeps it
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        """Called by the encoder when it starts."""
        self.recording = True

    def stop(self) -> None:
        """Called by the encoder when it stops."""
        self.recording = False

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        """One encoded frame (``bytes``; ``None`` for audio), from the encoder's thread."""

    def outputtimestamp(self, timestamp: int | None) -> None:
        """The real class writes ``timestamp`` to its pts file; the fake has none."""

    def _add_stream(self, encoder_stream: Any, *args: Any, **kwargs: Any) -> None:
        """The encoder describes its stream (codec, size) when it starts."""
