"""Run one Telemetry publisher as its own process, until it is killed (last-will test).

Usage: ``python -m tests.telemetry_helpers.publisher_proc URL DEVICE_ID KEEPALIVE_S``.
Prints ``connected`` on stdout once the broker has its ``online=1``.
"""

from __future__ import annotations

import asyncio
import sys

from bodycam.daemon.telemetry import CameraTopics, Telemetry, TelemetrySettings, parse_broker_url
from tests.mqtt_fixtures import eventually


async def main(url: str, device_id: str, keepalive_s: int) -> None:
    """Publish a state and wait, connected, until the process dies."""
    settings = TelemetrySettings(
        broker=parse_broker_url(url), client_id=device_id, keepalive_s=keepalive_s
    )
    telemetry = Telemetry(settings, CameraTopics(device_id))
    telemetry.set_state({"state": "IDLE", "pid_test": True})
    task = asyncio.create_task(telemetry.run(), name="telemetry")
    # online=1 and the state, both acknowledged.
    if not await eventually(lambda: telemetry.stats.published >= 2, 10):
        raise SystemExit(f"not connected: {telemetry.stats}")
    print("connected", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
