"""The retry schedule: exponential, capped, jittered within bounds, floored by retry-after hints."""

from __future__ import annotations

import random

import pytest

from millpond.client._backoff import Backoff
from millpond.errors import ResourceExhausted, Unavailable


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    backoff = Backoff(initial_ms=50, max_ms=2000)
    assert [backoff.ceiling_ms(a) for a in range(8)] == [50, 100, 200, 400, 800, 1600, 2000, 2000]
    assert backoff.ceiling_ms(10_000) == 2000  # no overflow for absurd attempt counts


def test_jitter_stays_within_its_fraction_of_the_ceiling() -> None:
    backoff = Backoff(initial_ms=100, max_ms=1000, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(6):
        delays = [backoff.delay_ms(attempt, rng) for _ in range(200)]
        ceiling = backoff.ceiling_ms(attempt)
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling * 0.3  # actually spread out


def test_the_same_seed_gives_the_same_schedule() -> None:
    backoff = Backoff(initial_ms=10, max_ms=500)
    first = [backoff.delay_ms(a, random.Random(3)) for a in range(5)]
    assert first == [backoff.delay_ms(a, random.Random(3)) for a in range(5)]


def test_no_jitter_gives_the_ceiling() -> None:
    backoff = Backoff(initial_ms=10, max_ms=500, jitter=0)
    assert backoff.delay_ms(3, random.Random()) == 80


def test_a_retry_after_hint_is_a_floor() -> None:
    backoff = Backoff(initial_ms=10, max_ms=500)
    rng = random.Random(1)
    assert backoff.delay_ms(0, rng, ResourceExhausted("full", retry_after_ms=750)) == 750
    assert backoff.delay_ms(0, rng, Unavailable("x")) <= 10


@pytest.mark.parametrize(("initial", "maximum", "jitter"), [(-1, 10, 0.5), (20, 10, 0.5), (1, 10, 1.5)])
def test_bad_schedules_are_refused(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, jitter)
