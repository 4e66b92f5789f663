"""The simulated board: every part of a camera, no hardware.

The LEDs, beeper and buttons are the real gpiozero drivers on MockFactory pins; the camera
encodes real H.264; the battery drains by load; the card has a quota. ``SimBoard.world``
plays the officer and the environment (buttons, holster, battery, dock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bodycam.daemon.config import Config
from bodycam.drivers.gpio_parts import build_gpio_parts, pin_map
from bodycam.drivers.interfaces import Board
from bodycam.sim.battery import SimBattery
from bodycam.sim.clock import SimClock
from bodycam.sim.dock_port import SimDockPort
from bodycam.sim.gpio import SimWorld, make_factory
from bodycam.sim.storage import SimStorage
from bodycam.sim.synthetic_camera import SyntheticCamera

if TYPE_CHECKING:
    from bodycam.sim.camera import SimCamera


@dataclass
class SimBoard(Board):
    """A Board with handles on the simulated world."""

    world: SimWorld = field(default=None)  # type: ignore[assignment]
    sim_clock: SimClock = field(default=None)  # type: ignore[assignment]
    sim_battery: SimBattery = field(default=None)  # type: ignore[assignment]
    sim_storage: SimStorage = field(default=None)  # type: ignore[assignment]
    sim_camera: SimCamera | SyntheticCamera = field(default=None)  # type: ignore[assignment]
    sim_dock: SimDockPort | None = None


def build_sim_board(config: Config, *, clock: SimClock | None = None) -> SimBoard:
    """Assemble the simulated camera described by ``config`` (its ``[sim]`` section)."""
    sim = config.sim
    clock = clock or SimClock(sim.speed, clock_set=sim.clock_set)
    factory = make_factory(clock)
    parts = build_gpio_parts(config.pins, debounce_s=config.buttons.debounce_s, pin_factory=factory)
    world = SimWorld(factory, pin_map(config.pins))
    if world.has("power_switch"):
        world.set_input("power_switch", sim.power_on)
    battery = SimBattery(clock, percent=sim.battery_percent, hours=sim.battery_hours)
    clips = config.clips_dir
    storage = SimStorage(clips, quota_bytes=int(sim.storage_quota_mb * 1024 * 1024))
    camera: SimCamera | SyntheticCamera
    if sim.camera == "synthetic":
        camera = SyntheticCamera(config.video.format(), clock)
    else:
        # Imported only here: the scene renderer pulls in numpy, which a synthetic
        # camera (benchmarks, large fleets) does not need.
        from bodycam.sim.camera import SimCamera

        camera = SimCamera(config.video.format(), clock, stall_after_s=sim.camera_stall_after_s)
    dock = SimDockPort(link_path=sim.dock_link) if sim.dock_port else None
    board = SimBoard(
        name="sim",
        camera=camera,
        red_led=parts.red_led,
        green_led=parts.green_led,
        beeper=parts.beeper,
        record_button=parts.record_button,
        battery=battery,
        clock=clock,
        storage=storage,
        triggers=parts.triggers,
        function_button=parts.function_button,
        power_switch=parts.power_switch,
        power_load=battery,
        dock=dock,
        world=world,
        sim_clock=clock,
        sim_battery=battery,
        sim_storage=storage,
        sim_camera=camera,
        sim_dock=dock,
    )
    board.faults.extend(parts.faults)
    board.closers.extend(parts.closers)
    if dock is not None:
        board.closers.append(dock.close)
    if sim.control_socket is not None:
        from bodycam.sim.world_server import serve_world

        socket_path = sim.control_socket
        board.services.append(("sim-world", lambda: serve_world(board, socket_path)))
    return board
