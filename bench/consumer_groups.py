"""Consumer groups on a local 3-node cluster: group throughput, and how long a rebalance takes.

Run: ``.venv/bin/python bench/consumer_groups.py [--records 300000] [--value-bytes 100] [--members 3]
[--partitions 6] [--heartbeat-ms 500] [--session-ms 3000] [--rate 2000]``

Starts a :class:`~millpond.testing.cluster.LocalCluster` (real node processes,
``--group-heartbeat-interval-ms`` set to ``--heartbeat-ms``; always stopped at
the end) and creates a topic of ``--partitions`` partitions, replication 3.
Every member is a process of its own (``AsyncConsumer`` subscribed to the
topic, auto-commit on) that prints one JSON line per event on stdout, with
``time.monotonic()`` stamps (system-wide, so processes share one clock):
``assign`` / ``revoke`` (the partitions its ``on_assign`` / ``on_revoke`` got), ``first`` (the first record
it consumed of a partition after it was given), ``done`` (its record count and
the times of its first and last record). Members start, connect, then wait
for a "go" on stdin so that they join the group together.

1. **throughput**: ``--records`` records of ``--value-bytes`` are produced
   first; ``--members`` members then join one group and read everything;
   each stops after ``idle_s`` without a record. Figure: records / (last
   record of any member - first record of any member), each member's share,
   and the check that the members together read each record exactly once. The
   first member to join owns every partition until the others' joins reach it
   at its next heartbeat (``--heartbeat-ms``), so the shares are uneven.
2. **rebalance after a leave**: a producer in this process sends ``--rate``
   records/s; once every member consumes, one member is asked to stop
   (SIGINT: it commits, releases and leaves). Figure: from the signal until
   each partition it owned has given its first record to another member
   (max over those partitions).
3. **rebalance after a death**: the same with SIGKILL: the coordinator frees
   the partitions once the member's session (``--session-ms``) times out.

On a shared 2-core machine the figures swing with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from millpond.client import (
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    ClientConfig,
    ConsumerConfig,
    ProducerConfig,
    TopicPartition,
)
from millpond.testing.cluster import LocalCluster

TOPIC = "bench-groups"
GROUP = "bench"
#: A member stops after this long without a record (throughput phase).
idle_s = 3.0
#: Longest any phase may take before the bench gives up.
phase_timeout_s = 300.0


# --- the member process ----------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


async def _member(bootstrap: str, session_ms: int, stop_when_idle: bool) -> None:
    config = ConsumerConfig(group_id=GROUP, auto_offset_reset="earliest", session_timeout_ms=session_ms,
                            fetch_wait_ms_max=100)
    waiting_first: set[TopicPartition] = set()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stopping.set)

    count, first_t, last_t = 0, 0.0, 0.0
    idle_since: float | None = None  # from the first assignment on

    def assigned(partitions: list[TopicPartition]) -> None:
        nonlocal idle_since
        waiting_first.update(partitions)
        idle_since = idle_since or time.monotonic()
        _emit("assign", partitions=[p.partition for p in partitions])

    def revoked(partitions: list[TopicPartition]) -> None:
        waiting_first.difference_update(partitions)
        _emit("revoke", partitions=[p.partition for p in partitions])

    async with AsyncConsumer(bootstrap, config) as consumer:
        _emit("ready")  # the supervisor answers "go" once every member is ready: they join together
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        consumer.subscribe([TOPIC], on_assign=assigned, on_revoke=revoked)
        while not stopping.is_set():
            records = await consumer.poll(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            if not records:
                if stop_when_idle and idle_since is not None and now - idle_since > idle_s:
                    break
                continue
            idle_since = now
            first_t = first_t or now
            last_t = now
            count += len(records)
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                if tp in waiting_first:
                    waiting_first.discard(tp)
                    _emit("first", partition=record.partition, offset=record.offset)
    _emit("done", count=count, first=first_t, last=last_t)


# --- the supervisor ----------------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    def read_available(self) -> None:
        """Collect the member's events (non-blocking: its stdout is set non-blocking)."""
        stream: IO[str] | None = self.process.stdout
        if stream is None:
            return
        while True:
            line = stream.readline()
            if not line:
                return
            self.events.append(json.loads(line))


def _spawn(name: str, bootstrap: str, session_ms: int, stop_when_idle: bool) -> Member:
    args = [sys.executable, __file__, "--worker", "--bootstrap", bootstrap, "--session-ms", str(session_ms)]
    if stop_when_idle:
        args.append("--stop-when-idle")
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    return Member(name, process)


@contextmanager
def _members(count: int, bootstrap: str, session_ms: int, stop_when_idle: bool) -> Iterator[list[Member]]:
    members = [_spawn(f"member-{i}", bootstrap, session_ms, stop_when_idle) for i in range(count)]
    try:
        _wait(lambda: all(any(e["event"] == "ready" for e in m.events) for m in members),
              "the members to start", members)
        for member in members:
            assert member.process.stdin is not None
            member.process.stdin.write("go\n")
            member.process.stdin.flush()
        yield members
    finally:
        for member in members:
            if member.process.poll() is None:
                member.process.kill()
            member.process.wait()


def _wait(condition: Any, what: str, members: list[Member]) -> None:
    deadline = time.monotonic() + phase_timeout_s
    while True:
        for member in members:
            member.read_available()
        if condition():
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


async def _produce(bootstrap: str, records: int, value_bytes: int) -> float:
    value = os.urandom(value_bytes)
    started = time.monotonic()
    async with AsyncProducer(bootstrap, ProducerConfig(linger_ms=5, batch_bytes=1 << 20)) as producer:
        futures = []
        for i in range(records):
            futures.append(await producer.send(TOPIC, value, key=b"%d" % i))  # keys spread the partitions
            if len(futures) >= 50_000:
                await asyncio.gather(*futures)
                futures.clear()
            if i % 10_000 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
    return time.monotonic() - started


def _throughput(cluster: LocalCluster, args: argparse.Namespace) -> None:
    produce_s = asyncio.run(_produce(cluster.bootstrap, args.records, args.value_bytes))
    print(f"produced {args.records:,} records of {args.value_bytes} B in {produce_s:.1f} s")
    with _members(args.members, cluster.bootstrap, args.session_ms, stop_when_idle=True) as members:
        _wait(lambda: all(m.process.poll() is not None for m in members), "the members to finish", members)
        for member in members:
            member.read_available()
    done = [e for m in members for e in m.events if e["event"] == "done"]
    total = sum(e["count"] for e in done)
    first = min(e["first"] for e in done if e["count"])
    last = max(e["last"] for e in done if e["count"])
    seconds = last - first
    shares = ", ".join(str(e["count"]) for e in done)
    print(f"throughput: {args.members} members read {total:,} records in {seconds:.2f} s: "
          f"{total / seconds:,.0f} records/s, {total * args.value_bytes / seconds / 1e6:.1f} MB/s "
          f"(shares {shares}; {'each record once' if total == args.records else 'COUNT MISMATCH'})")


async def _produce_steadily(bootstrap: str, rate: int, stop: asyncio.Event) -> None:
    async with AsyncProducer(bootstrap, ProducerConfig(linger_ms=5)) as producer:
        interval = 0.01
        per_tick = max(1, int(rate * interval))
        while not stop.is_set():
            for _ in range(per_tick):
                await producer.send(TOPIC, b"x" * 100, key=os.urandom(8))
            await asyncio.sleep(interval)


def _rebalance(cluster: LocalCluster, args: argparse.Namespace, how: signal.Signals) -> float:
    """Seconds from signalling one member until all its partitions gave a record to another member."""
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    producing = loop.create_task(_produce_steadily(cluster.bootstrap, args.rate, stop))

    def pump(seconds: float = 0.02) -> None:
        loop.run_until_complete(asyncio.sleep(seconds))

    try:
        with _members(args.members, cluster.bootstrap, args.session_ms, stop_when_idle=False) as members:
            def owned(member: Member) -> set[int]:
                now: set[int] = set()
                for event in member.events:
                    if event["event"] == "assign":
                        now.update(event["partitions"])
                    elif event["event"] == "revoke":
                        now.difference_update(event["partitions"])
                return now

            def consuming_everywhere() -> bool:
                pump()
                firsts = {e["partition"] for m in members for e in m.events if e["event"] == "first"}
                return len(firsts) == args.partitions and all(owned(m) for m in members)

            _wait(consuming_everywhere, "every member to consume", members)
            victim = members[0]
            mine = owned(victim)
            signalled = time.monotonic()
            victim.process.send_signal(how)
            others = members[1:]

            def taken_over() -> bool:
                pump()
                firsts = {e["partition"]: e["t"] for m in others for e in m.events
                          if e["event"] == "first" and e["t"] > signalled}
                return mine <= set(firsts)

            _wait(taken_over, "the other members to take the partitions over", members)
            firsts = {e["partition"]: e["t"] for m in others for e in m.events
                      if e["event"] == "first" and e["t"] > signalled}
            return max(firsts[p] for p in mine) - signalled
    finally:
        stop.set()
        loop.run_until_complete(producing)
        loop.close()


async def _create_topic(bootstrap: str, partitions: int) -> None:
    async with AsyncAdmin(bootstrap, ClientConfig(request_timeout_ms=30_000)) as admin:
        await admin.create_topic(TOPIC, partitions=partitions, replication_factor=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--heartbeat-ms", type=int, default=500, help="group heartbeat interval")
    parser.add_argument("--session-ms", type=int, default=3_000, help="member session timeout")
    parser.add_argument("--rate", type=int, default=2_000, help="records/s produced during rebalances")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stop-when-idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_member(args.bootstrap, args.session_ms, args.stop_when_idle))
        return
    node_args = ["--group-heartbeat-interval-ms", str(args.heartbeat_ms),
                 "--group-session-timeout-ms", str(max(args.session_ms, 2 * args.heartbeat_ms))]
    print(f"members {args.members}, partitions {args.partitions}, heartbeat {args.heartbeat_ms} ms, "
          f"session {args.session_ms} ms; load average {os.getloadavg()[0]:.1f}")
    with LocalCluster(3, node_args=node_args, ready_timeout_s=120) as cluster:
        asyncio.run(_create_topic(cluster.bootstrap, args.partitions))
        _throughput(cluster, args)
        left = _rebalance(cluster, args, signal.SIGINT)
        print(f"rebalance after a member left (SIGINT: commit, release, leave): its partitions consumed "
              f"again {left * 1000:.0f} ms after the signal")
        died = _rebalance(cluster, args, signal.SIGKILL)
        print(f"rebalance after a member died (SIGKILL): its partitions consumed again {died * 1000:.0f} ms "
              f"after the kill (session timeout {args.session_ms} ms)")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
