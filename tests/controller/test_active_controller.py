"""The active controller over a real (single-node) metadata log, driven by a clock the test advances:
registration, fencing and unfencing timelines, leader/ISR recording, re-placement, preferred-leader
balancing with its rate limit, and topic administration errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from controller_harness import FAST, Cluster, SingleNodeLog, async_test

from millpond.controller import ActionKind, ActiveController, ControllerSettings, LeaderAction, LeaderReport
from millpond.controller.ids import group_id
from millpond.controller.records import (
    ChangeReplicas,
    FenceNode,
    ReassignReplicas,
    SetPartitionLeader,
    decode,
)
from millpond.errors import (
    InvalidConfig,
    InvalidRequest,
    InvalidTopicName,
    NotController,
    PartitionCountDecrease,
    ReplicationFactorTooLarge,
    TopicExists,
    UnknownTopic,
)


def report(group: int, term: int, voters: tuple[int, ...], in_sync: tuple[int, ...] = (),
           learners: tuple[int, ...] = (), hw: int = 0) -> LeaderReport:
    return LeaderReport(group, term, voters, learners, in_sync, log_start_offset=0, high_watermark=hw)


# --- registration and liveness ------------------------------------------------------------------


@async_test
async def test_registration_is_idempotent_per_incarnation() -> None:
    cluster = Cluster()
    ctl = cluster.controller
    assert await ctl.register_node(1, "h:1", 77) == 1
    entries = len(cluster.log.entries)
    assert await ctl.register_node(1, "h:1", 77) == 1
    assert len(cluster.log.entries) == entries  # nothing proposed
    assert await ctl.register_node(1, "h:1", 78) == 2
    with pytest.raises(InvalidRequest, match="node id must be between 1 and 4294967295, got 0"):
        await ctl.register_node(0, "h:1", 1)
    with pytest.raises(InvalidRequest, match="address must not be empty"):
        await ctl.register_node(2, "", 1)
    with pytest.raises(InvalidRequest, match="node 9 is not registered"):
        await ctl.heartbeat(9, 1, 0, [])


@async_test
async def test_a_new_node_is_fenced_until_it_has_caught_up() -> None:
    cluster = Cluster()
    epoch = await cluster.controller.register_node(1, "h:1", 5)
    node = cluster.image.node(1)
    assert node is not None and node.fenced
    behind = await cluster.controller.heartbeat(1, epoch, node.fence_index - 1, [])
    assert not behind.alive and cluster.image.node(1).fenced  # type: ignore[union-attr]
    caught_up = await cluster.controller.heartbeat(1, epoch, node.fence_index, [])
    assert caught_up.alive and cluster.image.live_nodes() == (1,)


@async_test
async def test_fencing_and_unfencing_timeline() -> None:
    cluster = Cluster()
    ctl, clock = cluster.controller, cluster.clock
    await cluster.start_nodes([1, 2, 3])
    assert cluster.image.live_nodes() == (1, 2, 3)

    clock.advance(900)
    await cluster.heartbeat_all([1, 2])
    assert await ctl.tick() == ()  # node 3 is 900 ms silent: within the session

    clock.advance(101)  # node 3: 1001 ms > 1000
    results = await ctl.tick()
    assert [r.record for r in results] == [FenceNode(3, 1)]
    assert cluster.image.live_nodes() == (1, 2)
    fence_index = cluster.image.node(3).fence_index  # type: ignore[union-attr]

    # Back, but behind the fencing record: still fenced.
    assert not (await cluster.heartbeat(3, applied=fence_index - 1)).alive
    # Caught up: unfenced.
    assert (await cluster.heartbeat(3, applied=fence_index)).alive
    assert cluster.image.live_nodes() == (1, 2, 3)

    # A zombie with the old epoch after a restart is told it is not alive, and changes nothing.
    cluster.epochs[3] = await ctl.register_node(3, "127.0.0.1:9093", incarnation=999)
    assert cluster.epochs[3] == 2
    zombie = await ctl.heartbeat(3, 1, cluster.image.applied_index, [])
    assert not zombie.alive


@async_test
async def test_a_new_controller_gives_every_node_a_full_session_of_grace() -> None:
    cluster = Cluster()
    await cluster.start_nodes([1, 2])
    cluster.clock.advance(5_000)  # nobody heartbeats; the controller fails over before ticking
    ctl = cluster.failover()
    cluster.clock.advance(1_000)
    assert await ctl.tick() == ()
    await cluster.heartbeat(1)
    cluster.clock.advance(1)
    assert [r.record for r in await ctl.tick()] == [FenceNode(2, 1)]


@async_test
async def test_lost_leadership_propagates_as_not_controller() -> None:
    cluster = Cluster()
    await cluster.start_nodes([1])
    cluster.log.leader = False
    with pytest.raises(NotController):
        await cluster.controller.create_topic("t", 1, 1)
    cluster.clock.advance(5_000)
    with pytest.raises(NotController):
        await cluster.controller.tick()


# --- leaders and ISR ----------------------------------------------------------------------------


@async_test
async def test_leader_and_isr_changes_are_recorded_from_reports() -> None:
    cluster = Cluster()
    ctl = cluster.controller
    await cluster.start_nodes([1, 2, 3])
    topic = await ctl.create_topic("t", 1, 3)
    g = topic.group(0)

    await cluster.heartbeat(1, [report(g, 3, (1, 2, 3), in_sync=(2,), hw=42)])
    results = await ctl.tick()
    assert [r.record for r in results] == [SetPartitionLeader(g, 1, 3, (1, 2))]
    assert await ctl.tick() == ()  # nothing new
    assert ctl.partition_offsets(g) == (0, 42)

    # A stale report of an older term from another node is ignored.
    await cluster.heartbeat(2, [report(g, 2, (1, 2, 3), in_sync=(1, 3))])
    assert await ctl.tick() == ()

    # The follower catches up: the ISR grows.
    await cluster.heartbeat(1, [report(g, 3, (1, 2, 3), in_sync=(2, 3))])
    assert [r.record for r in await ctl.tick()] == [SetPartitionLeader(g, 1, 3, (1, 2, 3))]

    # The leader steps down and nobody reports the group yet: no known leader.
    await cluster.heartbeat(1, [])
    assert [r.record for r in await ctl.tick()] == [SetPartitionLeader(g, 0, 3, (1, 2, 3))]
    # A new leader in a newer term.
    await cluster.heartbeat(3, [report(g, 4, (1, 2, 3), in_sync=(1,))])
    assert [r.record for r in await ctl.tick()] == [SetPartitionLeader(g, 3, 4, (1, 3))]
    description = ctl.describe_topic("t")
    assert description.partitions[0].state.leader == 3
    assert description.config.retention_ms == 7 * 86_400_000


@async_test
async def test_fencing_the_leader_clears_it_and_ignores_its_reports() -> None:
    cluster = Cluster()
    ctl, clock = cluster.controller, cluster.clock
    await cluster.start_nodes([1, 2, 3])
    g = (await ctl.create_topic("t", 1, 3)).group(0)
    await cluster.heartbeat(1, [report(g, 3, (1, 2, 3), in_sync=(2, 3))])
    await ctl.tick()
    clock.advance(1_001)
    await cluster.heartbeat_all([2, 3])
    await ctl.tick()  # node 1 fenced
    partition = cluster.image.partition_by_group(g)
    assert partition is not None and (partition.leader, partition.isr) == (0, (2, 3))
    assert ctl.partition_offsets(g) == (-1, -1)
    assert await ctl.tick() == ()  # node 1's old report does not bring it back


# --- re-placement -----------------------------------------------------------------------------


@async_test
async def test_a_dead_nodes_replica_is_re_placed() -> None:
    settings = FAST
    cluster = Cluster(settings)
    ctl, clock = cluster.controller, cluster.clock
    await cluster.start_nodes([1, 2, 3, 4])
    # One partition on 1, 2, 3 (node 4 holds another topic's replica, so placement is explicit).
    g = (await ctl.create_topic("t", 1, 3)).group(0)
    replicas = cluster.image.partition_by_group(g).replicas  # type: ignore[union-attr]
    dead = replicas[-1]
    spare = ({1, 2, 3, 4} - set(replicas)).pop()
    leader = replicas[0]
    others = [n for n in (1, 2, 3, 4) if n != dead]
    healthy = report(g, 2, replicas, in_sync=replicas)

    async def beat(leader_report: LeaderReport | None = None) -> list[LeaderAction]:
        for node in others:
            if node != leader:
                await cluster.heartbeat(node)
        result = await cluster.heartbeat(leader, [leader_report] if leader_report else [])
        return list(result.actions)

    assert await beat(healthy) == []
    await ctl.tick()

    # The node dies: fenced after the session timeout, re-placed after the replacement delay.
    clock.advance(1_001)
    await beat(healthy)
    assert FenceNode(dead, 1) in [r.record for r in await ctl.tick()]
    clock.advance(settings.replacement_delay_ms - 1)
    await beat(healthy)
    assert not any(isinstance(r.record, ReassignReplicas) for r in await ctl.tick())
    clock.advance(1)
    await beat(healthy)
    target = tuple(spare if n == dead else n for n in replicas)
    assert ReassignReplicas(g, target) in [r.record for r in await ctl.tick()]
    assert cluster.image.groups_hosted_by(spare) == {g: ()}

    # The leader is asked to add the spare, then (once it is an in-sync voter) to remove the dead node.
    assert await beat(healthy) == [LeaderAction(g, ActionKind.ADD_REPLICA, spare)]
    learning = report(g, 2, replicas, learners=(spare,), in_sync=replicas)
    # Still a learner: asked again, until the leader has promoted it.
    assert await beat(learning) == [LeaderAction(g, ActionKind.ADD_REPLICA, spare)]
    promoted_lagging = report(g, 2, (*replicas, spare), in_sync=[n for n in replicas if n != dead])
    assert await beat(promoted_lagging) == []
    promoted = report(g, 2, (*replicas, spare), in_sync=[*(n for n in replicas if n != dead), spare])
    assert await beat(promoted) == [LeaderAction(g, ActionKind.REMOVE_REPLICA, dead)]
    await ctl.tick()
    done = report(g, 2, target, in_sync=target)
    assert await beat(done) == []
    results = [r.record for r in await ctl.tick()]
    assert ChangeReplicas(g, target) in results
    partition = cluster.image.partition_by_group(g)
    assert partition is not None and (partition.replicas, partition.target) == (target, ())
    assert g not in cluster.image.groups_hosted_by(dead)
    assert cluster.image.groups_hosted_by(spare) == {g: target}
    # Nothing more to do, even when the dead node returns.
    await cluster.heartbeat(dead, applied=cluster.image.applied_index)
    assert await beat(done) == []
    assert not [r for r in await ctl.tick() if not isinstance(r.record, SetPartitionLeader)]


@async_test
async def test_re_placement_spreads_a_dead_nodes_replicas_and_is_bounded() -> None:
    cluster = Cluster()
    ctl, clock = cluster.controller, cluster.clock
    await cluster.start_nodes([1, 2, 3, 4, 5])
    await ctl.create_topic("t", 10, 2)
    clock.advance(1_001)
    await cluster.heartbeat_all([1, 2, 3, 4])
    await ctl.tick()
    clock.advance(FAST.replacement_delay_ms)
    await cluster.heartbeat_all([1, 2, 3, 4])
    started = [r.record for r in await ctl.tick() if isinstance(r.record, ReassignReplicas)]
    hosted_by_5 = 4  # 10 partitions x rf 2 over 5 nodes
    assert len(started) == hosted_by_5
    replacements = [set(r.target) - set(cluster.image.partition_by_group(r.group).replicas) for r in started]  # type: ignore[union-attr]
    assert len({n for s in replacements for n in s}) >= 2  # spread over several survivors
    assert await ctl.tick() == ()  # planned once only


# --- preferred-leader balancing -------------------------------------------------------------------


@async_test
async def test_preferred_leader_transfers_are_rate_limited() -> None:
    cluster = Cluster()
    ctl, clock = cluster.controller, cluster.clock
    await cluster.start_nodes([1, 2, 3])
    topic = await ctl.create_topic("t", 6, 3)
    partitions = cluster.image.partitions(topic.topic_id)
    assert sorted(p.replicas[0] for p in partitions) == [1, 1, 2, 2, 3, 3]
    # Node 2 leads everything; 4 partitions prefer another leader.
    reports = [report(p.group, 1, p.replicas, in_sync=p.replicas) for p in partitions]
    wanted = [p.group for p in partitions if p.replicas[0] != 2]

    first = (await cluster.heartbeat(2, reports)).actions
    assert [a.kind for a in first] == [ActionKind.TRANSFER_LEADER] * 2  # 2 per interval
    assert all(a.node == cluster.image.partition_by_group(a.group).replicas[0] for a in first)  # type: ignore[union-attr]
    assert (await cluster.heartbeat(2, reports)).actions == ()
    clock.advance(999)
    assert (await cluster.heartbeat(2, reports)).actions == ()
    clock.advance(1)
    second = (await cluster.heartbeat(2, reports)).actions
    # The two not yet asked go first, even though the first two are still led by node 2.
    assert sorted(a.group for a in (*first, *second)) == sorted(wanted)
    assert ctl.statistics().transfers_requested_total == 4


@async_test
async def test_no_transfer_to_a_lagging_or_dead_preferred_leader() -> None:
    cluster = Cluster()
    await cluster.start_nodes([1, 2, 3])
    topic = await cluster.controller.create_topic("t", 1, 3)
    p = cluster.image.partitions(topic.topic_id)[0]
    preferred, other = p.replicas[0], p.replicas[1]
    lagging = report(p.group, 1, p.replicas, in_sync=[n for n in p.replicas if n != preferred])
    assert (await cluster.heartbeat(other, [lagging])).actions == ()
    learner = report(p.group, 1, [n for n in p.replicas if n != preferred], learners=(preferred,),
                     in_sync=p.replicas)
    kinds = [a.kind for a in (await cluster.heartbeat(other, [learner])).actions]
    assert ActionKind.TRANSFER_LEADER not in kinds
    cluster.clock.advance(1_001)
    await cluster.heartbeat_all([n for n in p.replicas if n != preferred])
    await cluster.controller.tick()  # preferred fenced
    synced = report(p.group, 1, p.replicas, in_sync=p.replicas)
    assert (await cluster.heartbeat(other, [synced])).actions == ()


# --- topics -------------------------------------------------------------------------------------


@async_test
async def test_create_topic_places_replicas_and_returns_the_topic() -> None:
    cluster = Cluster()
    await cluster.start_nodes([1, 2, 3])
    topic = await cluster.controller.create_topic("orders", 6, 3, {"retention_ms": "60000"})
    assert (topic.name, topic.topic_id) == ("orders", 1)
    assert (topic.partition_count, topic.replication_factor) == (6, 3)
    assert topic.config_dict() == {"retention_ms": "60000"}
    leaders = sorted(p.replicas[0] for p in cluster.image.partitions(topic.topic_id))
    assert leaders == [1, 1, 2, 2, 3, 3]
    # A follower that replays the log holds the same image.
    assert cluster.log.replay().snapshot() == cluster.image.snapshot()


@async_test
async def test_create_topic_errors_are_precise() -> None:
    cluster = Cluster()
    ctl = cluster.controller
    await cluster.start_nodes([1, 2, 3])
    await ctl.create_topic("orders", 3, 2)
    cases = [
        (("bad name", 1, 1), InvalidTopicName, "topic name 'bad name' contains ' '"),
        (("__x", 1, 1), InvalidTopicName, "reserved for internal topics"),
        (("t", 0, 1), InvalidRequest, "partitions must be between 1 and 1024, got 0"),
        (("t", 1025, 1), InvalidRequest, "partitions must be between 1 and 1024, got 1025"),
        (("t", 1, 0), InvalidRequest, "replication factor must be between 1 and 5, got 0"),
        (("t", 1, 4), ReplicationFactorTooLarge, "replication factor 4 exceeds the 3 live nodes"),
        (("orders", 1, 1), TopicExists, "topic 'orders' already exists"),
    ]
    entries = len(cluster.log.entries)
    for args, error, message in cases:
        with pytest.raises(error) as info:
            await ctl.create_topic(*args)
        assert message in info.value.message, (args, info.value.message)
    with pytest.raises(InvalidConfig, match=r"unknown config key 'retention\.ms'"):
        await ctl.create_topic("t", 1, 1, {"retention.ms": "1"})
    with pytest.raises(InvalidConfig, match="min_insync_replicas: 3 exceeds the replication factor 2"):
        await ctl.create_topic("t", 1, 2, {"min_insync_replicas": "3"})
    assert len(cluster.log.entries) == entries  # nothing proposed
    assert (await ctl.create_topic("__internal", 1, 1, internal=True)).name == "__internal"


@async_test
async def test_concurrent_creates_of_one_name_create_it_once() -> None:
    cluster = Cluster()
    await cluster.start_nodes([1])
    outcomes = await asyncio.gather(*(cluster.controller.create_topic("t", 1, 1) for _ in range(3)),
                                    return_exceptions=True)
    assert sum(1 for o in outcomes if isinstance(o, TopicExists)) == 2
    assert len(cluster.image.topics()) == 1


@async_test
async def test_alter_partitions_only_grows() -> None:
    cluster = Cluster()
    ctl = cluster.controller
    await cluster.start_nodes([1, 2, 3])
    await ctl.create_topic("orders", 3, 2)
    for count in (2, 3):
        with pytest.raises(PartitionCountDecrease) as info:
            await ctl.alter_partitions("orders", count)
        assert info.value.message == f"partition count can only grow: topic 'orders' has 3, requested {count}"
    with pytest.raises(UnknownTopic, match="topic 'nope' does not exist"):
        await ctl.alter_partitions("nope", 5)
    before = cluster.image.partitions(1)
    grown = await ctl.alter_partitions("orders", 6)
    assert grown.partition_count == 6
    after = cluster.image.partitions(1)
    assert after[:3] == before  # existing partitions untouched
    assert all(len(p.replicas) == 2 for p in after)
    # Preferred leaders stay balanced across the whole topic.
    assert sorted(p.replicas[0] for p in after) == [1, 1, 2, 2, 3, 3]


@async_test
async def test_delete_topic() -> None:
    cluster = Cluster()
    ctl = cluster.controller
    await cluster.start_nodes([1])
    await ctl.create_topic("t", 2, 1)
    await ctl.delete_topic("t")
    assert cluster.image.topic("t") is None
    with pytest.raises(UnknownTopic, match="topic 't' does not exist"):
        await ctl.delete_topic("t")
    with pytest.raises(UnknownTopic):
        ctl.describe_topic("t")
    assert (await ctl.create_topic("t", 1, 1)).topic_id == 2


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="session_timeout_ms must be >= 2 \\* heartbeat_interval_ms"):
        replace(ControllerSettings(), session_timeout_ms=300).validate()
    with pytest.raises(ValueError, match="heartbeat_interval_ms must be >= 1"):
        log = SingleNodeLog()
        bad = replace(ControllerSettings(), heartbeat_interval_ms=0)
        ActiveController(log.image, log.propose, lambda: 0, bad)


def test_every_proposed_record_decodes() -> None:
    cluster = Cluster()

    async def scenario() -> None:
        await cluster.start_nodes([1, 2])
        await cluster.controller.create_topic("t", 2, 2)

    asyncio.run(scenario())
    assert all(decode(entry) for entry in cluster.log.entries)
    assert group_id(1, 1) in cluster.image.groups_hosted_by(1)
