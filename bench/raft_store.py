"""Raft log store throughput: LMDB, group commit, one fsync per transaction.

Run: ``.venv/bin/python bench/raft_store.py [--seconds 3] [--entry-bytes 1024]
[--batches 1,100] [--groups 1,16] [--dir DIR]``

For every (entries per save, concurrent groups) pair, a fresh environment gets
one asyncio task per group, each awaiting ``GroupLog.write(hard_state,
entries, None)`` in a loop, so every group has one durable write in flight
(as a Raft driver persisting Ready after Ready). Each run lasts ``--seconds``
(or ``writes_per_run_max`` saves). Prints one line per configuration: entries/s
and MB/s of entry payload (MB = 10**6 bytes), saves/s, LMDB transactions
(one fsync round each), saves per transaction, and p50/p99 latency of one
durable write. The figures include building the ``Entry`` objects.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from millpond.raft.lmdb_store import GroupLog, LogStore
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, HardState

#: Saves per configuration at most, whatever ``--seconds`` says.
writes_per_run_max = 2_000_000


@dataclass(frozen=True)
class Result:
    """What one configuration measured."""

    entries: int
    payload_bytes: int
    writes: int
    transactions: int
    seconds: float
    latencies_s: list[float]

    def line(self, batch: int, groups: int) -> str:
        latencies = sorted(self.latencies_s)
        p50 = latencies[len(latencies) // 2] * 1e3
        p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e3
        return (
            f"batch={batch:<4} groups={groups:<3} "
            f"{self.entries / self.seconds:>10,.0f} entries/s "
            f"{self.payload_bytes / self.seconds / 1e6:>7.1f} MB/s "
            f"{self.writes / self.seconds:>8,.0f} saves/s "
            f"txns={self.transactions:<6} saves/txn={self.writes / max(1, self.transactions):5.1f} "
            f"p50={p50:.2f}ms p99={p99:.2f}ms"
        )


async def _drive(log: GroupLog, batch: int, data: bytes, deadline: float, budget: list[int],
                 latencies: list[float]) -> int:
    """Append ``batch`` entries per durable write until the deadline; return entries written."""
    index = log.last_index()
    written = 0
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        entries = [Entry(1, index + k + 1, data=data) for k in range(batch)]
        start = time.perf_counter()
        await log.write(HardState(1, 1, index), entries, None)
        latencies.append(time.perf_counter() - start)
        index += batch
        written += batch
    return written


def run(directory: Path, batch: int, groups: int, entry_bytes: int, seconds: float) -> Result:
    """Measure one configuration in a fresh environment under ``directory``."""
    data = bytes(range(256)) * (entry_bytes // 256) + bytes(entry_bytes % 256)
    with LogStore(directory) as store:
        logs = [store.bootstrap(group, Membership.of([1, 2, 3])) for group in range(groups)]
        before = store.statistics()
        latencies: list[float] = []
        budget = [writes_per_run_max]

        async def main() -> list[int]:
            deadline = time.monotonic() + seconds
            return await asyncio.gather(
                *(_drive(log, batch, data, deadline, budget, latencies) for log in logs))

        start = time.perf_counter()
        written = asyncio.run(main())
        elapsed = time.perf_counter() - start
        after = store.statistics()
    entries = sum(written)
    return Result(entries, entries * entry_bytes, after.writes - before.writes,
                  after.transactions - before.transactions, elapsed, latencies)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument("--entry-bytes", type=int, default=1024, help="payload bytes per entry")
    parser.add_argument("--batches", type=_ints, default=[1, 100], help="entries per save")
    parser.add_argument("--groups", type=_ints, default=[1, 16], help="concurrent groups")
    parser.add_argument("--dir", type=Path, default=None, help="where to create environments")
    args = parser.parse_args()
    print(f"entry={args.entry_bytes} B, {args.seconds:g} s per run, fsync on every commit")
    for batch in args.batches:
        for groups in args.groups:
            with tempfile.TemporaryDirectory(dir=args.dir, prefix="raft-store-bench-") as tmp:
                result = run(Path(tmp), batch, groups, args.entry_bytes, args.seconds)
            print(result.line(batch, groups), flush=True)


if __name__ == "__main__":
    main()
