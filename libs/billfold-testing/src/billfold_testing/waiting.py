"""Waiting on a condition, never on a fixed sleep.

Tests that touch brokers, timers or other processes wait for what they expect to
become true, with a generous limit: on a loaded machine a condition may take longer,
and a long limit costs nothing when it comes true early.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Eventually = Callable[..., Awaitable[None]]


async def eventually(
    check: Callable[[], Awaitable[object] | object],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - a condition's limit, not an I/O timeout
    interval: float = 0.05,
) -> None:
    """Wait until ``check()`` (a plain or an async function) returns something true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
