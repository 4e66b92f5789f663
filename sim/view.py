"""The simulator's live view: what an officer would see and hear, in a terminal.

On a terminal it redraws a small panel in place; otherwise (CI logs, pipes) it prints one
line whenever something changes, so the same run reads well in both.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import deque
from typing import TextIO

from bodycam.daemon.status import DeviceStatus
from bodycam.dock.agent import DockReport, Progress
from bodycam.sim.board import SimBoard

_RED, _GREEN, _DIM, _BOLD, _RESET = "\033[31m", "\033[32m", "\033[2m", "\033[1m", "\033[0m"


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024 / 1024:,.0f} MiB"


class LiveView:
    def __init__(
        self, board: SimBoard, *, title: str, out: TextIO = sys.stdout, live: bool = True
    ) -> None:
        self._board = board
        self._title = title
        self._out = out
        self._live = live
        self._t0 = board.sim_clock.monotonic()
        self._lines_drawn = 0
        self._beeper = board.world.pin("beeper")
        self._beeps_seen = 0
        self._beeps_seen_until = float("-inf")
        self._last_line = ""
        self.log_tail: deque[str] = deque(maxlen=4)
        self.progress: Progress | None = None
        self.dock_report: DockReport | None = None

    def dock_progress(self, progress: Progress) -> None:
        """The dock's progress callback (called after every chunk)."""
        self.progress = progress

    def _dock_line(self) -> str | None:
        p = self.progress
        if p is None:
            return None
        if self.dock_report is not None:
            r = self.dock_report
            return (
                f"dock: {len(r.committed)} clip(s) verified and committed, "
                f"{len(r.rejected)} rejected{' (' + r.error + ')' if r.error else ''}"
            )
        return (
            f"dock: offloading clip {min(p.clips_done + 1, p.clips_total)}/{p.clips_total} "
            f"{p.current}  {p.bytes_done / 1e6:.1f} of {p.bytes_total / 1e6:.1f} MB"
        )

    def _beeps(self) -> tuple[int, bool]:
        # Walk back only over what changed since the last redraw: the timeline is long.
        new = 0
        newest = self._beeps_seen_until
        for t, on in reversed(self._beeper.timeline):
            if t <= self._beeps_seen_until:
                break
            newest = max(newest, t)
            new += on
        self._beeps_seen_until = newest
        self._beeps_seen += new
        return self._beeps_seen, new > 0

    def render(self, status: DeviceStatus) -> list[str]:
        board = self._board
        t = board.sim_clock.monotonic() - self._t0
        red = f"{_RED}●{_RESET}" if board.red_led.is_lit else f"{_DIM}○{_RESET}"
        green = f"{_GREEN}●{_RESET}" if board.green_led.is_lit else f"{_DIM}○{_RESET}"
        beeps, sounding = self._beeps()
        beeper = f"{_BOLD}♪ BEEP{_RESET}" if sounding or board.beeper.is_active else "      "
        warnings = ", ".join(status.warnings) or "-"
        battery = "?" if status.battery_percent is None else f"{status.battery_percent:.1f}%"
        charging = " charging" if status.charging else ""
        clip = status.clip_id[:8] if status.clip_id else "-"
        width = shutil.get_terminal_size((100, 20)).columns
        lines = [
            f"{_BOLD}bodycam sim{_RESET}  {self._title}  t=+{t:7.1f}s  x{board.sim_clock.speed:g}",
            f"state {_BOLD}{status.state:<10}{_RESET} LED red {red} green {green}  {beeper}"
            f"  beeps so far {beeps}",
            f"battery {battery}{charging}   card free {_mib(status.storage_free_bytes)}"
            f"   warnings: {warnings}",
            f"clip {clip}   segments sealed {status.segments_sealed}"
            f"   clips closed {status.clips_closed}",
        ]
        dock = self._dock_line()
        if dock is not None:
            lines.append(dock)
        lines += [f"{_DIM}{line[: width - 2]}{_RESET}" for line in self.log_tail]
        return lines

    def draw(self, status: DeviceStatus) -> None:
        if self._live:
            lines = self.render(status)
            up = f"\033[{self._lines_drawn}F" if self._lines_drawn else ""
            self._out.write(up + "".join(f"\033[2K{line}\n" for line in lines))
            self._lines_drawn = len(lines)
        else:
            t = self._board.sim_clock.monotonic() - self._t0
            red = "red" if self._board.red_led.is_lit else "-"
            line = (
                f"state={status.state} warnings={','.join(status.warnings) or '-'}"
                f" clip={(status.clip_id or '-')[:8]} segments={status.segments_sealed}"
                f" clips_closed={status.clips_closed}"
            )
            dock = self._dock_line()
            if dock is not None and self.progress is not None:
                line += f" | dock clips {self.progress.clips_done}/{self.progress.clips_total}"
                if self.dock_report is not None:
                    line = f"{line} | {dock}"
            if line != self._last_line:
                self._last_line = line
                self._out.write(f"[+{t:7.1f}s] {line} led={red}\n")
        self._out.flush()

    async def run(self, status: DeviceStatus) -> None:
        while True:
            self.draw(status)
            await asyncio.sleep(0.2)
