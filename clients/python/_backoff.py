"""Retry delays: exponential backoff with jitter.

The delay before retry ``attempt`` (0 for the first retry) is
``min(max_ms, initial_ms * 2**attempt)`` scaled by a random factor in
``[1 - jitter, 1]``, so clients that failed together do not retry together.
A broker's ``retry_after_ms`` hint (``ResourceExhausted``) is a floor.
Randomness comes from the ``random.Random`` passed in (seed it to replay).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from millpond.errors import MillpondError, ResourceExhausted


@dataclass(frozen=True, slots=True)
class Backoff:
    """A backoff schedule. ``jitter`` is the fraction of the delay that is random, in [0, 1]."""

    initial_ms: float
    max_ms: float
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.initial_ms <= self.max_ms:
            raise ValueError(f"need 0 <= initial_ms <= max_ms, got {self.initial_ms}, {self.max_ms}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def ceiling_ms(self, attempt: int) -> float:
        """The delay before retry ``attempt`` without jitter (its upper bound)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        return min(self.max_ms, self.initial_ms * 2.0 ** min(attempt, 64))

    def delay_ms(self, attempt: int, rng: random.Random, error: MillpondError | None = None) -> float:
        """The delay before retry ``attempt``, at least ``error.retry_after_ms`` if the broker gave one."""
        delay = self.ceiling_ms(attempt) * (1.0 - self.jitter * rng.random())
        if isinstance(error, ResourceExhausted):
            delay = max(delay, float(error.retry_after_ms))
        return delay
