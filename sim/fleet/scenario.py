"""Fleet scenario files: how a force's shift looks, as distributions rather than steps.

A single-camera scenario (``sim/scenarios/*.toml``) scripts one officer's shift step by step;
a fleet scenario describes thousands of officers at once, and each camera draws its own
shift from it (``bodycam.sim.fleet.shift``):

```toml
name = "day shift"
shift_hours = 10
start_window_minutes = 60      # shift starts spread evenly over this window
incidents_per_hour = 0.8       # per officer-hour off camera (Poisson)
holster_share = 0.3            # incidents started by the holster trigger, not a double press
[incident]                     # incident length: log-normal
median_minutes = 6
sigma = 0.9
max_minutes = 90
[config.recording]             # any device config, as in config.toml
pre_event_s = 30
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bodycam.daemon.config import Config, ConfigError
from bodycam.sim.scenario import read_scenario_toml

DEFAULT_SCENARIO = "fleet-day.toml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentLength(_Model):
    """How long an officer records: log-normal around ``median_minutes``, capped."""

    median_minutes: float = Field(default=6.0, gt=0, le=600)
    sigma: float = Field(default=0.9, ge=0, le=3)
    max_minutes: float = Field(default=90.0, gt=0, le=24 * 60)


class FleetScenario(_Model):
    """One shift pattern for a whole fleet; every number is in shift (simulated) time."""

    name: str = "fleet"
    # Simulated seconds per real second; the CLI's --speed wins over it.
    speed: float = Field(default=1.0, gt=0, le=100_000)
    shift_hours: float = Field(default=10.0, gt=0, le=24)
    start_window_minutes: float = Field(default=60.0, ge=0, le=24 * 60)
    incidents_per_hour: float = Field(default=0.8, ge=0, le=60)
    holster_share: float = Field(default=0.3, ge=0, le=1)
    incident: IncidentLength = IncidentLength()
    # Cameras go back in the dock at the end of the shift (charge, offload, clock sync).
    dock_at_end: bool = True
    offload_mb_per_s: float = Field(default=20.0, gt=0, le=10_000)
    # Battery at the start of the shift, drawn evenly from [low, high] percent.
    battery_start_percent: tuple[float, float] = (80.0, 100.0)
    # Standard deviation of the real-time clock's drift; the dock corrects it at docking.
    clock_drift_ppm: float = Field(default=20.0, ge=0, le=1000)
    # Cameras whose clock starts unset (never docked since a battery swap).
    clock_unset_share: float = Field(default=0.0, ge=0, le=1)
    # How often each camera reads its battery and card, like the daemon's monitors but
    # sparser: 22,000 cameras polling every 5 s would spend the CPU on polls.
    monitor_s: float = Field(default=60.0, ge=1, le=3600)
    # Firmware versions in service and their shares (empty: every camera runs this build).
    firmware: dict[str, float] = Field(default_factory=dict)
    # Device config overrides, validated as config.toml is.
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> FleetScenario:
        low, high = self.battery_start_percent
        if not 0 <= low <= high <= 100:
            raise ValueError("battery_start_percent must be [low, high] within 0-100")
        if any(share < 0 for share in self.firmware.values()):
            raise ValueError("firmware shares must not be negative")
        if self.firmware and sum(self.firmware.values()) <= 0:
            raise ValueError("firmware shares must add up to more than 0")
        return self

    def device_config(self) -> Config:
        """The cameras' device config (defaults plus ``[config]``); ConfigError if bad."""
        if not all(isinstance(v, dict) for v in self.config.values()):
            raise ConfigError("config: every entry must be a table ([config.<section>])")
        return Config().with_overrides(**self.config)

    @property
    def duration_s(self) -> float:
        """Shift time from the first camera's power-on to the last shift's end."""
        return self.start_window_minutes * 60 + self.shift_hours * 3600


def parse_fleet_scenario(data: dict[str, Any], *, source: str) -> FleetScenario:
    """Validate a fleet scenario mapping; ConfigError names every bad key."""
    try:
        scenario = FleetScenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {key}: {what}")
        raise ConfigError("\n".join(problems)) from None
    try:
        scenario.device_config()
    except ConfigError as exc:
        raise ConfigError(f"{source}: [config]: {exc}") from None
    return scenario


def load_fleet_scenario(path: Path | None) -> FleetScenario:
    """Read a fleet scenario file, or the packaged day shift when ``path`` is None."""
    data, source = read_scenario_toml(path, default=DEFAULT_SCENARIO, what="fleet scenario")
    return parse_fleet_scenario(data, source=source)
