"""The indicator scheduler: LED blink and beep patterns as a pure timeline of edges.

Every indicator timing in the daemon comes from here. The scheduler takes commands stamped
with device-clock seconds (``set_led``, ``play``) and hands out the resulting on/off edges
with ``due(now)``; it never reads a clock or sleeps, so a whole timeline can be checked in a
unit test (``timeline``) and the async player (``indicator_player``) only applies edges.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

from bodycam.daemon.config import IndicatorsSection

Output = Literal["red", "green", "beeper"]
OUTPUTS: tuple[Output, ...] = get_args(Output)


class LedPattern(StrEnum):
    """What the LEDs show: nothing, a green ready blink or a red recording blink."""

    OFF = "off"
    BUFFERING = "buffering"
    RECORDING = "recording"


class BeepPattern(StrEnum):
    """One play of a beeper pattern (the state machine decides when and how often)."""

    START = "start"
    REMINDER = "reminder"
    STOP = "stop"
    LOW_BATTERY = "low_battery"
    STORAGE_FULL = "storage_full"
    CLOCK_NOT_SET = "clock_not_set"
    CAMERA_FAULT = "camera_fault"
    WRITE_ERROR = "write_error"
    HARDWARE_FAULT = "hardware_fault"


@dataclass(frozen=True, slots=True)
class Edge:
    """One output switching on or off at device-clock time ``t``."""

    t: float
    output: Output
    on: bool


Command = tuple[float, LedPattern | BeepPattern]
"""A timestamped scheduler command, as ``timeline`` takes them."""

_LED_OUTPUT: dict[LedPattern, Output | None] = {
    LedPattern.OFF: None,
    LedPattern.BUFFERING: "green",
    LedPattern.RECORDING: "red",
}


def _beeps(durations: Iterable[float], gap: float) -> list[tuple[float, float]]:
    steps: list[tuple[float, float]] = []
    offset = 0.0
    for duration in durations:
        steps.append((offset, duration))
        offset += duration + gap
    return steps


def beep_steps(pattern: BeepPattern, cfg: IndicatorsSection) -> list[tuple[float, float]]:
    """The beeps of one play of ``pattern`` as (on-offset, duration) pairs.

    Short beeps are ``beep_s`` long and long ones ``long_beep_s``, ``beep_gap_s`` apart.
    The fault patterns use long beeps (two long ones for a missing part), so that they can
    never be mistaken for a count of short beeps (the other warnings) or the single long
    stop tone, whatever the counts are set to.

    Args:
        pattern: The pattern to expand.
        cfg: The ``indicators`` config section.

    Returns:
        The beeps in time order; empty when the pattern's count is configured to 0.
    """
    short, long_ = cfg.beep_s, cfg.long_beep_s
    durations: list[float]
    match pattern:
        case BeepPattern.START:
            durations = [short] * cfg.start_beeps
        case BeepPattern.REMINDER:
            durations = [short] * cfg.reminder_beeps
        case BeepPattern.STOP:
            durations = [long_]
        case BeepPattern.LOW_BATTERY:
            durations = [short] * cfg.low_battery_beeps
        case BeepPattern.STORAGE_FULL:
            durations = [short] * cfg.storage_full_beeps
        case BeepPattern.CLOCK_NOT_SET:
            durations = [short] * cfg.clock_not_set_beeps
        case BeepPattern.CAMERA_FAULT:
            durations = [long_, short, long_]
        case BeepPattern.WRITE_ERROR:
            durations = [short, long_, short]
        case BeepPattern.HARDWARE_FAULT:
            durations = [long_, long_]
    return _beeps(durations, cfg.beep_gap_s)


class _Blink:
    """An endless blink of one LED: on for ``on_s`` every ``period_s``, phase at ``anchor``."""

    def __init__(self, output: Output, anchor: float, on_s: float, period_s: float) -> None:
        self.output = output
        self._anchor = anchor
        self._on_s = on_s
        self._period_s = period_s
        self._cycle = 0
        self._next_on = True

    def peek(self) -> Edge:
        # Times are computed from the anchor, not accumulated, so hours of blinking do not
        # drift by float rounding.
        start = self._anchor + self._cycle * self._period_s
        t = start if self._next_on else start + self._on_s
        return Edge(t, self.output, self._next_on)

    def pop(self) -> Edge:
        edge = self.peek()
        if not self._next_on:
            self._cycle += 1
        self._next_on = not self._next_on
        return edge


class IndicatorScheduler:
    """Turns LED and beep commands into a time-ordered stream of output edges.

    Commands must come with non-decreasing times. Only one LED pattern is active at a time;
    beep patterns queue and never overlap.
    """

    def __init__(self, cfg: IndicatorsSection) -> None:
        self._cfg = cfg
        self._pending: list[tuple[float, int, int, Edge]] = []
        self._seq = itertools.count()
        self._led = LedPattern.OFF
        self._blink: _Blink | None = None
        self._beeper_free_at = -math.inf
        self._lit: dict[Output, bool] = dict.fromkeys(OUTPUTS, False)

    @property
    def led(self) -> LedPattern:
        """The LED pattern currently set."""
        return self._led

    @property
    def beeper_free_at(self) -> float:
        """The earliest time a newly played pattern may start (end of the queue + gap)."""
        return self._beeper_free_at

    def _push(self, edge: Edge) -> None:
        heapq.heappush(self._pending, (edge.t, _rank(edge), next(self._seq), edge))

    def set_led(self, t: float, pattern: LedPattern) -> None:
        """Switch the LED pattern at ``t``; a new blink lights at once (phase anchored at t).

        Setting the pattern already shown is a no-op, so its phase is not disturbed.
        """
        if pattern == self._led:
            return
        if self._blink is not None:
            # What the old pattern did before t still happened; keep it for due().
            while self._blink.peek().t < t:
                self._push(self._blink.pop())
            self._push(Edge(t, self._blink.output, on=False))
        self._led = pattern
        output, cfg = _LED_OUTPUT[pattern], self._cfg
        if output is None:
            self._blink = None
        elif pattern == LedPattern.RECORDING:
            self._blink = _Blink(output, t, cfg.recording_led_on_s, cfg.recording_led_period_s)
        else:
            self._blink = _Blink(output, t, cfg.buffering_led_on_s, cfg.buffering_led_period_s)

    def play(self, t: float, pattern: BeepPattern) -> float:
        """Queue one play of ``pattern`` at ``t`` or after the patterns already queued.

        Returns:
            The time the pattern starts.
        """
        start = max(t, self._beeper_free_at)
        steps = beep_steps(pattern, self._cfg)
        if not steps:
            return start
        for offset, duration in steps:
            self._push(Edge(start + offset, "beeper", on=True))
            self._push(Edge(start + offset + duration, "beeper", on=False))
        last_offset, last_duration = steps[-1]
        self._beeper_free_at = start + last_offset + last_duration + self._cfg.beep_gap_s
        return start

    def silence(self, t: float) -> None:
        """Cut the beeper at ``t`` and drop every beep queued from then on (stealth)."""
        self._pending = [item for item in self._pending if not _is_beep_from(item[-1], t)]
        heapq.heapify(self._pending)
        self._push(Edge(t, "beeper", on=False))
        self._beeper_free_at = t

    def assume_all_off(self) -> None:
        """Record that every output was switched off outside the scheduler (player stopped)."""
        self._lit = dict.fromkeys(OUTPUTS, False)

    def _next_edge(self) -> tuple[Edge, bool] | None:
        """The earliest edge and whether it is the blink's."""
        head = self._pending[0] if self._pending else None
        blink = self._blink.peek() if self._blink is not None else None
        if blink is not None and (head is None or (blink.t, _rank(blink)) < head[:2]):
            return blink, True
        return None if head is None else (head[-1], False)

    def due(self, now: float) -> list[Edge]:
        """Every edge at or before ``now``, in time order, consumed.

        Edges that would not change an output (it is already in that state) are dropped.
        """
        edges: list[Edge] = []
        while (nxt := self._next_edge()) is not None and nxt[0].t <= now:
            edge, from_blink = nxt
            if from_blink and self._blink is not None:
                self._blink.pop()
            else:
                heapq.heappop(self._pending)
            if self._lit[edge.output] != edge.on:
                self._lit[edge.output] = edge.on
                edges.append(edge)
        return edges

    def next_time(self) -> float | None:
        """When the next edge is due, or None if nothing is scheduled."""
        nxt = self._next_edge()
        return None if nxt is None else nxt[0].t


def _rank(edge: Edge) -> int:
    """Tie-break for edges at the same instant.

    An LED goes dark before the other lights (never both lit), and the LEDs change before
    the beeper (the light is the first feedback).
    """
    if edge.output == "beeper":
        return 2
    return 1 if edge.on else 0


def _is_beep_from(edge: Edge, t: float) -> bool:
    return edge.output == "beeper" and edge.t >= t


def timeline(commands: Iterable[Command], until: float, cfg: IndicatorsSection) -> list[Edge]:
    """Every edge a fresh scheduler produces for ``commands`` up to ``until``.

    Args:
        commands: (t, pattern) pairs; an LedPattern is ``set_led``, a BeepPattern ``play``.
            Applied in time order (stable for equal times).
        until: The last time of interest (inclusive).
        cfg: The ``indicators`` config section.

    Returns:
        The edges in time order, as a player would apply them.
    """
    scheduler = IndicatorScheduler(cfg)
    for t, what in sorted(commands, key=lambda command: command[0]):
        if isinstance(what, LedPattern):
            scheduler.set_led(t, what)
        else:
            scheduler.play(t, what)
    return scheduler.due(until)
