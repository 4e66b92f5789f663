"""Reading and judging LED and beeper captures, the same way for every rig.

A bench's logic analyser hands back samples (sigrok's CSV rows: a time and one column per
channel); the simulator hands back edges. Both become :data:`~tests.acceptance.rig.Edges`,
then on-intervals, and the checks compare those with the camera's ``[indicators]`` config.
A tone beeper's line toggles at audio rate while it sounds, so gaps shorter than
``merge_gap_s`` count as one sounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from bodycam.daemon.config import IndicatorsSection
from tests.acceptance.rig import OUTPUTS, Edges

Interval = tuple[float, float]

# A PWM tone of a few hundred Hz and up toggles faster than this; an LED blink never does.
MERGE_GAP_S = 0.01


def _seconds(text: str) -> float:
    # sigrok writes bare seconds; tolerate a unit suffix should a version add one.
    value = text.strip()
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * scale
    return float(value)


def edges_from_samples(rows: Iterable[Mapping[str, str]]) -> Edges:
    """Turn sampled rows (``{"time": "0.001", "red": "1", ...}``) into edges.

    Channels other than the known outputs are ignored; a missing output has no entry.
    """
    edges: Edges = {}
    t0: float | None = None
    for row in rows:
        t = _seconds(row["time"])
        if t0 is None:
            t0 = t
        for name in OUTPUTS:
            raw = row.get(name)
            if raw is None:
                continue
            on = raw.strip() not in ("0", "")
            line = edges.setdefault(name, [])
            if not line or line[-1][1] != on:
                line.append((t - t0, on))
    return edges


def on_intervals(
    edges: list[tuple[float, bool]], *, end: float, merge_gap_s: float = MERGE_GAP_S
) -> list[Interval]:
    """The (start, stop) times an output was on; one still on at ``end`` stops there."""
    intervals: list[Interval] = []
    start: float | None = None
    for t, on in edges:
        if on and start is None:
            start = t
        elif not on and start is not None:
            intervals.append((start, t))
            start = None
    if start is not None:
        intervals.append((start, end))
    merged: list[Interval] = []
    for interval in intervals:
        if merged and interval[0] - merged[-1][1] < merge_gap_s:
            merged[-1] = (merged[-1][0], interval[1])
        else:
            merged.append(interval)
    return merged


def _near(value: float, expected: float, tolerance: float) -> bool:
    return abs(value - expected) <= tolerance


def _check_blinks(blinks: list[Interval], cfg: IndicatorsSection, tol: float) -> list[str]:
    problems: list[str] = []
    on_s, period_s = cfg.recording_led_on_s, cfg.recording_led_period_s
    for start, stop in blinks[:-1]:  # the last one may be cut short by the stop
        if not _near(stop - start, on_s, tol):
            problems.append(f"red blink at {start:.2f} s lasted {stop - start:.3f} s, not {on_s}")
    for (a, _), (b, _) in itertools.pairwise(blinks):
        if not _near(b - a, period_s, tol):
            problems.append(
                f"red blinks at {a:.2f} and {b:.2f} s are {b - a:.3f} s apart, not {period_s}"
            )
    return problems


def _check_start_beeps(beeps: list[Interval], cfg: IndicatorsSection, tol: float) -> list[str]:
    problems: list[str] = []
    if len(beeps) != cfg.start_beeps:
        problems.append(f"{len(beeps)} start beeps, expected {cfg.start_beeps}: {beeps}")
    for start, stop in beeps:
        if not _near(stop - start, cfg.beep_s, tol):
            problems.append(
                f"start beep at {start:.2f} s lasted {stop - start:.3f} s, not {cfg.beep_s}"
            )
    return problems


def check_recording_indicators(
    edges: Edges,
    cfg: IndicatorsSection,
    *,
    press_began: float,
    stop_held_at: float,
    end: float,
    tolerance_s: float,
) -> list[str]:
    """What is wrong with a capture of one recording (empty when the public was told).

    The capture started before the double press (begun at ``press_began``) and ran from
    the stop hold (begun at ``stop_held_at``) to ``end``, all in capture seconds.
    """
    missing = [
        f"the capture has no {name!r} channel" for name in ("red", "beeper") if name not in edges
    ]
    if missing:
        return missing
    tol = tolerance_s
    red = on_intervals(edges["red"], end=end)
    beeps = on_intervals(edges["beeper"], end=end)
    # Stop: one long beep once the hold is recognised.
    after_hold = [b for b in beeps if b[0] >= stop_held_at]
    long_beeps = [b for b in after_hold if _near(b[1] - b[0], cfg.long_beep_s, tol)]
    if len(long_beeps) != 1:
        return [f"expected one long stop beep after the hold, heard {after_hold} (red: {red})"]
    stopped = long_beeps[0][0]
    # Recording: the camera reacts to the double press within 1.5 s, blinking red.
    blinks = [b for b in red if press_began <= b[0] < stopped]
    if not blinks or blinks[0][0] > press_began + 1.5:
        return [f"no red blink within 1.5 s of the double press (red: {red})"]
    started = blinks[0][0]
    problems: list[str] = []
    expected_blinks = int((stopped - started) / cfg.recording_led_period_s)
    if len(blinks) < expected_blinks:
        problems.append(f"{len(blinks)} red blinks while recording, expected {expected_blinks}")
    problems += _check_blinks(blinks, cfg, tol)
    problems += _check_start_beeps(
        [b for b in beeps if started - tol <= b[0] < started + 1.0], cfg, tol
    )
    late = [b for b in red if b[0] > stopped + tol]
    if late:
        problems.append(f"red LED still blinking after the stop beep: {late}")
    return problems
