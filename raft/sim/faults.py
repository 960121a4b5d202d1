"""The fault model: every rate and range of one simulated run, drawn from its seed.

Each seed draws its own mix ("swarm testing"): some seeds drop many messages
and never crash, others crash leaders every few hundred milliseconds over a
perfect network. A fixed mix would leave whole regions of behaviour unvisited.
The Raft configuration is drawn too (pre-vote and check-quorum on or off,
tiny append and in-flight windows) so batching, flow control and
backtracking run on every seed.

A seed first draws a :class:`Profile`, a family of histories, then the rates
within it:

* ``mixed`` — every kind of fault is on in about half the seeds
  (:data:`FAULT_ON_PROBABILITY`), each at a random intensity;
* ``leader-churn`` — new leaders are isolated a few milliseconds after their
  election and crashed right after their first commit, voters crash right
  after granting a vote, nodes restart quickly, election timeouts are short
  and appends carry one entry. These
  are the histories of the Raft paper's Figure 8, where several leaders in a
  row fail before their own entries spread: the only histories in which a
  leader that commits an older term's entry by counting replicas loses it;
* ``stale-leader`` — long partitions cut established leaders off while
  clients keep reading: a deposed leader that still believes it leads must
  not serve a read.

Rates are "mean virtual milliseconds between two events"; 0 turns a fault off.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace

FAULT_ON_PROBABILITY = 0.5
"""In a ``mixed`` seed, the chance that each kind of fault happens at all."""

TICK_MS = 10
"""Virtual milliseconds between two ticks of one node (each node drifts a little)."""


class Profile(enum.Enum):
    """A family of histories a seed belongs to (see the module docstring)."""

    MIXED = "mixed"
    LEADER_CHURN = "leader-churn"
    STALE_LEADER = "stale-leader"


PROFILE_WEIGHTS = ((Profile.MIXED, 4), (Profile.LEADER_CHURN, 4), (Profile.STALE_LEADER, 2))
"""How often each profile is drawn, out of the sum of the weights."""


@dataclass(frozen=True, slots=True)
class FaultModel:
    """Rates and ranges of every fault, workload and Raft setting for one seed."""

    profile: Profile
    # network
    drop_probability: float
    duplicate_probability: float
    delay_ms_max: int
    reorder_probability: float
    reorder_delay_ms_max: int
    partition_every_ms: int
    partition_ms_max: int
    # nodes and disks
    disk_sync_ms_max: int
    crash_every_ms: int
    crash_leader_probability: float
    crash_many_probability: float
    crash_voter_probability: float
    restart_ms_max: int
    compact_probability: float
    lazy_sync_ms_max: int
    # faults aimed at new leaders
    new_leader_fault_ms_max: int
    crash_new_leader_probability: float
    isolate_new_leader_probability: float
    crash_after_first_commit_probability: float
    # operators and clients
    transfer_every_ms: int
    membership_every_ms: int
    propose_every_ms: int
    read_every_ms: int
    # Raft configuration
    pre_vote: bool
    check_quorum: bool
    election_ticks: int
    heartbeat_ticks: int
    msg_entries_max: int
    inflight_msgs_max: int

    @classmethod
    def draw(cls, rng: random.Random) -> FaultModel:
        """Draw a profile, then a fault mix within it; every value comes from ``rng`` in a
        fixed order."""
        choice = rng.choice
        profiles = [profile for profile, weight in PROFILE_WEIGHTS for _ in range(weight)]
        profile = choice(profiles)

        def some(*values: float) -> float:
            return choice(values) if rng.random() < FAULT_ON_PROBABILITY else 0

        def rarely(*values: float) -> float:
            return choice(values) if rng.random() < FAULT_ON_PROBABILITY / 2 else 0

        election_ticks = choice((5, 10))
        mixed = cls(
            profile=profile,
            drop_probability=some(0.02, 0.05, 0.1, 0.25),
            duplicate_probability=some(0.02, 0.1),
            delay_ms_max=choice((1, 3, 5, 10, 20)),
            reorder_probability=some(0.02, 0.1),
            reorder_delay_ms_max=choice((20, 50, 150)),
            partition_every_ms=int(some(150, 300, 600)),
            partition_ms_max=choice((200, 500, 1000)),
            disk_sync_ms_max=choice((1, 2, 5, 10)),
            crash_every_ms=int(some(150, 300, 600, 1200)),
            crash_leader_probability=choice((0.2, 0.5, 0.8)),
            crash_many_probability=some(0.1, 0.3),
            crash_voter_probability=some(0.3, 0.7),
            restart_ms_max=choice((5, 30, 100, 400)),
            compact_probability=some(0.02, 0.1, 0.4),
            lazy_sync_ms_max=choice((20, 50, 200)),
            new_leader_fault_ms_max=choice((10, 30, 80)),
            crash_new_leader_probability=rarely(0.2, 0.5, 0.8),
            isolate_new_leader_probability=rarely(0.2, 0.5),
            crash_after_first_commit_probability=rarely(0.3, 0.7),
            transfer_every_ms=int(some(200, 800)),
            membership_every_ms=int(some(100, 300, 800)),
            propose_every_ms=choice((10, 30, 80)),
            read_every_ms=choice((0, 20, 50)),
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.5,
            election_ticks=election_ticks,
            heartbeat_ticks=choice((1, 2, 2) if election_ticks == 5 else (1, 2, 3, 3)),
            msg_entries_max=rng.randint(1, 4),
            inflight_msgs_max=rng.randint(1, 4),
        )
        if profile is Profile.LEADER_CHURN:
            return replace(
                mixed, drop_probability=0.0, partition_every_ms=0, crash_every_ms=0,
                crash_voter_probability=choice((0.3, 0.7)), crash_new_leader_probability=0.0,
                partition_ms_max=choice((100, 200, 300)), restart_ms_max=choice((5, 30)),
                new_leader_fault_ms_max=10, isolate_new_leader_probability=0.8,
                crash_after_first_commit_probability=choice((0.7, 0.9)),
                election_ticks=5, heartbeat_ticks=min(mixed.heartbeat_ticks, 2), msg_entries_max=1,
            )
        if profile is Profile.STALE_LEADER:
            return replace(
                mixed, partition_every_ms=choice((200, 300)), partition_ms_max=choice((500, 800)),
                crash_new_leader_probability=0.0, isolate_new_leader_probability=0.0,
                crash_after_first_commit_probability=0.0, read_every_ms=choice((10, 20)),
                check_quorum=rng.random() < 0.25,
            )
        return mixed

    def healed(self) -> FaultModel:
        """The same model after the network heals: no loss, duplication or long detours."""
        return replace(self, drop_probability=0.0, duplicate_probability=0.0,
                       reorder_probability=0.0)
