"""The telemetry connection stops when asked, even when an await swallowed the request."""

from __future__ import annotations

import asyncio

import pytest

from bodycam.daemon.telemetry.connection import _raise_if_cancelled, _wait_for


async def test_a_cancel_an_await_swallowed_still_ends_the_loop() -> None:
    swallowed = asyncio.Event()

    async def pump_like() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # What Python 3.11's asyncio.wait_for (inside aiomqtt's publish) does when its
            # future completes in the same turn as the cancel: it returns as if nothing came.
            swallowed.set()
        _raise_if_cancelled()
        await asyncio.sleep(3600)  # without the check, the loop would wait here for ever

    task = asyncio.create_task(pump_like())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):  # a hang guard only
            await task
    assert swallowed.is_set()


async def test_a_task_nobody_cancelled_goes_on() -> None:
    _raise_if_cancelled()  # returns: nothing was asked


async def test_wait_for_returns_on_the_event_or_the_deadline_and_lets_a_cancel_through() -> None:
    event = asyncio.Event()
    event.set()
    await _wait_for(event, 3600)  # already set: at once
    await _wait_for(asyncio.Event(), 0.01)  # never set: the deadline
    waiting = asyncio.create_task(_wait_for(asyncio.Event(), 3600))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):  # a hang guard only
            await waiting
