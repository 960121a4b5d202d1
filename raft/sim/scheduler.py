"""Virtual time: a queue of timed actions, run in (time, insertion order).

Nothing in the simulator reads a clock. Every delay (message latency, disk
sync, a node's tick, a fault's start and end) is an action scheduled at a
virtual millisecond; actions due at the same millisecond run in the order they
were scheduled, so a run depends only on the seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventBudgetExhausted(Exception):
    """More actions ran than the run's budget allows: a message storm or a livelock."""


class Scheduler:
    """A priority queue of ``(time_ms, sequence, action, args)``; ``now`` is the virtual time.

    ``events_max`` bounds the actions one run may execute, so a run whose
    messages multiply without end stops (and is reported) instead of eating
    the machine.
    """

    def __init__(self, events_max: int) -> None:
        self.now = 0
        self.events_run = 0
        self.events_max = events_max
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = 0

    def at(self, time_ms: int, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` at virtual time ``time_ms`` (never before now)."""
        self._sequence += 1
        heapq.heappush(self._queue, (max(time_ms, self.now), self._sequence, action, args))

    def after(self, delay_ms: int, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` ``delay_ms`` virtual milliseconds from now."""
        self.at(self.now + delay_ms, action, *args)

    def run_until(self, deadline_ms: int, done: Callable[[], bool] | None = None) -> None:
        """Run every action due before ``deadline_ms``; stop early once ``done()`` is true.

        ``done`` is evaluated after each action. On return ``now`` is the
        deadline, or the time of the action after which ``done()`` held.
        Raises :class:`EventBudgetExhausted` past ``events_max`` actions.
        """
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] < deadline_ms:
            time_ms, _, action, args = pop(queue)
            self.now = time_ms
            self.events_run += 1
            if self.events_run > self.events_max:
                raise EventBudgetExhausted(
                    f"more than {self.events_max} events by {time_ms}ms")
            action(*args)
            if done is not None and done():
                return
        self.now = deadline_ms
