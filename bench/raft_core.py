"""Raft core throughput: committed entries per second of an in-process 3-node group.

Run: ``.venv/bin/python bench/raft_core.py [--seconds 2] [--entry-bytes 100]
[--batches 1,10,100,1000] [--pipeline 4]``

Three :class:`~millpond.raft.Raft` members with :class:`MemoryStorage` talk
through a perfect in-memory network (every message delivered, in order, at
the next round). The driver follows the Ready contract (save, sync, send,
apply, advance) for every member each round. A client keeps ``--pipeline``
proposals of ``batch`` entries of ``--entry-bytes`` bytes outstanding at the
leader, proposing again as each commits. Each configuration runs for
``--seconds`` of wall time (or :data:`ENTRIES_PER_RUN_MAX` entries) and prints
one line: committed entries/s and MB/s of payload, Readies and messages per
committed entry. This measures the core plus a minimal driver: no disk, no
serialisation, no sockets.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from dataclasses import dataclass

from millpond.raft import Config, EntryKind, Membership, MemoryStorage, Message, Raft, Role

ENTRIES_PER_RUN_MAX = 5_000_000
"""Entries proposed in one configuration at most, whatever ``--seconds`` says."""

ROUNDS_PER_TICK = 50
"""Driver rounds between two ticks (heartbeats keep flowing while the group is busy)."""


@dataclass(frozen=True)
class Result:
    """What one configuration measured."""

    entries: int
    payload_bytes: int
    readies: int
    messages: int
    seconds: float

    def line(self, batch: int, pipeline: int) -> str:
        per_entry = max(1, self.entries)
        return (
            f"batch={batch:<5} pipeline={pipeline:<2} "
            f"{self.entries / self.seconds:>10,.0f} committed entries/s "
            f"{self.payload_bytes / self.seconds / 1e6:>6.1f} MB/s "
            f"readies/entry={self.readies / per_entry:.3f} "
            f"messages/entry={self.messages / per_entry:.3f} "
            f"({self.entries:,} entries in {self.seconds:.2f}s)"
        )


class Group:
    """Three members, their stores and a perfect network, driven round by round."""

    def __init__(self) -> None:
        ids = (1, 2, 3)
        membership = Membership.of(list(ids))
        self.storages = {node: MemoryStorage(membership) for node in ids}
        self.members = {
            node: Raft(Config(id=node), self.storages[node], random.Random(node)) for node in ids
        }
        self.inbox: deque[Message] = deque()
        self.readies = 0
        self.messages = 0
        self.committed_data: dict[int, int] = dict.fromkeys(ids, 0)
        self.applied_index: dict[int, int] = dict.fromkeys(ids, 0)

    def round(self) -> None:
        """Deliver every queued message, then run every member's Ready."""
        inbox, members = self.inbox, self.members
        for _ in range(len(inbox)):
            message = inbox.popleft()
            members[message.to].step(message)
        for node, member in members.items():
            if not member.has_ready():
                continue
            rd = member.ready()
            storage = self.storages[node]
            storage.save(rd.hard_state, rd.entries, rd.snapshot)
            if rd.must_sync:
                storage.sync()
            inbox.extend(rd.messages)
            self.messages += len(rd.messages)
            if rd.committed_entries:
                self.committed_data[node] += sum(
                    1 for entry in rd.committed_entries if entry.kind == EntryKind.DATA)
                self.applied_index[node] = rd.committed_entries[-1].index
            member.advance(rd)
            self.readies += 1

    def elect(self, node: int) -> Raft:
        """Make ``node`` the leader and let its first entry commit."""
        leader = self.members[node]
        leader.campaign()
        for _ in range(100):
            self.round()
            if leader.role is Role.LEADER and self.applied_index[node] >= leader.log.committed > 0:
                return leader
        raise RuntimeError("no leader elected")

    def tick(self) -> None:
        for member in self.members.values():
            member.tick()


def run(batch: int, entry_bytes: int, pipeline: int, seconds: float) -> Result:
    """Measure one configuration."""
    group = Group()
    leader = group.elect(1)
    payloads = [bytes(entry_bytes)] * batch
    outstanding: deque[int] = deque()  # last index of each batch not yet applied by the leader
    proposed = 0
    rounds = 0
    group.readies = group.messages = 0
    baseline = group.committed_data[1]
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        while outstanding and outstanding[0] <= group.applied_index[1]:
            outstanding.popleft()
        while len(outstanding) < pipeline and proposed < ENTRIES_PER_RUN_MAX:
            outstanding.append(leader.propose(payloads))
            proposed += batch
        if not outstanding:
            break
        group.round()
        rounds += 1
        if rounds % ROUNDS_PER_TICK == 0:
            group.tick()
    elapsed = time.perf_counter() - started
    entries = group.committed_data[1] - baseline
    return Result(entries, entries * entry_bytes, group.readies, group.messages, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per configuration")
    parser.add_argument("--entry-bytes", type=int, default=100)
    parser.add_argument("--batches", default="1,10,100,1000",
                        help="entries per proposal, comma-separated")
    parser.add_argument("--pipeline", type=int, default=4, help="proposals outstanding at once")
    arguments = parser.parse_args()
    for batch in (int(value) for value in arguments.batches.split(",")):
        result = run(batch, arguments.entry_bytes, arguments.pipeline, arguments.seconds)
        print(result.line(batch, arguments.pipeline), flush=True)


if __name__ == "__main__":
    main()
