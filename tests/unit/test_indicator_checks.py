"""The acceptance suite's LED and beeper judge: it passes the daemon's own timeline and
catches each way a camera could fail to tell the public it is recording."""

from __future__ import annotations

import pytest

from bodycam.daemon.config import IndicatorsSection
from bodycam.daemon.indicators import BeepPattern, Command, LedPattern, timeline
from tests.acceptance.indicator_checks import (
    check_recording_indicators,
    edges_from_samples,
    on_intervals,
)
from tests.acceptance.rig import OUTPUTS, Edges

CFG = IndicatorsSection()
PRESS, START, HOLD, STOP, END = 1.0, 1.3, 6.0, 7.0, 9.0


def recording_edges(cfg: IndicatorsSection = CFG) -> Edges:
    """What a correct camera shows: the scheduler's timeline for one recording."""
    commands: list[Command] = [
        (0.0, LedPattern.BUFFERING),
        (START, LedPattern.RECORDING),
        (START, BeepPattern.START),
        (STOP, LedPattern.BUFFERING),
        (STOP, BeepPattern.STOP),
    ]
    edges: Edges = {name: [(0.0, False)] for name in OUTPUTS}
    for edge in timeline(commands, END, cfg):
        edges[edge.output].append((edge.t, edge.on))
    return edges


def judge(edges: Edges, tolerance_s: float = 0.05) -> list[str]:
    return check_recording_indicators(
        edges, CFG, press_began=PRESS, stop_held_at=HOLD, end=END, tolerance_s=tolerance_s
    )


def test_a_correct_recording_passes() -> None:
    assert judge(recording_edges()) == []


def test_jitter_within_the_tolerance_passes() -> None:
    edges = recording_edges()
    edges["red"] = [(t + (0.02 if i % 2 else -0.02), on) for i, (t, on) in enumerate(edges["red"])]
    assert judge(edges) == []


def test_a_slow_blink_is_caught() -> None:
    slow = IndicatorsSection(recording_led_period_s=1.5)
    problems = judge({**recording_edges(), "red": recording_edges(slow)["red"]})
    assert any("apart" in p for p in problems), problems


def test_a_missing_start_beep_is_caught() -> None:
    one_beep = IndicatorsSection(start_beeps=1)
    problems = judge({**recording_edges(), "beeper": recording_edges(one_beep)["beeper"]})
    assert any("start beeps" in p for p in problems), problems


def test_no_light_at_all_is_caught() -> None:
    problems = judge({**recording_edges(), "red": [(0.0, False)]})
    assert problems
    assert "no red blink" in problems[0]


def test_a_red_light_that_keeps_blinking_after_the_stop_is_caught() -> None:
    edges = recording_edges()
    edges["red"] += [(8.0, True), (8.25, False)]
    problems = judge(edges)
    assert any("after the stop beep" in p for p in problems), problems


def test_a_silent_stop_is_caught() -> None:
    edges = recording_edges()
    edges["beeper"] = [(t, on) for t, on in edges["beeper"] if t < HOLD]
    problems = judge(edges)
    assert problems
    assert "long stop beep" in problems[0]


def test_a_capture_without_the_beeper_channel_says_so() -> None:
    edges = recording_edges()
    del edges["beeper"]
    assert judge(edges) == ["the capture has no 'beeper' channel"]


def test_sampled_rows_become_edges_relative_to_the_first_sample() -> None:
    # A logic analyser at 1 kHz: one row per sample, 0/1 per channel, unknown channels too.
    rows = [
        {
            "time": f"{5 + i / 1000:.6f}",
            "red": "1" if 100 <= i < 350 else "0",
            "beeper": "0",
            "D7": "1",
        }
        for i in range(1000)
    ]
    edges = edges_from_samples(rows)
    assert edges["red"] == [(0.0, False), (pytest.approx(0.1), True), (pytest.approx(0.35), False)]
    assert edges["beeper"] == [(0.0, False)]
    assert set(edges) == {"red", "beeper"}


def test_sample_times_with_units_are_read() -> None:
    rows = [
        {"time": "0 ms", "red": "0"},
        {"time": "250 ms", "red": "1"},
        {"time": "0.5s", "red": "0"},
    ]
    assert edges_from_samples(rows)["red"] == [(0.0, False), (0.25, True), (0.5, False)]


def test_a_tone_beeper_toggling_at_audio_rate_is_one_beep() -> None:
    # A 2 kHz PWM tone for 100 ms, as the analyser sees the beeper line.
    toggles = [(1.0 + i * 0.00025, i % 2 == 0) for i in range(400)]
    [(start, stop)] = on_intervals([(0.0, False), *toggles], end=2.0)
    assert start == 1.0
    assert stop == pytest.approx(1.09975)
