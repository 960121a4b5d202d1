"""Waiting on a condition, with a deadline: the one polling helper for tests and tools.

Tests that drive real processes cannot be told when a cluster has converged
(a leader elected, a node back in the ISR); they poll a condition until it
holds, and fail with a message naming what they waited for once a generous
deadline passes. The poll interval only bounds how soon success is noticed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.05


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError, so tests fail)."""


def wait_until(condition: Callable[[], T], timeout_s: float, what: str,
               interval_s: float = POLL_INTERVAL_S) -> T:
    """Call ``condition`` until it returns something truthy and return that; an exception from
    ``condition`` counts as "not yet". Raises :class:`WaitTimeout` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
        except Exception as exc:  # the system is in flux: keep polling
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s} s waiting for {what}; "
                              f"last error: {last_error!r}")
        time.sleep(interval_s)


async def wait_until_async(condition: Callable[[], Awaitable[T]], timeout_s: float, what: str,
                           interval_s: float = POLL_INTERVAL_S) -> T:
    """:func:`wait_until` for a coroutine condition, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = await condition()
        except Exception as exc:  # the system is in flux: keep polling
            last_error = exc
        else:
            if result:
                return result
        if loop.time() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s} s waiting for {what}; "
                              f"last error: {last_error!r}")
        await asyncio.sleep(interval_s)
