"""What a dock session may do to the running camera, in one place.

The session answers the dock; these hooks reach into the device: set its clock (and tell the
state machine, so the "clock not set" warning clears), store a verified policy, report
battery and storage, and note deletions in the device status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from bodycam.daemon.dock.clock_trust import CLOCK_TRUST_FILE, ClockTrust
from bodycam.daemon.dock.policy import SignedPolicy, load_signed_policy, save_signed_policy
from bodycam.daemon.dock.session import TimeChange
from bodycam.daemon.evidence.verify import is_clip_dir
from bodycam.daemon.recorder import Recorder
from bodycam.daemon.status import DeviceStatus
from bodycam.drivers.interfaces import Board, HardwareError
from bodycam.drivers.link.errors import ProtocolError
from bodycam.drivers.link.messages import ErrorCode, Status

_log = logging.getLogger(__name__)

# LIST waits this long (real seconds) for a clip that docking interrupted to be sealed.
_SEAL_WAIT_S = 30.0


class DeviceDockHooks:
    """Implements ``CameraHooks`` for :class:`bodycam.daemon.device.Device`."""

    def __init__(
        self,
        board: Board,
        recorder: Recorder,
        status: DeviceStatus,
        state_dir: Path,
        clips_dir: Path,
        *,
        on_clock_set: Callable[[], None],
        on_committed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.board = board
        self.recorder = recorder
        self.device_status = status
        self.state_dir = state_dir
        self.clips_dir = clips_dir
        self.on_clock_set = on_clock_set
        self.on_committed = on_committed
        self.current_policy_serial = 0
        # Who set the clock and whether a second dock confirmed it, kept across restarts;
        # the device hands it to DockService (``clock_trust=hooks.clock_trust``).
        self.clock_trust = ClockTrust(state_dir / CLOCK_TRUST_FILE)
        # Every new clip records who set the clock (and who confirmed it). Read at clip start
        # rather than pushed from set_time: the session records the TIME_SET in the trust
        # only after set_time returns.
        recorder.clock_source = self.clock_trust.source
        stored = None
        try:
            stored = load_signed_policy(state_dir, None)
        except Exception as exc:  # a damaged stored policy must not stop docking
            _log.warning("stored policy unreadable: %s", exc)
        if stored is not None:
            self.current_policy_serial = stored.policy.serial

    def utc_now(self) -> dt.datetime:
        return self.board.clock.utc_now()

    def clock_is_set(self) -> bool:
        return self.board.clock.is_set()

    def set_time(self, utc: dt.datetime) -> TimeChange:
        clock = self.board.clock
        previous, was_set = clock.utc_now(), clock.is_set()
        try:
            offset = clock.set_utc(utc)
        except HardwareError as exc:
            raise ProtocolError(ErrorCode.STORAGE_ERROR, f"cannot set the clock: {exc}") from None
        # Clips started from now on record how far the clock was off before this sync.
        self.recorder.clock_offset_s = offset
        self.device_status.clock_offset_s = offset
        _log.info("clock set by the dock: corrected by %+.3f s", offset)
        self.on_clock_set()
        return TimeChange(previous, offset, was_set)

    def apply_policy(self, signed: SignedPolicy) -> bool:
        serial = signed.policy.serial
        if serial <= self.current_policy_serial:
            _log.info("policy %d not newer than %d: kept", serial, self.current_policy_serial)
            return False
        try:
            save_signed_policy(self.state_dir, signed)
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.STORAGE_ERROR, f"cannot store the policy: {exc.strerror}"
            ) from None
        self.current_policy_serial = serial
        # Applied at the next start of the daemon: recorder, ring and indicators are built
        # from the config once (docs/protocol.md, CONFIG_PUSH).
        _log.info("policy %d stored; in force from the next start", serial)
        return True

    def status(self) -> Status:
        try:
            reading = self.board.battery.read()
            battery = round(reading.percent) if reading.present else 255
            charging = reading.charging
        except (HardwareError, OSError):
            # A fuel gauge that is missing must not fail the dock's status request.
            battery, charging = 255, False
        usage = self.board.storage.usage()
        clips = 0
        if self.clips_dir.is_dir():
            clips = sum(1 for child in self.clips_dir.iterdir() if is_clip_dir(child))
        return Status(
            state=self.device_status.state[:32],
            battery_percent=battery,
            charging=charging,
            storage_total=usage.total_bytes,
            storage_free=usage.free_bytes,
            clips=clips,
            clock_set=self.board.clock.is_set(),
            firmware=self.device_status.firmware[:64],
        )

    def committed(self, clip_id: str, dock_id: str) -> None:
        self.device_status.clips_offloaded += 1
        _log.info(
            "clip %s verified and committed by dock %s: deleted from the card", clip_id, dock_id
        )
        if self.on_committed is not None:
            self.on_committed(clip_id, dock_id)

    async def wait_sealed(self) -> None:
        """Until no clip is open: docking stops a recording, and its seal takes a moment."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SEAL_WAIT_S
        while self.recorder.recording or self.device_status.clip_id is not None:
            if loop.time() > deadline:
                raise ProtocolError(ErrorCode.BUSY, "a clip is still being sealed; ask again")
            await asyncio.sleep(0.05)
