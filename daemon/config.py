"""The device configuration: TOML on disk, validated into typed sections.

Every error names the key as it is written in the file (``recording.pre_event_s``), so a
force's device engineer can fix a config without reading code. Unknown keys are errors: a
misspelt ``pre_event`` must not silently fall back to a default on 22,000 cameras.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bodycam.drivers.interfaces import VideoFormat

DEFAULT_CONFIG_PATH = Path("/etc/bodycam/config.toml")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSection(_Section):
    id: str = Field(
        default="BODYCAM-SIM-0001", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    officer_id: str = Field(default="", max_length=64)
    board: Literal["sim", "pi"] = "sim"
    state_dir: Path = Path("/var/lib/bodycam")
    # Volatile status (status.json) for the view, tests and health checks.
    runtime_dir: Path = Path("/run/bodycam")


class VideoSection(_Section):
    width: int = Field(default=1280, ge=64, le=1920, multiple_of=2)
    height: int = Field(default=720, ge=64, le=1080, multiple_of=2)
    fps: int = Field(default=30, ge=1, le=60)
    bitrate: int = Field(default=8_000_000, ge=100_000, le=50_000_000)
    gop: int = Field(default=30, ge=1, le=300)

    def format(self) -> VideoFormat:
        return VideoFormat(self.width, self.height, self.fps, self.bitrate, self.gop)


class RecordingSection(_Section):
    pre_event_s: float = Field(default=30.0, ge=0, le=120)
    segment_s: float = Field(default=2.0, gt=0, le=60)
    max_clip_s: float = Field(default=4 * 3600.0, ge=10, le=24 * 3600)
    # Frames the recorder may queue for the writer before it reports the card as too slow.
    writer_queue_s: float = Field(default=20.0, ge=1, le=120)


class ButtonsSection(_Section):
    double_press_s: float = Field(default=0.7, gt=0.05, le=3)
    hold_stop_s: float = Field(default=3.0, ge=0.5, le=10)
    debounce_s: float = Field(default=0.02, ge=0, le=0.5)


class IndicatorsSection(_Section):
    # Red LED while recording: on for recording_led_on_s every recording_led_period_s.
    recording_led_on_s: float = Field(default=0.25, gt=0, le=5)
    recording_led_period_s: float = Field(default=1.0, gt=0, le=10)
    # Green LED while buffering (ready): a short blink.
    buffering_led_on_s: float = Field(default=0.1, gt=0, le=5)
    buffering_led_period_s: float = Field(default=3.0, gt=0, le=30)
    beep_s: float = Field(default=0.1, gt=0, le=2)
    beep_gap_s: float = Field(default=0.15, gt=0, le=2)
    long_beep_s: float = Field(default=0.8, gt=0, le=5)
    start_beeps: int = Field(default=2, ge=0, le=10)
    reminder_beeps: int = Field(default=2, ge=0, le=10)
    reminder_interval_s: float = Field(default=120.0, ge=5, le=3600)
    low_battery_beeps: int = Field(default=4, ge=1, le=10)
    low_battery_interval_s: float = Field(default=20.0, ge=5, le=3600)
    storage_full_beeps: int = Field(default=3, ge=1, le=10)
    storage_full_interval_s: float = Field(default=60.0, ge=5, le=3600)
    clock_not_set_beeps: int = Field(default=5, ge=1, le=10)
    clock_not_set_interval_s: float = Field(default=20.0, ge=5, le=3600)

    @model_validator(mode="after")
    def _led_on_fits_period(self) -> IndicatorsSection:
        if self.recording_led_on_s >= self.recording_led_period_s:
            raise ValueError("recording_led_on_s must be shorter than recording_led_period_s")
        if self.buffering_led_on_s >= self.buffering_led_period_s:
            raise ValueError("buffering_led_on_s must be shorter than buffering_led_period_s")
        return self


class PolicySection(_Section):
    # Pushed by the force through the dock; stealth (no LED, no sound) only where allowed.
    stealth_allowed: bool = False


class BatterySection(_Section):
    # The power_supply device of the fuel gauge (/sys/class/power_supply/<supply>); empty:
    # the first one whose type is Battery. ``charger``: the supply whose ``online`` means
    # charging (empty: any online non-battery supply). Pi board only.
    supply: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")
    charger: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")
    low_percent: float = Field(default=15.0, ge=0, le=100)
    critical_percent: float = Field(default=5.0, ge=0, le=100)
    poll_s: float = Field(default=5.0, gt=0, le=600)


class StorageSection(_Section):
    # Recording stops (every segment sealed) before free space drops under this.
    reserve_mb: float = Field(default=64.0, ge=0, le=100_000)
    poll_s: float = Field(default=5.0, gt=0, le=600)


class KeysSection(_Section):
    # Relative paths are under device.state_dir.
    device_key: Path = Path("keys/device.key")
    force_public_key: Path = Path("keys/force.pub")
    # The force authority's Ed25519 public key: docks must hold a certificate from it, and
    # pushed policies must be signed by it. Without it no dock can take footage off.
    authority_public_key: Path = Path("keys/authority.pub")


class PinsSection(_Section):
    """Where the parts hang on the GPIO header (BCM numbers); the simulator uses them too."""

    red_led: int = Field(default=17, ge=0, le=27)
    green_led: int = Field(default=27, ge=0, le=27)
    beeper: int = Field(default=22, ge=0, le=27)
    # "buzzer": an active buzzer, on while the pin is high. "tone": a passive piezo driven
    # with a PWM square wave at beeper_tone_hz.
    beeper_kind: Literal["buzzer", "tone"] = "buzzer"
    beeper_tone_hz: float = Field(default=2700.0, ge=100, le=10_000)
    record_button: int = Field(default=5, ge=0, le=27)
    function_button: int | None = Field(default=6, ge=0, le=27)
    # None: no power switch, the camera is on whenever the daemon runs.
    power_switch: int | None = Field(default=26, ge=0, le=27)
    # Auto-activation inputs by name (holster, vehicle, weapon); switch to ground, active low.
    triggers: dict[str, int] = Field(default_factory=lambda: {"holster": 13, "vehicle": 19})

    @model_validator(mode="after")
    def _one_part_per_pin(self) -> PinsSection:
        seen: dict[int, str] = {}
        for key, pin in self.assigned():
            if not 0 <= pin <= 27:
                raise ValueError(f"{key} = {pin}: not a header GPIO (BCM 0-27)")
            if pin in seen:
                raise ValueError(f"{key} and {seen[pin]} both use GPIO {pin}")
            seen[pin] = key
        for name in self.triggers:
            if not name.isidentifier():
                raise ValueError(f"triggers.{name}: trigger names are plain words")
        return self

    def assigned(self) -> list[tuple[str, int]]:
        """Every (config key, pin) in use, in a stable order."""
        parts: list[tuple[str, int | None]] = [
            ("red_led", self.red_led),
            ("green_led", self.green_led),
            ("beeper", self.beeper),
            ("record_button", self.record_button),
            ("function_button", self.function_button),
            ("power_switch", self.power_switch),
        ]
        parts += [(f"triggers.{name}", pin) for name, pin in sorted(self.triggers.items())]
        return [(key, pin) for key, pin in parts if pin is not None]


class CameraSection(_Section):
    """The camera module on a Pi board (picamera2); the size and rate are in [video]."""

    index: int = Field(default=0, ge=0, le=7)
    # No frame for this long: the sensor has stalled; it is reported and restarted.
    stall_timeout_s: float = Field(default=2.0, ge=0.2, le=60)
    hflip: bool = False
    vflip: bool = False


class GadgetSection(_Section):
    """The USB port the dock plugs into: a CDC-ACM gadget (Pi board only)."""

    # The gadget's serial port on the camera; the daemon keeps it open.
    tty: Path = Path("/dev/ttyGS0")
    # The USB device controller (/sys/class/udc/<udc>); empty: the only one there is.
    udc: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")
    # Docked when the controller is "configured" by a host (udc), when VBUS is present
    # (vbus, from vbus_supply's online), or either.
    detect: Literal["udc", "vbus", "udc_or_vbus"] = "udc"
    vbus_supply: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")
    poll_s: float = Field(default=0.25, ge=0.05, le=5)
    # What the dock host sees (its udev rule matches these; keep them in step).
    vendor_id: int = Field(default=0x1209, ge=0, le=0xFFFF)
    product_id: int = Field(default=0x0001, ge=0, le=0xFFFF)
    manufacturer: str = Field(default="bodycam project", min_length=1, max_length=126)
    product: str = Field(default="bodycam camera", min_length=1, max_length=126)

    @model_validator(mode="after")
    def _vbus_named(self) -> GadgetSection:
        if self.detect != "udc" and not self.vbus_supply:
            raise ValueError(f"detect = {self.detect!r} needs vbus_supply")
        if not self.product.startswith("bodycam"):
            raise ValueError("product must start with 'bodycam': the dock recognises it so")
        return self


class TelemetrySection(_Section):
    """MQTT telemetry to the force's broker (docs/telemetry.md); off while broker is empty."""

    # mqtt://host[:1883] or mqtts://host[:8883]. Empty: no telemetry (the simulator and a
    # camera with no network never need a broker).
    broker: str = ""
    username: str = Field(default="", max_length=128)
    # The password is read from a file, so a config can be shown without its secret.
    password_file: Path | None = None
    # TLS: the broker's CA, and this device's client certificate and key (per-device
    # credentials; the broker's ACL lets a camera publish only under its own id).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=600)
    state_interval_s: float = Field(default=10.0, ge=1, le=3600)
    # Events kept while the broker is out of reach; the oldest non-critical go first.
    queue_max: int = Field(default=10_000, ge=10, le=1_000_000)

    @model_validator(mode="after")
    def _broker_parses(self) -> TelemetrySection:
        if self.broker:
            from bodycam.daemon.telemetry.broker import parse_broker_url

            parse_broker_url(self.broker)  # ValueError names what is wrong with it
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class SimSection(_Section):
    speed: float = Field(default=1.0, gt=0, le=1000)
    # "encoder": real H.264 from a synthetic scene (PyAV/libx264). "synthetic": frames of the
    # right sizes and cadence without encoding, for benchmarks and large fleets.
    camera: Literal["encoder", "synthetic"] = "encoder"
    battery_percent: float = Field(default=100.0, ge=0, le=100)
    battery_hours: float = Field(default=12.0, gt=0, le=100)
    storage_quota_mb: float = Field(default=4096.0, gt=0)
    clock_set: bool = True
    # Fault injection: the sensor stops delivering frames after this many seconds of running.
    camera_stall_after_s: float | None = Field(default=None, gt=0)
    # A unix socket through which a test or the scenario runner plays the outside world.
    control_socket: Path | None = None
    power_on: bool = True
    # The simulated dock connector (a pseudo-terminal per docking); off for a bare board.
    dock_port: bool = True
    # A stable name for the dock's end of the pty while docked, as the dock host's udev rule
    # names a seated camera /dev/bodycam/<serial>: a labgrid RawSerialPort can point at it.
    dock_link: Path | None = None


class Config(_Section):
    device: DeviceSection = DeviceSection()
    video: VideoSection = VideoSection()
    recording: RecordingSection = RecordingSection()
    buttons: ButtonsSection = ButtonsSection()
    indicators: IndicatorsSection = IndicatorsSection()
    policy: PolicySection = PolicySection()
    battery: BatterySection = BatterySection()
    storage: StorageSection = StorageSection()
    keys: KeysSection = KeysSection()
    pins: PinsSection = PinsSection()
    camera: CameraSection = CameraSection()
    gadget: GadgetSection = GadgetSection()
    telemetry: TelemetrySection = TelemetrySection()
    sim: SimSection = SimSection()

    @model_validator(mode="after")
    def _battery_thresholds(self) -> Config:
        if self.battery.critical_percent > self.battery.low_percent:
            raise ValueError("battery.critical_percent must not exceed battery.low_percent")
        return self

    @property
    def clips_dir(self) -> Path:
        return self.device.state_dir / "clips"

    def key_path(self, which: Path) -> Path:
        return which if which.is_absolute() else self.device.state_dir / which

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys replaced, validated like a file (used by the sim and tests)."""
        data = self.model_dump()
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        return parse_config(data, source="<overrides>")


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(data: dict[str, Any], *, source: str) -> Config:
    """Validate a config mapping; raise ConfigError naming every bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = _key_path(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{source}: {key}: unknown key")
            else:
                problems.append(f"{source}: {key}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from None


def load_config(path: Path | None) -> Config:
    """Read the TOML file (or the defaults when ``path`` is None); apply BODYCAM_BOARD."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    board = os.environ.get("BODYCAM_BOARD")
    if board:
        data.setdefault("device", {})["board"] = board
    return parse_config(data, source=str(path) if path else "<defaults>")
