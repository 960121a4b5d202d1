"""Consumer groups end to end on real node processes: fan-out between groups, exclusive ownership
within one, members joining and leaving while records are produced, a member process killed, more
members than partitions, the controller killed during a rebalance, and a commit with a stale epoch.

Each member is an ``AsyncConsumer`` (in this process, on one event loop) or a
``millpond consume --group`` process. Ownership intervals come from the
members' ``on_assign`` / ``on_revoke`` / ``on_lost`` callbacks, timed with one
monotonic clock, and are checked to never overlap between members.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_helpers import FAST

from millpond.client import (
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    ClientConfig,
    ConsumerConfig,
    ConsumerRecord,
    GroupIdNotFound,
    ProducerConfig,
    StaleMemberEpoch,
    TopicPartition,
)
from millpond.client._group import error_from_reason
from millpond.testing.cluster import LocalCluster
from millpond.testing.waiting import wait_until_async
from millpond.v1 import groups_pb2 as pb
from millpond.v1 import groups_pb2_grpc as pb_grpc

#: Members heartbeat every 200 ms; a member silent for 2 s is removed.
GROUP_FAST = ["--group-heartbeat-interval-ms", "200", "--group-session-timeout-ms", "2000"]
SESSION_MS = 2_000
WAIT_S = 60.0


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test body in a fresh event loop (the cluster fixture is synchronous)."""

    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 300))

    return sync


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-node cluster for the tests that kill no node (each uses its own topics and groups)."""
    with LocalCluster(3, data_dir=tmp_path_factory.mktemp("groups"), node_args=[*FAST, *GROUP_FAST],
                      ready_timeout_s=90) as running:
        yield running


# --- members and their ledgers ------------------------------------------------------------------


@dataclass
class Interval:
    """A member owned ``tp`` from ``start`` to ``end`` (monotonic seconds), as its callbacks said."""

    member: str
    epoch: int
    tp: TopicPartition
    start: float
    end: float | None = None


@dataclass
class Ledger:
    """What every member of a test did, on one clock."""

    intervals: list[Interval] = field(default_factory=list)

    def check_exclusive(self) -> None:
        """No partition was owned by two members at once."""
        by_tp: dict[TopicPartition, list[Interval]] = defaultdict(list)
        for interval in self.intervals:
            by_tp[interval.tp].append(interval)
        for tp, intervals in by_tp.items():
            intervals.sort(key=lambda i: i.start)
            for before, after in itertools.pairwise(intervals):
                if before.member == after.member:
                    continue
                assert before.end is not None and before.end <= after.start, (
                    f"{tp} owned by {before.member} (epoch {before.epoch}, {before.start:.3f}-{before.end}) "
                    f"and {after.member} (epoch {after.epoch}, from {after.start:.3f}) at once")


class Member:
    """One consumer-group member in this process: it polls in a task and records what it got."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: list[str], ledger: Ledger,
                 **config: Any) -> None:
        self.name = name
        self.ledger = ledger
        self.records: list[ConsumerRecord] = []
        self.owned: dict[TopicPartition, Interval] = {}
        settings = {"group_id": group, "auto_offset_reset": "earliest", "session_timeout_ms": SESSION_MS,
                    "auto_commit_interval_ms": 200, "request_timeout_ms": 5_000, **config}
        self.consumer = AsyncConsumer(bootstrap, ConsumerConfig(**settings))
        self._topics = topics
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Member:
        self.consumer.subscribe(self._topics, on_assign=self._assigned, on_revoke=self._released,
                                on_lost=self._released)
        self._task = asyncio.get_running_loop().create_task(self._poll(), name=f"member-{self.name}")
        return self

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for tp in partitions:
            interval = Interval(self.name, self.consumer.member_epoch, tp, now)
            self.owned[tp] = interval
            self.ledger.intervals.append(interval)

    def _released(self, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for tp in partitions:
            interval = self.owned.pop(tp, None)
            if interval is not None:
                interval.end = now

    async def _poll(self) -> None:
        while not self._stopping:
            self.records.extend(await self.consumer.poll(timeout_ms=100))

    async def stop(self) -> None:
        """Stop polling and leave the group (committing, then releasing everything)."""
        self._stopping = True
        if self._task is not None:
            await self._task
        await self.consumer.close()


def offsets_by_partition(records: Iterable[ConsumerRecord]) -> Counter[tuple[int, int]]:
    return Counter((r.partition, r.offset) for r in records)


async def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> set[tuple[int, int]]:
    """Produce ``count`` keyed records (acks=all); return their (partition, offset)."""
    async with AsyncProducer(bootstrap, ProducerConfig(linger_ms=2)) as producer:
        futures = [await producer.send(topic, b"v%d" % i, key=b"k%d" % i)
                   for i in range(start, start + count)]
        return {(ack.partition, ack.offset) for ack in await asyncio.gather(*futures)}


async def wait_stable(admin: AsyncAdmin, group: str, members: int, assigned: int) -> None:
    """Until the group is stable with ``members`` members owning ``assigned`` partitions in all."""

    async def stable() -> bool:
        described = await admin.describe_group(group)
        return (described.state == "stable" and len(described.members) == members
                and sum(len(m.assigned) for m in described.members) == assigned)

    await wait_until_async(stable, WAIT_S, f"group {group} stable with {members} members")


def _first_offsets(records: Iterable[ConsumerRecord]) -> dict[int, int]:
    """The first offset consumed of each partition."""
    firsts: dict[int, int] = {}
    for record in records:
        firsts.setdefault(record.partition, record.offset)
    return firsts


def _admin(cluster: LocalCluster) -> AsyncAdmin:
    return AsyncAdmin(cluster.bootstrap, ClientConfig(request_timeout_ms=10_000))


# --- the tests ------------------------------------------------------------------------------------


@run
async def test_two_groups_fan_out_and_each_record_goes_to_one_member_of_a_group(
        cluster: LocalCluster) -> None:
    async with _admin(cluster) as admin:
        await admin.create_topic("fanout", partitions=4, replication_factor=3)
        ledger = Ledger()
        a1 = Member("a1", cluster.bootstrap, "fan-a", ["fanout"], ledger).start()
        a2 = Member("a2", cluster.bootstrap, "fan-a", ["fanout"], ledger).start()
        b1 = Member("b1", cluster.bootstrap, "fan-b", ["fanout"], Ledger()).start()
        await wait_stable(admin, "fan-a", 2, 4)
        await wait_stable(admin, "fan-b", 1, 4)
        everything = await produce(cluster.bootstrap, "fanout", 400)

        async def received(*members: Member) -> bool:
            return set(offsets_by_partition(r for m in members for r in m.records)) == everything

        await wait_until_async(lambda: received(a1, a2), WAIT_S, "group fan-a to receive every record")
        await wait_until_async(lambda: received(b1), WAIT_S, "group fan-b to receive every record")
        counts = offsets_by_partition(r for m in (a1, a2) for r in m.records)
        assert max(counts.values()) == 1, "a record of group fan-a went to two members (or twice)"
        assert a1.records and a2.records  # the work was shared
        assert max(offsets_by_partition(b1.records).values()) == 1
        for member in (a1, a2, b1):
            await member.stop()
        ledger.check_exclusive()


@run
async def test_members_join_and_leave_while_producing(cluster: LocalCluster) -> None:
    """No partition owned twice, no committed offset going back, nothing skipped, and a member joining
    the emptied group resumes exactly at the committed offsets."""
    topic, group = "churn", "churn-g"
    async with _admin(cluster) as admin:
        await admin.create_topic(topic, partitions=4, replication_factor=3)
        ledger = Ledger()
        everyone: list[Member] = []
        produced = 0
        acked: set[tuple[int, int]] = set()
        committed_seen: dict[tuple[str, int], int] = {}
        backwards: list[str] = []
        looks = 0  # passes of the commit watcher

        async def producing() -> None:
            nonlocal produced
            async with AsyncProducer(cluster.bootstrap, ProducerConfig(linger_ms=2)) as producer:
                while True:
                    futures = [await producer.send(topic, b"v", key=b"k%d" % (produced + i))
                               for i in range(20)]
                    acked.update((ack.partition, ack.offset) for ack in await asyncio.gather(*futures))
                    produced += 20
                    await asyncio.sleep(0.02)  # pacing: records keep flowing, without flooding

        async def watching_commits() -> None:
            nonlocal looks
            while True:
                try:
                    described = await admin.describe_group(group)
                except GroupIdNotFound:
                    described = None
                for p in described.partitions if described is not None else ():
                    key = (p.topic, p.partition)
                    if p.committed_offset < committed_seen.get(key, -1):
                        backwards.append(f"{key}: {committed_seen[key]} -> {p.committed_offset}")
                    committed_seen[key] = max(committed_seen.get(key, -1), p.committed_offset)
                looks += 1
                await asyncio.sleep(0.1)  # the watcher's polling interval

        def join() -> Member:
            member = Member(f"m{len(everyone)}", cluster.bootstrap, group, [topic], ledger).start()
            everyone.append(member)
            return member

        async def in_group(member: Member) -> None:
            """Until ``member`` has consumed records (the next churn step comes after it took part)."""

            async def consuming() -> bool:
                return bool(member.records)

            await wait_until_async(consuming, WAIT_S, f"member {member.name} to consume records")

        background = [asyncio.create_task(producing()), asyncio.create_task(watching_commits())]
        present = [join()]
        await in_group(present[-1])
        for _ in range(2):  # three members join one by one while records flow
            present.append(join())
            await in_group(present[-1])
        for _ in range(3):  # then, one at a time, the oldest leaves and a new one joins
            await present.pop(0).stop()
            present.append(join())
            await in_group(present[-1])
        await wait_stable(admin, group, 3, 4)

        async def announced() -> bool:  # the clients too: every partition's on_assign ran
            return sum(len(m.owned) for m in present) == 4 and all(m.owned for m in present)

        await wait_until_async(announced, WAIT_S, "every present member to consume its partitions")
        for member in present:
            await member.stop()
        after_leaves = looks

        async def looked_again() -> bool:  # one more full look at the commits after the last leave
            return looks >= after_leaves + 2

        await wait_until_async(looked_again, WAIT_S, "the commit watcher to look again")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

        # The group is empty now: its committed offsets are where the next member must start.
        described = await admin.describe_group(group)
        assert described.state == "empty" and not described.members
        committed = {p.partition: p.committed_offset for p in described.partitions}
        assert sorted(committed) == [0, 1, 2, 3] and min(committed.values()) >= 0, committed
        acked |= await produce(cluster.bootstrap, topic, 40, start=produced)  # something after every commit
        last = join()

        async def consumed_everywhere() -> bool:
            return set(_first_offsets(last.records)) == {0, 1, 2, 3}

        await wait_until_async(consumed_everywhere, WAIT_S, "the last member to consume every partition")
        assert _first_offsets(last.records) == committed, "the new member did not start at the commits"
        await last.stop()

        seen = offsets_by_partition(r for m in everyone for r in m.records)
        missing = sorted(acked - set(seen))
        assert not missing, f"{len(missing)} records never consumed, e.g. {missing[:5]}"
        assert not backwards, f"committed offsets went backwards: {backwards}"
        # Clean handovers commit what was consumed before releasing: nothing is delivered twice.
        assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:10]
        ledger.check_exclusive()
        assert len({i.member for i in ledger.intervals}) == len(everyone)


@run
async def test_a_killed_member_process_loses_its_partitions_after_the_session_timeout(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """Nothing is skipped: what the killed member printed but did not commit goes to the survivor."""
    topic, group = "killed", "killed-g"
    async with _admin(cluster) as admin:
        await admin.create_topic(topic, partitions=4, replication_factor=3)
        acked = await produce(cluster.bootstrap, topic, 200)
        output = tmp_path / "member.out"
        with output.open("wb") as out, (tmp_path / "member.err").open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "millpond.cli", "consume", topic, "--group", group, "--from-beginning",
                 "--session-timeout-ms", str(SESSION_MS), "--format", "json",
                 "--bootstrap", cluster.bootstrap],
                stdout=out, stderr=err)
        try:
            await wait_stable(admin, group, 1, 4)
            ledger = Ledger()
            survivor = Member("survivor", cluster.bootstrap, group, [topic], ledger).start()
            await wait_stable(admin, group, 2, 4)
            acked |= await produce(cluster.bootstrap, topic, 200, start=200)
            owned_by_process = {tp for m in (await admin.describe_group(group)).members
                                if m.member_id != survivor.consumer.member_id for tp in m.assigned}
            assert len(owned_by_process) == 2
            process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            process.wait(timeout=10)

            async def took_over() -> bool:
                return len(survivor.consumer.assignment()) == 4

            await wait_until_async(took_over, WAIT_S, "the survivor to own every partition")
            moved_after = time.monotonic() - killed_at
            # The controller waits out the session (2 s) before it frees the partitions.
            assert moved_after >= SESSION_MS / 1000 * 0.8, moved_after
            acked |= await produce(cluster.bootstrap, topic, 40, start=400)

            async def caught_up() -> bool:
                return acked <= set(offsets_by_partition(survivor.records)) | printed

            stdout = output.read_bytes()
            printed = {(record["partition"], record["offset"])
                       for record in map(json.loads, stdout.splitlines())}
            assert printed, "the member process printed nothing before it was killed"
            await wait_until_async(caught_up, WAIT_S, "every record to be consumed by someone")
            await survivor.stop()
            ledger.check_exclusive()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@run
async def test_six_members_on_four_partitions_leave_two_idle_until_partitions_are_added(
        cluster: LocalCluster) -> None:
    topic, group = "wide", "wide-g"
    async with _admin(cluster) as admin:
        await admin.create_topic(topic, partitions=4, replication_factor=3)
        ledger = Ledger()
        members = [Member(f"w{i}", cluster.bootstrap, group, [topic], ledger).start() for i in range(6)]
        await wait_stable(admin, group, 6, 4)
        counts = sorted(len(m.assigned) for m in (await admin.describe_group(group)).members)
        assert counts == [0, 0, 1, 1, 1, 1]
        await admin.alter_partitions(topic, 6)  # the next heartbeat sees the new partitions
        await wait_stable(admin, group, 6, 6)
        counts = sorted(len(m.assigned) for m in (await admin.describe_group(group)).members)
        assert counts == [1] * 6
        await produce(cluster.bootstrap, topic, 120)

        async def all_consumed() -> bool:
            seen = set(offsets_by_partition(r for m in members for r in m.records))
            return len(seen) == 120

        await wait_until_async(all_consumed, WAIT_S, "every record to be consumed")
        for member in members:
            await member.stop()
        ledger.check_exclusive()


@run
async def test_a_commit_with_a_stale_member_epoch_is_refused_precisely(cluster: LocalCluster) -> None:
    async with _admin(cluster) as admin:
        await admin.create_topic("stale", partitions=2, replication_factor=3)
    channel = grpc.aio.insecure_channel(cluster.address(2))  # any node: it forwards to the controller
    stub = pb_grpc.ConsumerGroupsStub(channel)
    try:
        def heartbeat(member: str, epoch: int, owned: list[int] | None = None) -> Any:
            request = pb.ConsumerGroupHeartbeatRequest(group_id="stale-g", member_id=member,
                                                       member_epoch=epoch)
            if epoch == 0:
                request.subscribed_topic_names.names.append("stale")
            if owned is not None:
                request.owned.topics.append(pb.TopicPartitions(topic="stale", partitions=owned))
            return stub.ConsumerGroupHeartbeat(request, timeout=10)

        first = await heartbeat("first", 0)
        assert (first.member_epoch, [list(a.partitions) for a in first.assignment]) == (1, [[0, 1]])
        await heartbeat("second", 0)  # group epoch 2: first must give a partition up
        revoking = await heartbeat("first", 1, owned=[0, 1])
        assert revoking.member_epoch == 1  # still 1 while it releases
        kept = list(revoking.assignment[0].partitions)
        moved = await heartbeat("first", 1, owned=kept)
        assert moved.member_epoch == 2

        def commit(epoch: int, member: str = "first") -> Any:
            return stub.OffsetCommit(pb.OffsetCommitRequest(
                group_id="stale-g", member_id=member, member_epoch=epoch,
                partitions=[pb.OffsetCommitPartition(topic="stale", partition=kept[0], offset=1)]),
                timeout=10)

        [stale] = (await commit(1)).results
        assert (stale.error_reason, stale.error_message) == (
            "STALE_MEMBER_EPOCH", "member 'first' is at epoch 2, not 1")
        assert isinstance(error_from_reason(stale.error_reason, stale.error_message), StaleMemberEpoch)
        [fenced] = (await commit(3)).results
        assert fenced.error_reason == "FENCED_MEMBER_EPOCH"
        [unknown] = (await commit(2, member="nobody")).results
        assert unknown.error_reason == "UNKNOWN_MEMBER_ID"
        [ok] = (await commit(2)).results
        assert ok.error_reason == ""
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ConsumerGroupHeartbeat(pb.ConsumerGroupHeartbeatRequest(
                group_id="stale-g", member_id="first", member_epoch=7), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert dict(refused.value.trailing_metadata())["millpond-error-reason"] == "FENCED_MEMBER_EPOCH"
    finally:
        await channel.close()


def test_the_controller_killed_during_a_rebalance(make_cluster: Callable[..., LocalCluster]) -> None:
    """The group converges under the new controller and commits made before survive."""
    cluster = make_cluster(3, extra=GROUP_FAST)
    asyncio.run(asyncio.wait_for(_controller_killed(cluster), 300))


async def _controller_killed(cluster: LocalCluster) -> None:
    topic, group = "failover", "failover-g"
    async with _admin(cluster) as admin:
        await admin.create_topic(topic, partitions=4, replication_factor=3)
        await produce(cluster.bootstrap, topic, 200)
        ledger = Ledger()
        members = [Member(f"f{i}", cluster.bootstrap, group, [topic], ledger).start() for i in range(2)]
        await wait_stable(admin, group, 2, 4)

        async def committed_everything() -> bool:
            described = await admin.describe_group(group)
            return sum(max(0, p.committed_offset) for p in described.partitions) == 200

        await wait_until_async(committed_everything, WAIT_S, "the first 200 records to be committed")
        before = {p.partition: p.committed_offset for p in (await admin.describe_group(group)).partitions}
        controller = (await admin.describe_cluster()).controller
        members.append(Member("f2", cluster.bootstrap, group, [topic], ledger).start())  # a rebalance starts

        async def third_member_joined() -> bool:
            return len((await admin.describe_group(group)).members) == 3

        await wait_until_async(third_member_joined, WAIT_S, "f2 to join (the rebalance under way)")
        cluster.kill(controller)
        killed_at = time.monotonic()

        async def new_controller() -> bool:
            current = (await admin.describe_cluster()).controller
            return current not in (0, controller)

        await wait_until_async(new_controller, WAIT_S, "a new active controller")
        await wait_stable(admin, group, 3, 4)
        converged_after = time.monotonic() - killed_at
        after = {p.partition: p.committed_offset for p in (await admin.describe_group(group)).partitions}
        assert all(after[p] >= before[p] for p in before), (before, after)
        await produce(cluster.bootstrap, topic, 40, start=200)

        async def all_consumed() -> bool:
            seen = set(offsets_by_partition(r for m in members for r in m.records))
            return len(seen) == 240

        await wait_until_async(all_consumed, WAIT_S, "every record to be consumed after the failover")
        for member in members:
            await member.stop()
        ledger.check_exclusive()
        print(f"group converged {converged_after:.2f} s after the controller was killed")
        cluster.start_node(controller)
