"""What an officer's hand does, written once for every rig, in real seconds."""

from __future__ import annotations

import logging
import time

from tests.acceptance.rig import CameraRig, Edges, MissingPart, RigError

log = logging.getLogger(__name__)

# Human timing for a double press: press, let go, press again well inside the window.
PRESS_S = 0.12
GAP_S = 0.2


def double_press(rig: CameraRig) -> None:
    """Start recording: two short presses inside the double-press window."""
    for _ in range(2):
        rig.set_button(True)
        time.sleep(PRESS_S)
        rig.set_button(False)
        time.sleep(GAP_S)


def hold_to_stop(rig: CameraRig) -> None:
    """Stop recording: hold the button a little longer than ``buttons.hold_stop_s``."""
    rig.set_button(True)
    try:
        time.sleep(rig.config.buttons.hold_stop_s + 0.4)
    finally:
        rig.set_button(False)


def record_clip(rig: CameraRig, *, seconds: float = 2.0) -> None:
    """Record one short clip with the record button, and wait for it to close.

    Raises:
        MissingPart: The rig cannot press the button.
    """
    double_press(rig)
    time.sleep(seconds)
    hold_to_stop(rig)
    time.sleep(rig.config.buttons.double_press_s + 0.5)  # the clip closes


def watch_for(rig: CameraRig, seconds: float) -> Edges:
    """Capture the outputs for ``seconds``."""
    watch = rig.watch_indicators()
    try:
        time.sleep(seconds)
    finally:
        edges = watch.stop()
    return edges


def wait_ready(rig: CameraRig) -> None:
    """Wait until the camera shows it is ready (the green buffering blink).

    A rig that cannot watch the LEDs waits its whole boot time instead.

    Raises:
        RigError: No ready blink within ``timeouts.boot_s``.
    """
    deadline = time.monotonic() + rig.timeouts.boot_s
    window = rig.config.indicators.buffering_led_period_s + 0.5
    while time.monotonic() < deadline:
        try:
            edges = watch_for(rig, window)
        except MissingPart as exc:
            log.info("no probe (%s): waiting the whole boot time", exc)
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        if any(on for _, on in edges.get("green", [])):
            return
    raise RigError(
        f"{rig.name}: no ready blink (green LED) within {rig.timeouts.boot_s:.0f} s of power-on"
    )
