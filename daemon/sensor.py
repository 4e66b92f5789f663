"""The sensor while the state machine wants it on: frames to the recorder, faults reported.

A camera that fails (no module, a stall, a start that libcamera refuses) closes the open clip
with reason ``camera_fault``, is reported to the state machine (the camera-fault warning),
and is opened again after a back-off from 1 s to 30 s, so a dead sensor never spins the CPU;
its first frame afterwards clears the warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bodycam.daemon import state_machine as sm
from bodycam.daemon.recorder import Recorder
from bodycam.drivers.interfaces import Camera, CameraError, Clock

log = logging.getLogger(__name__)

RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class Sensor:
    """Starts and stops the camera task; at most one runs, and off always precedes on."""

    def __init__(
        self,
        camera: Camera,
        recorder: Recorder,
        clock: Clock,
        post: Callable[[sm.Event], None],
    ) -> None:
        self._camera = camera
        self._recorder = recorder
        self._clock = clock
        self._post = post
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    def start(self, tg: asyncio.TaskGroup) -> None:
        if self._task is None or self._task.done():
            previous, self._stopping = self._stopping, None
            self._task = tg.create_task(self._run(previous), name="sensor")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._stopping = self._task
            self._task = None
        self._recorder.sensor_stopped()

    async def _run(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # Off before on: a quick dock/undock must not turn on a sensor still turning off.
            await asyncio.wait([previous])
        failures = 0
        while True:
            try:
                async with self._camera:
                    async for frame in self._camera.frames():
                        if failures:
                            failures = 0
                            self._post(sm.CameraRecovered(self._clock.monotonic()))
                        self._recorder.on_frame(frame)
            except CameraError as exc:
                log.error("%s", exc)
                if self._recorder.recording:
                    self._recorder.close_clip("camera_fault")
                self._post(sm.RecorderFailed(self._clock.monotonic(), "camera_fault", str(exc)))
                self._recorder.sensor_stopped()
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                await self._clock.sleep(delay)
            else:
                return
