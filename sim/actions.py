"""What the outside world can do to a simulated camera, as plain data.

One vocabulary for scenario files, the control socket and tests: ``{"do": "double_press"}``,
``{"do": "hold", "seconds": 3.5}``, ``{"do": "battery", "percent": 4}``,
``{"do": "output_edges", "since": t}`` (the LED and beeper changes since ``t``, in the
board clock's seconds, as a logic analyser on the bench would see them)... Durations are in
simulated seconds. Unknown actions and bad arguments raise ActionError with a clear message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bodycam.sim.board import SimBoard

# Human timing for a double press: press, release and press again well inside the window.
PRESS_S = 0.12
GAP_S = 0.2


# The outputs a bench watches, by the names the acceptance suite uses, and their [pins] key.
_OUTPUT_PARTS = {"red": "red_led", "green": "green_led", "beeper": "beeper"}


class ActionError(ValueError):
    """An action the simulated world does not understand."""


def _number(action: dict[str, Any], key: str, *, low: float, high: float) -> float:
    value = action.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ActionError(f"{action.get('do')}: {key!r} must be a number")
    if not low <= value <= high:
        raise ActionError(f"{action.get('do')}: {key!r} must be between {low} and {high}")
    return float(value)


def _flag(action: dict[str, Any], key: str) -> bool:
    value = action.get(key)
    if not isinstance(value, bool):
        raise ActionError(f"{action.get('do')}: {key!r} must be true or false")
    return value


async def perform(board: SimBoard, action: dict[str, Any]) -> dict[str, Any]:
    """Carry out one action; returns what it observed (for queries) or an empty dict."""
    world, clock = board.world, board.sim_clock
    do = action.get("do")
    if do == "press":
        world.set_input("record_button", True)
    elif do == "release":
        world.set_input("record_button", False)
    elif do == "double_press":
        for _ in range(2):
            world.set_input("record_button", True)
            await clock.sleep(PRESS_S)
            world.set_input("record_button", False)
            await clock.sleep(GAP_S)
    elif do == "hold":
        seconds = _number(action, "seconds", low=0, high=600)
        world.set_input("record_button", True)
        await clock.sleep(seconds)
        world.set_input("record_button", False)
    elif do == "function":
        world.set_input("function_button", True)
        await clock.sleep(PRESS_S)
        world.set_input("function_button", False)
    elif do == "trigger":
        source = action.get("source")
        if f"trigger:{source}" not in ("trigger:holster", "trigger:vehicle"):
            raise ActionError("trigger: 'source' must be 'holster' or 'vehicle'")
        world.set_input(f"trigger:{source}", _flag(action, "active"))
    elif do == "power":
        world.set_input("power_switch", _flag(action, "on"))
    elif do == "battery":
        board.sim_battery.set_percent(_number(action, "percent", low=0, high=100))
    elif do == "charging":
        board.sim_battery.set_charging(_flag(action, "on"))
    elif do == "storage_quota_mb":
        quota = _number(action, "value", low=0, high=10_000_000)
        board.sim_storage.set_quota(int(quota * 1024 * 1024))
    elif do == "camera_stall":
        board.sim_camera.inject_stall()
    elif do == "dock":
        # The camera goes into the dock: it charges, and a serial port appears on the dock
        # host (a pseudo-terminal here). The answer says where, for whoever plays the dock.
        if board.sim_dock is None:
            raise ActionError("dock: this simulated board has no dock connector")
        board.sim_battery.set_charging(True)
        return {"port": board.sim_dock.plug()}
    elif do == "undock":
        if board.sim_dock is None:
            raise ActionError("undock: this simulated board has no dock connector")
        board.sim_dock.unplug()
        board.sim_battery.set_charging(False)
    elif do == "wait":
        await clock.sleep(_number(action, "seconds", low=0, high=86_400))
    elif do == "outputs":
        return {
            "red": board.red_led.is_lit,
            "green": board.green_led.is_lit,
            "beeper": board.beeper.is_active,
            "t": clock.monotonic(),
        }
    elif do == "output_edges":
        # What a logic analyser on the LED and beeper lines would have captured since ``t``.
        since = _number(action, "since", low=0, high=float("inf"))
        edges = {
            name: [[t, on] for t, on in world.pin(part).timeline_since(since)]
            for name, part in _OUTPUT_PARTS.items()
            if world.has(part)
        }
        return {"edges": edges, "t": clock.monotonic()}
    else:
        raise ActionError(f"unknown action {do!r}")
    return {}
