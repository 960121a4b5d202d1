"""Which followers of a partition leader are in sync (the ISR), from Raft progress samples.

A follower is *caught up at time t* if, at a sample taken at t, its match
index had reached the leader's last index **as of the previous sample**
(Kafka's rule: under continuous load a follower is never exactly at the
leader's end, but it keeps reaching where the end was a moment ago). It is
*in sync* if it was caught up within ``replica_lag_ms_max``. When a node
starts leading a group every member counts as caught up at that moment, so a
failover does not shrink the ISR by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _GroupSamples:
    term: int
    previous_last_index: int
    previous_time_ms: int
    caught_up_ms: dict[int, int] = field(default_factory=dict)


class IsrTracker:
    """Per-group caught-up times of followers, fed by periodic samples. Pure logic."""

    def __init__(self, replica_lag_ms_max: int) -> None:
        self._lag_ms_max = replica_lag_ms_max
        self._groups: dict[int, _GroupSamples] = {}

    def sample(self, group: int, term: int, last_index: int, matches: dict[int, int],
               now_ms: int) -> tuple[int, ...]:
        """Record a sample of a group this node leads; return its in-sync followers (sorted)."""
        samples = self._groups.get(group)
        if samples is None or samples.term != term:
            samples = _GroupSamples(term, last_index, now_ms, dict.fromkeys(matches, now_ms))
            self._groups[group] = samples
        for follower, match in matches.items():
            samples.caught_up_ms.setdefault(follower, now_ms)
            if match >= samples.previous_last_index:
                samples.caught_up_ms[follower] = now_ms
        for follower in list(samples.caught_up_ms):
            if follower not in matches:
                del samples.caught_up_ms[follower]
        samples.previous_last_index = last_index
        samples.previous_time_ms = now_ms
        return tuple(sorted(
            follower for follower, at in samples.caught_up_ms.items()
            if now_ms - at <= self._lag_ms_max
        ))

    def forget(self, group: int) -> None:
        """This node no longer leads ``group``."""
        self._groups.pop(group, None)
