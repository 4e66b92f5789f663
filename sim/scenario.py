"""Scenario files: a shift scripted as timed world actions, plus config for the camera.

```toml
name = "short shift"
speed = 1.0
end = 40                       # seconds of simulated time (default: last step + 3)
[config.recording]             # any device config, as in config.toml
pre_event_s = 10
[[steps]]
at = 12                        # simulated seconds since the start
do = "double_press"            # any action of bodycam.sim.actions
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bodycam.daemon.config import ConfigError


@dataclass(frozen=True)
class Step:
    at: float
    action: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: list[Step]
    end: float
    speed: float | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _fail(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}")


def parse_scenario(data: dict[str, Any], *, source: str) -> Scenario:
    known = {"name", "speed", "end", "config", "steps"}
    for key in data:
        if key not in known:
            raise _fail(source, f"{key}: unknown key")
    steps_data = data.get("steps", [])
    if not isinstance(steps_data, list):
        raise _fail(source, "steps: must be an array of tables ([[steps]])")
    steps: list[Step] = []
    for i, raw in enumerate(steps_data):
        if not isinstance(raw, dict) or "do" not in raw:
            raise _fail(source, f"steps[{i}]: needs 'do'")
        at = raw.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float) or at < 0:
            raise _fail(source, f"steps[{i}].at: must be a non-negative number of seconds")
        steps.append(Step(float(at), {k: v for k, v in raw.items() if k != "at"}))
    steps.sort(key=lambda s: s.at)
    last = steps[-1].at if steps else 0.0
    end = data.get("end", last + 3.0)
    if isinstance(end, bool) or not isinstance(end, int | float) or end < last:
        raise _fail(source, "end: must be a number of seconds after the last step")
    speed = data.get("speed")
    if speed is not None and (
        isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0
    ):
        raise _fail(source, "speed: must be a positive number")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise _fail(source, "config: must be a table")
    return Scenario(
        name=str(data.get("name", Path(source).stem)),
        steps=steps,
        end=float(end),
        speed=float(speed) if speed is not None else None,
        config=config,
    )


def read_scenario_toml(
    path: Path | None, *, default: str, what: str = "scenario"
) -> tuple[dict[str, Any], str]:
    """The TOML of a scenario file, or of the packaged ``scenarios/<default>``; and its name.

    Raises:
        ConfigError: The file cannot be read or is not TOML; the message names it.
    """
    if path is None:
        source = default
        text = resources.files("bodycam.sim").joinpath(f"scenarios/{default}").read_text()
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def load_scenario(path: Path | None) -> Scenario:
    """Read a scenario file, or the packaged short shift when ``path`` is None."""
    data, source = read_scenario_toml(path, default="short-shift.toml")
    return parse_scenario(data, source=source)
