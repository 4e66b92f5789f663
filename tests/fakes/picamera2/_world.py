"""The world around the fake camera: what is plugged in, the faults to inject, what happened.

One instance, ``picamera2.fake_world``, per import of the fake (the test fixture imports it
afresh for every test). The fake camera classes report to it from their own threads, so
everything here is guarded by one lock.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .picamera2 import Picamera2

__all__ = ["FakeRecording", "FakeWorld", "Stage", "fake_world"]

Stage = Literal["open", "configure", "start"]


@dataclasses.dataclass(frozen=True, slots=True)
class FakeRecording:
    """What one ``start_recording`` asked of the sensor and the encoder."""

    camera_num: int
    size: tuple[int, int]
    format: str
    frame_duration_limits: tuple[int, int] | None
    hflip: bool
    vflip: bool
    bitrate: int | None
    iperiod: int | None
    repeat: bool
    framerate: float | None


class FakeWorld:
    """Cameras attached, injected faults, and counters the tests assert on.

    Attributes:
        cameras: Camera modules attached (0: no camera, as with a loose ribbon cable).
        opens: ``Picamera2`` objects successfully opened.
        closes: ``Picamera2.close()`` calls that released an open camera.
        frames_output: ``outputframe`` calls made by encoders.
        max_output_call_s: The longest an ``outputframe`` call took (the camera thread's
            worst wait on a consumer).
        output_errors: Exceptions raised by ``outputframe`` (the real library would lose its
            camera thread to them; the fake records them and goes silent).
        instances: Every ``Picamera2`` opened, in order.
        recordings: Every ``start_recording``, in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to one attached camera, no faults, zero counters."""
        with self._lock:
            self.cameras = 1
            self.opens = 0
            self.closes = 0
            self.frames_output = 0
            self.max_output_call_s = 0.0
            self.output_errors: list[BaseException] = []
            self.instances: list[Picamera2] = []
            self.recordings: list[FakeRecording] = []
            self._failures: dict[Stage, BaseException] = {}
            self._wedges: dict[str, list[threading.Event]] = {"start": [], "stop": []}
            self._stall_events: set[threading.Event] = set()
            self._threads: list[threading.Thread] = []
            self._joined: set[threading.Thread] = set()

    # --- faults the tests inject -------------------------------------------------------

    def stall(self) -> None:
        """Every running sensor stops delivering frames; its thread stays alive.

        A camera started afterwards (a fresh ``Picamera2``, as after a restart) delivers.
        """
        with self._lock:
            for event in self._stall_events:
                event.set()

    def fail_next_start(self, exc: BaseException, *, stage: Stage = "start") -> None:
        """Make the next ``Picamera2()`` (``open``), ``configure`` or ``start`` raise.

        ``open`` fails as the real constructor does: ``RuntimeError("Camera __init__
        sequence did not complete.")`` chained from ``exc``; the others raise ``exc`` itself.
        """
        with self._lock:
            self._failures[stage] = exc

    def wedge_next_start(self) -> threading.Event:
        """Make the next ``Picamera2.start()`` hang until the returned event is set."""
        return self._wedge("start")

    def wedge_next_stop(self) -> threading.Event:
        """Make the next ``Picamera2.stop()`` hang until the returned event is set.

        Its sensor keeps delivering frames meanwhile, as a libcamera stuck in its stop would.
        """
        return self._wedge("stop")

    def _wedge(self, call: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._wedges[call].append(event)
        return event

    # --- what the tests read -------------------------------------------------------------

    def live_threads(self) -> list[threading.Thread]:
        """Camera threads of the fake that are still running."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    def all_joined(self) -> bool:
        """True when every camera thread ever started has been stopped and joined."""
        with self._lock:
            return all(t in self._joined and not t.is_alive() for t in self._threads)

    @property
    def threads_started(self) -> int:
        """Camera threads started so far (one per ``start``)."""
        with self._lock:
            return len(self._threads)

    # --- called by the fake classes -----------------------------------------------------

    def _take_failure(self, stage: Stage) -> BaseException | None:
        with self._lock:
            return self._failures.pop(stage, None)

    def _take_wedge(self, call: str) -> threading.Event | None:
        with self._lock:
            wedges = self._wedges[call]
            return wedges.pop(0) if wedges else None

    def _opened(self, camera: Picamera2) -> None:
        with self._lock:
            self.opens += 1
            self.instances.append(camera)

    def _closed(self) -> None:
        with self._lock:
            self.closes += 1

    def _recording(self, recording: FakeRecording) -> None:
        with self._lock:
            self.recordings.append(recording)

    def _thread_started(self, thread: threading.Thread, stall: threading.Event) -> None:
        with self._lock:
            self._threads.append(thread)
            self._stall_events.add(stall)

    def _thread_joined(self, thread: threading.Thread, stall: threading.Event) -> None:
        with self._lock:
            self._joined.add(thread)
            self._stall_events.discard(stall)

    def _output_call(self, seconds: float) -> None:
        with self._lock:
            self.frames_output += 1
            self.max_output_call_s = max(self.max_output_call_s, seconds)

    def _output_error(self, exc: BaseException) -> None:
        with self._lock:
            self.output_errors.append(exc)


fake_world = FakeWorld()
