"""The polling helper of millpond.testing: returns the condition's value, or fails naming it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from millpond.testing.waiting import WaitTimeout, wait_until, wait_until_async


def test_returns_the_first_truthy_value_and_treats_errors_as_not_yet() -> None:
    calls = itertools.count()

    def condition() -> int:
        n = next(calls)
        if n < 2:
            raise ConnectionError("not up yet")
        return n if n >= 4 else 0

    assert wait_until(condition, 10, "the fourth call", interval_s=0.001) == 4


def test_times_out_with_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match="waiting for the impossible"):
        wait_until(lambda: False, 0.05, "the impossible", interval_s=0.01)


def test_async_variant() -> None:
    calls = itertools.count()

    async def condition() -> bool:
        return next(calls) >= 3

    assert asyncio.run(wait_until_async(condition, 10, "three calls", interval_s=0.001)) is True
    with pytest.raises(WaitTimeout):
        asyncio.run(wait_until_async(lambda: asyncio.sleep(0, result=False), 0.05, "never", 0.01))
