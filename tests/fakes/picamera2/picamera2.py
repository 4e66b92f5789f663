"""The fake ``Picamera2`` class: the real one's methods, arguments, errors and threading.

Facts kept from picamera2: ``global_camera_info()`` lists the attached cameras as dicts
(``Model``, ``Location``, ``Rotation``, ``Id``, ``Num``); ``Picamera2(n)`` looks ``n`` up in
that list first, so with no camera it raises ``IndexError``; a failed open surfaces as
``RuntimeError("Camera __init__ sequence did not complete.")``. The frame rate is set by the
``FrameDurationLimits`` control (microseconds, (min, max)); ``transform`` must be a
``libcamera.Transform``. ``start_recording`` = configure if needed, ``start_encoder``,
``start``; ``stop_recording`` = ``stop`` then ``stop_encoder``; ``close`` stops the camera
(not its encoders) and releases it. Frames come from a camera thread at the configured rate;
each carries a ``SensorTimestamp`` in ``time.monotonic_ns()``'s clock (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, ClassVar, Self, cast

import numpy as np
import numpy.typing as npt

from ._world import FakeRecording, fake_world
from .encoders import AV_PIXEL_FORMATS, Encoder, H264Encoder, Quality
from .outputs import Output

__all__ = ["CAMERA_THREAD_PREFIX", "CompletedRequest", "Picamera2"]

logger = logging.getLogger(__name__)

CAMERA_THREAD_PREFIX = "fake-picamera2-camera"
_DEFAULT_FRAME_US = 33_333
_STREAM_KEYS = {"format", "size", "stride", "framesize", "preserve_ar"}
_thread_ids = itertools.count(1)


def _transform_class() -> type:
    # The real module imports libcamera as it loads; the fake waits until a configuration is
    # made, so that its types (``tests.fakes.picamera2``) import without the fake libcamera.
    import libcamera

    return cast("type", libcamera.Transform)


class CompletedRequest:
    """One captured frame: its picture and metadata, as the camera hands it to encoders."""

    def __init__(self, array: npt.NDArray[np.uint8], sensor_timestamp_ns: int) -> None:
        self._array = array
        self._metadata: dict[str, Any] = {"SensorTimestamp": sensor_timestamp_ns}

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def make_array(self, name: str = "main") -> npt.NDArray[np.uint8]:
        return self._array


class Picamera2:
    """One camera module, opened."""

    _models: ClassVar[tuple[str, ...]] = ("imx708", "imx219", "ov5647", "imx477")

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        """The attached cameras, one dict per camera, ordered by camera number."""
        return [
            {
                "Model": Picamera2._models[num % len(Picamera2._models)],
                "Location": 2,
                "Rotation": 0,
                "Id": f"/base/soc/i2c0mux/i2c@{num}/fake@1a",
                "Num": num,
            }
            for num in range(fake_world.cameras)
        ]

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: int | None = None,
        tuning: Any = None,
        allocator: Any = None,
    ) -> None:
        self.is_open = False
        self.started = False
        self.camera_config: dict[str, Any] = {}
        self.lock = threading.Lock()
        self._encoders: set[Encoder] = set()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._stall_event = threading.Event()
        # As the real constructor does, before opening anything: IndexError with no camera.
        self.camera_idx: int = self.global_camera_info()[camera_num]["Num"]
        failure = fake_world._take_failure("open")
        if failure is not None:
            raise RuntimeError("Camera __init__ sequence did not complete.") from failure
        self.is_open = True
        fake_world._opened(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- configuration ---------------------------------------------------------------

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        """A configuration for video recording (the real defaults: 1280x720 XBGR8888, 30 fps)."""
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        stream: dict[str, Any] = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        for key, value in (main or {}).items():
            if key not in _STREAM_KEYS:
                raise ValueError(
                    f"Bad key {key!r}: valid stream configuration keys are {_STREAM_KEYS}"
                )
            stream[key] = value
        return {
            "use_case": use_case,
            "transform": _transform_class()() if transform is None else transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": stream,
            "lores": lores,
            "raw": raw,
            "controls": {"FrameDurationLimits": (_DEFAULT_FRAME_US, _DEFAULT_FRAME_US)}
            | (controls or {}),
            "sensor": sensor,
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: dict[str, Any] | str | None = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or isinstance(camera_config, str):
            camera_config = self.create_video_configuration()
        config = dict(camera_config)
        if not isinstance(config.get("transform"), _transform_class()):
            raise RuntimeError("Transform has incorrect type")  # noqa: TRY004 (as the real one)
        main = dict(config["main"])
        width, height = main["size"]
        if width % 2 or height % 2:
            raise RuntimeError("width and height should be even")
        if main["format"] not in AV_PIXEL_FORMATS:
            raise RuntimeError(f"Bad format {main['format']} in stream main")
        limits = config["controls"].get("FrameDurationLimits")
        if limits is not None and not 0 < limits[0] <= limits[1]:
            raise RuntimeError(f"Invalid FrameDurationLimits {limits}")
        failure = fake_world._take_failure("configure")
        if failure is not None:
            raise failure
        bytes_per_pixel = {"YUV420": 1, "BGR888": 3, "RGB888": 3}.get(main["format"], 4)
        main["stride"] = width * bytes_per_pixel
        config["main"] = main
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    # --- encoders and recording ----------------------------------------------------------

    def start_encoder(
        self,
        encoder: Encoder | None = None,
        output: Output | None = None,
        pts: Any = None,
        quality: Quality | None = None,
        name: str | None = None,
    ) -> None:
        if encoder is None:
            if len(self._encoders) != 1:
                raise RuntimeError("No encoder specified")
            encoder = next(iter(self._encoders))
        if output is not None:
            encoder.output = output
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        name = name or self.camera_config.get("encode") or "main"
        stream = self.camera_config[name]
        encoder.name = name
        encoder.width, encoder.height = stream["size"]
        encoder.format = stream["format"]
        encoder.stride = stream["stride"]
        if encoder.framerate is None:
            encoder.framerate = 1_000_000 / _DEFAULT_FRAME_US  # the real one pegs it at 30
        encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(encoder)

    def stop_encoder(self, encoders: Encoder | list[Encoder] | set[Encoder] | None = None) -> None:
        if encoders is None:
            chosen = list(self._encoders)
        elif isinstance(encoders, Encoder):
            chosen = [encoders]
        else:
            chosen = list(encoders)
        for encoder in chosen:
            encoder.stop()
        with self.lock:
            self._encoders.difference_update(chosen)

    def start_recording(
        self,
        encoder: Encoder,
        output: Output,
        pts: Any = None,
        config: dict[str, Any] | str | None = None,
        quality: Quality | None = None,
        name: str | None = None,
    ) -> None:
        if not self.camera_config and config is None:
            config = "video"
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        main, transform = self.camera_config["main"], self.camera_config["transform"]
        h264 = encoder if isinstance(encoder, H264Encoder) else None
        fake_world._recording(
            FakeRecording(
                camera_num=self.camera_idx,
                size=tuple(main["size"]),
                format=main["format"],
                frame_duration_limits=self.camera_config["controls"].get("FrameDurationLimits"),
                hflip=transform.hflip,
                vflip=transform.vflip,
                bitrate=h264.bitrate if h264 else None,
                iperiod=h264.iperiod if h264 else None,
                repeat=h264.repeat if h264 else False,
                framerate=encoder.framerate,
            )
        )
        self.start()

    def stop_recording(self) -> None:
        self.stop()
        self.stop_encoder()

    def start(self, config: dict[str, Any] | str | None = None, show_preview: bool = False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        wedge = fake_world._take_wedge("start")
        if wedge is not None:
            wedge.wait()  # libcamera never answering the start
        failure = fake_world._take_failure("start")
        if failure is not None:
            raise failure
        self._stop_event.clear()
        self._stall_event.clear()
        thread = threading.Thread(
            target=self._run, name=f"{CAMERA_THREAD_PREFIX}-{next(_thread_ids)}", daemon=True
        )
        fake_world._thread_started(thread, self._stall_event)
        self._thread = thread
        thread.start()
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        wedge = fake_world._take_wedge("stop")
        if wedge is not None:
            wedge.wait()  # stuck, as a libcamera waiting on a sensor that never answers
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
            fake_world._thread_joined(thread, self._stall_event)
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera_config = {}
        fake_world._closed()

    # --- the camera thread ------------------------------------------------------------

    def _run(self) -> None:
        limits = self.camera_config["controls"].get("FrameDurationLimits")
        interval = (limits[1] if limits else _DEFAULT_FRAME_US) / 1e6
        main = self.camera_config["main"]
        picture = _Picture(main["format"], *main["size"])
        t0 = time.monotonic()
        n = 0
        while not self._stop_event.is_set():
            delay = t0 + n * interval - time.monotonic()
            if delay > 0:
                self._stop_event.wait(delay)
                continue
            if delay < -interval:
                n = int((time.monotonic() - t0) / interval)  # frames never captured are gone
            n += 1
            if self._stall_event.is_set():
                continue
            request = CompletedRequest(picture.render(n), time.monotonic_ns())
            with self.lock:
                encoders = tuple(self._encoders)
            try:
                for encoder in encoders:
                    encoder.encode(self.camera_config.get("encode") or "main", request)
            except Exception as exc:
                # picamera2 would lose its request thread here: the sensor goes silent.
                logger.exception("fake picamera2: an encoder or output raised")
                fake_world._output_error(exc)
                self._stall_event.set()


class _Picture:
    """A moving gradient in the stream's pixel layout (cheap, and never a static scene)."""

    def __init__(self, fmt: str, width: int, height: int) -> None:
        self._fmt = fmt
        ramp = np.add.outer(np.arange(height), np.arange(width)) % 256
        self._ramp = ramp.astype(np.uint8)
        if fmt == "YUV420":
            self._buffer = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        else:
            channels = 3 if fmt in ("RGB888", "BGR888") else 4
            self._buffer = np.empty((height, width, channels), dtype=np.uint8)

    def render(self, n: int) -> npt.NDArray[np.uint8]:
        luma = self._ramp + np.uint8((3 * n) % 256)
        if self._fmt == "YUV420":
            self._buffer[: luma.shape[0]] = luma
        else:
            self._buffer[...] = luma[..., None]
        return self._buffer.copy()
