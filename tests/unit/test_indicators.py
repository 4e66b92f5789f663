"""The indicator scheduler: exact LED and beep timelines, all from config."""

from __future__ import annotations

import itertools
import random

import pytest

from bodycam.daemon.config import Config, IndicatorsSection
from bodycam.daemon.indicators import (
    BeepPattern,
    Edge,
    IndicatorScheduler,
    LedPattern,
    Output,
    beep_steps,
    timeline,
)

CFG = Config().indicators
WARNINGS = [
    BeepPattern.LOW_BATTERY,
    BeepPattern.STORAGE_FULL,
    BeepPattern.CLOCK_NOT_SET,
    BeepPattern.CAMERA_FAULT,
    BeepPattern.WRITE_ERROR,
]


def assert_edges(actual: list[Edge], expected: list[tuple[float, Output, bool]]) -> None:
    """Same outputs and states in the same order, times equal to float rounding."""
    assert [(e.output, e.on) for e in actual] == [(o, on) for _, o, on in expected]
    assert [e.t for e in actual] == [t for t, _, _ in expected]


def intervals(edges: list[Edge], output: Output) -> list[tuple[float, float]]:
    """(on, off) pairs of one output, rounded to microseconds; a final unpaired "on" is left out.

    The edges must alternate, starting with "on".
    """
    mine = [e for e in edges if e.output == output]
    assert [e.on for e in mine] == [i % 2 == 0 for i in range(len(mine))]
    return [(round(a.t, 6), round(b.t, 6)) for a, b in zip(mine[::2], mine[1::2], strict=False)]


def beeps_of(pattern: BeepPattern, t: float = 0.0) -> list[tuple[float, float]]:
    return intervals(timeline([(t, pattern)], t + 60, CFG), "beeper")


def test_recording_start_timeline() -> None:
    edges = timeline([(10.0, LedPattern.RECORDING), (10.0, BeepPattern.START)], 12.0, CFG)
    assert_edges(
        edges,
        [
            (10.0, "red", True),  # the red LED lights first, at once
            (10.0, "beeper", True),
            (10.1, "beeper", False),
            (10.25, "red", False),
            (10.25, "beeper", True),
            (10.35, "beeper", False),
            (11.0, "red", True),
            (11.25, "red", False),
            (12.0, "red", True),
        ],
    )


def test_buffering_blink_timeline() -> None:
    edges = timeline([(5.0, LedPattern.BUFFERING)], 11.0, CFG)
    assert intervals(edges, "green")[:2] == [(5.0, 5.1), (8.0, 8.1)]
    assert edges[-1] == Edge(11.0, "green", on=True)


def test_reminder_and_stop_timelines() -> None:
    assert beeps_of(BeepPattern.REMINDER, 130.0) == [(130.0, 130.1), (130.25, 130.35)]
    assert beeps_of(BeepPattern.STOP, 200.0) == [(200.0, 200.8)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (BeepPattern.LOW_BATTERY, [(0.0, 0.1), (0.25, 0.35), (0.5, 0.6), (0.75, 0.85)]),
        (BeepPattern.STORAGE_FULL, [(0.0, 0.1), (0.25, 0.35), (0.5, 0.6)]),
        (
            BeepPattern.CLOCK_NOT_SET,
            [(0.0, 0.1), (0.25, 0.35), (0.5, 0.6), (0.75, 0.85), (1.0, 1.1)],
        ),
        (BeepPattern.CAMERA_FAULT, [(0.0, 0.8), (0.95, 1.05), (1.2, 2.0)]),
        (BeepPattern.WRITE_ERROR, [(0.0, 0.1), (0.25, 1.05), (1.2, 1.3)]),
    ],
)
def test_warning_timelines(pattern: BeepPattern, expected: list[tuple[float, float]]) -> None:
    assert beeps_of(pattern) == expected


def test_counts_come_from_config() -> None:
    cfg = Config().with_overrides(indicators={"low_battery_beeps": 2, "beep_s": 0.2}).indicators
    steps = beep_steps(BeepPattern.LOW_BATTERY, cfg)
    assert [(round(on, 6), round(length, 6)) for on, length in steps] == [(0.0, 0.2), (0.35, 0.2)]


def test_warning_patterns_distinct_from_every_other_pattern() -> None:
    steps = {pattern: tuple(beep_steps(pattern, CFG)) for pattern in BeepPattern}
    for warning in WARNINGS:
        others = [steps[p] for p in BeepPattern if p != warning]
        assert steps[warning] not in others, warning


def test_patterns_queue_without_overlap() -> None:
    # Everything requested at once, plus one more while the queue is still playing.
    commands = [(0.0, pattern) for pattern in BeepPattern] + [(0.3, BeepPattern.STOP)]
    beeps = intervals(timeline(commands, 100.0, CFG), "beeper")
    expected_count = sum(len(beep_steps(p, CFG)) for p in BeepPattern) + 1
    assert len(beeps) == expected_count
    for (_, end), (start, _) in itertools.pairwise(beeps):
        assert start - end >= CFG.beep_gap_s - 1e-9


def test_next_pattern_waits_for_gap_after_previous() -> None:
    scheduler = IndicatorScheduler(CFG)
    assert scheduler.play(10.0, BeepPattern.START) == 10.0
    # START ends at 10.35; the next pattern starts one gap later, not at its request time.
    assert scheduler.play(10.05, BeepPattern.STOP) == pytest.approx(10.5)
    # Requested after the queue has drained: starts when asked.
    assert scheduler.play(20.0, BeepPattern.REMINDER) == 20.0


def test_zero_count_pattern_plays_nothing() -> None:
    cfg = Config().with_overrides(indicators={"start_beeps": 0}).indicators
    assert timeline([(1.0, BeepPattern.START)], 10.0, cfg) == []


def test_led_switch_turns_the_other_off() -> None:
    commands = [(0.0, LedPattern.RECORDING), (0.1, LedPattern.BUFFERING)]
    assert_edges(
        timeline(commands, 0.5, CFG),
        [(0.0, "red", True), (0.1, "red", False), (0.1, "green", True), (0.2, "green", False)],
    )
    commands = [(0.0, LedPattern.BUFFERING), (0.05, LedPattern.RECORDING)]
    assert_edges(
        timeline(commands, 0.1, CFG),
        [(0.0, "green", True), (0.05, "green", False), (0.05, "red", True)],
    )


def test_led_off_stops_the_blink() -> None:
    scheduler = IndicatorScheduler(CFG)
    scheduler.set_led(0.0, LedPattern.RECORDING)
    scheduler.set_led(0.1, LedPattern.OFF)
    assert_edges(scheduler.due(10.0), [(0.0, "red", True), (0.1, "red", False)])
    assert scheduler.next_time() is None


def test_switch_while_dark_emits_no_redundant_off() -> None:
    # At 0.5 the red LED is already off (0.25-1.0): no second "off" edge.
    edges = timeline([(0.0, LedPattern.RECORDING), (0.5, LedPattern.BUFFERING)], 0.55, CFG)
    assert_edges(edges, [(0.0, "red", True), (0.25, "red", False), (0.5, "green", True)])


def test_setting_the_same_pattern_keeps_its_phase() -> None:
    commands = [(0.0, LedPattern.RECORDING), (0.5, LedPattern.RECORDING)]
    reds = intervals(timeline(commands, 1.9, CFG), "red")
    assert reds == [(0.0, 0.25), (1.0, 1.25)]


def test_due_consumes_and_next_time_tracks() -> None:
    scheduler = IndicatorScheduler(CFG)
    assert scheduler.next_time() is None
    scheduler.set_led(10.0, LedPattern.RECORDING)
    scheduler.play(10.0, BeepPattern.STOP)
    assert scheduler.next_time() == 10.0
    assert_edges(scheduler.due(10.0), [(10.0, "red", True), (10.0, "beeper", True)])
    assert scheduler.due(10.0) == []
    assert scheduler.next_time() == 10.25
    assert_edges(scheduler.due(10.9), [(10.25, "red", False), (10.8, "beeper", False)])
    assert scheduler.next_time() == 11.0


def test_blink_does_not_drift_over_a_long_recording() -> None:
    period = 0.1  # not exact in binary: accumulating it would drift
    cfg = (
        Config()
        .with_overrides(indicators={"recording_led_period_s": period, "recording_led_on_s": 0.05})
        .indicators
    )
    scheduler = IndicatorScheduler(cfg)
    scheduler.set_led(3.0, LedPattern.RECORDING)
    cycles = 4 * 3600 * 10
    for _ in range(2 * cycles):
        scheduler.due(scheduler.next_time() or 0.0)
    assert scheduler.next_time() == 3.0 + cycles * period


def test_silence_cuts_the_beeper_and_drops_the_queue() -> None:
    scheduler = IndicatorScheduler(CFG)
    scheduler.play(0.0, BeepPattern.CAMERA_FAULT)
    scheduler.play(0.0, BeepPattern.LOW_BATTERY)
    scheduler.silence(0.5)
    assert_edges(scheduler.due(100.0), [(0.0, "beeper", True), (0.5, "beeper", False)])
    assert scheduler.play(0.6, BeepPattern.STOP) == 0.6


def test_polling_at_any_times_gives_the_same_timeline() -> None:
    commands: list[tuple[float, LedPattern | BeepPattern]] = [
        (1.0, LedPattern.BUFFERING),
        (4.2, LedPattern.RECORDING),
        (4.2, BeepPattern.START),
        (4.3, BeepPattern.LOW_BATTERY),
        (7.77, BeepPattern.STOP),
        (7.77, LedPattern.BUFFERING),
        (9.0, LedPattern.OFF),
        (9.5, BeepPattern.WRITE_ERROR),
    ]
    expected = timeline(commands, 20.0, CFG)
    rng = random.Random(7)
    for _ in range(20):
        scheduler = IndicatorScheduler(CFG)
        polls = sorted(rng.uniform(0, 20) for _ in range(15))
        seen: list[Edge] = []
        pending = list(commands)
        for poll in [*polls, 20.0]:
            while pending and pending[0][0] <= poll:
                t, what = pending.pop(0)
                if isinstance(what, LedPattern):
                    scheduler.set_led(t, what)
                else:
                    scheduler.play(t, what)
            seen += scheduler.due(poll)
        assert seen == expected


def test_timeline_uses_given_config() -> None:
    cfg = IndicatorsSection(recording_led_on_s=0.5, recording_led_period_s=2.0)
    reds = intervals(timeline([(0.0, LedPattern.RECORDING)], 3.0, cfg), "red")
    assert reds == [(0.0, 0.5), (2.0, 2.5)]
