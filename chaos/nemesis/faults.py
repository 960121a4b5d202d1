"""The faults a nemesis injects into a :class:`~millpond.chaos.harness.ChaosCluster`.

A fault is an object with two coroutines:

* ``start(cluster, rng) -> FaultRecord`` chooses its targets with ``rng`` (and, for ``leader`` or
  ``controller`` targets, the cluster's current state), injects the fault, and returns a record:
  the targets, whether a majority of every replica group can still make progress while it lasts
  (``keeps_majority``, computed from the cluster's fault state after the injection, so faults
  already active count too), a JSON-able ``detail``, and the private state ``stop`` needs.
* ``stop(cluster, record) -> dict`` heals exactly what that ``start`` did (restart what it killed,
  resume what it paused, heal the links it cut, remove the toxics it added, move back the replica
  it moved) and returns what it did, for the log.

Everything disruptive happens inside the window: ``restart`` faults stop their targets cleanly at
``start`` and start them again at ``stop``; ``rolling-restart`` rolls in a task that ``start``
launches and ``stop`` awaits. A fault that cannot run now (no topic to pick a leader from, no spare
node to move a replica to, no leader within ``TARGET_WAIT_S``) raises :class:`FaultNotApplicable`
from ``start`` having changed nothing.

``keeps_majority`` follows Raft's need: a group can make progress if some up member has two-way
links to enough up members to form a majority with itself (a leader needs its followers, the
followers need not hear each other -- see :func:`millpond.chaos.harness.has_connected_majority`).
Groups are the metadata log's voters and the replica sets of the workload topic (all topics if
none is named).

Concurrent faults (``faults_at_once > 1`` in the schedule) must not touch the same link or node:
healing one would heal the other's part too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from millpond.chaos.harness import ChaosCluster, CutMode
from millpond.errors import MillpondError
from millpond.testing.waiting import WaitTimeout, wait_until_async

__all__ = [
    "PACKET_KINDS",
    "PARTITION_SHAPES",
    "TARGETS",
    "Fault",
    "FaultNotApplicable",
    "FaultRecord",
    "LeaderTransferFault",
    "MembershipFault",
    "PacketFault",
    "PartitionFault",
    "PartitionPlan",
    "ProcessFault",
    "RollingRestartFault",
    "choose_nodes",
    "plan_partition",
]

Target = Literal["one", "leader", "controller", "minority", "majority", "all"]
TARGETS: tuple[Target, ...] = ("one", "leader", "controller", "minority", "majority", "all")
ProcessAction = Literal["kill", "pause", "restart"]
PartitionShape = Literal["isolate-one", "isolate-leader", "halves", "majorities-ring", "bridge", "one-way"]
PARTITION_SHAPES: tuple[PartitionShape, ...] = (
    "isolate-one", "isolate-leader", "halves", "majorities-ring", "bridge", "one-way",
)
PacketKind = Literal["latency", "bandwidth", "slicer", "reset-peer"]
PACKET_KINDS: tuple[PacketKind, ...] = ("latency", "bandwidth", "slicer", "reset-peer")

#: Seconds a fault waits for a leader or an active controller to aim at.
TARGET_WAIT_S = 30.0
#: Seconds a pause lasts at least beyond the longest election timeout, so that it is a fault.
PAUSE_MARGIN_S = 0.5
#: Seconds a rolling restart may take in all (each node restarts, then the cluster must be ready).
ROLL_TIMEOUT_S = 300.0
#: Seconds a rolling restart waits for the cluster to be ready after each node.
ROLL_READY_TIMEOUT_S = 90.0
#: Seconds a replica move may take to show in the metadata before it is moved back / reported.
MOVE_SETTLE_S = 60.0
#: Latency toxic: base delay range and largest jitter, milliseconds.
LATENCY_MS_RANGE = (20, 200)
JITTER_MS_MAX = 50
#: Bandwidth toxic: rates to choose from, KiB per second.
BANDWIDTH_KIB_S_CHOICES = (16, 64, 256)
#: Slicer toxic: average slice sizes to choose from (bytes) and the largest delay between slices (µs).
SLICER_BYTES_CHOICES = (16, 64, 512)
SLICER_DELAY_US_MAX = 500
#: reset_peer toxic: range of the delay before each connection is reset, milliseconds.
RESET_PEER_MS_RANGE = (0, 1000)
#: Share of the directed links a packet fault picks (at least one).
PACKET_LINK_SHARE = 0.5


class FaultNotApplicable(Exception):
    """The fault cannot run against the cluster now; ``start`` changed nothing."""


@dataclass
class FaultRecord:
    """One injected fault: what the log shows, and what ``stop`` needs to heal it (``undo``)."""

    fault: str
    targets: list[int]
    keeps_majority: bool
    detail: dict[str, Any] = field(default_factory=dict)
    undo: Any = field(default=None, repr=False, compare=False)


class Fault(ABC):
    """A kind of fault, named as in the registry. ``topic`` is the workload topic whose partitions
    ``leader`` targets, leader transfers and replica moves pick from (None: any topic)."""

    def __init__(self, name: str, description: str, topic: str | None = None) -> None:
        self.name = name
        self.description = description
        self.topic = topic

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @abstractmethod
    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        """Choose targets, inject the fault, return its record. Raises :class:`FaultNotApplicable`
        (nothing changed); any other error may leave part of the fault in place (heal with
        :meth:`ChaosCluster.heal_all`)."""

    @abstractmethod
    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        """Heal what ``start`` did for ``record``; return what was done."""


# --- choosing targets -------------------------------------------------------------------------------
async def pick_topic(cluster: ChaosCluster, topic: str | None, rng: random.Random) -> str:
    """``topic``, or a random topic of the cluster. Raises :class:`FaultNotApplicable` if there is none."""
    if topic is not None:
        return topic
    try:
        names = sorted(t.name for t in (await cluster.describe()).topics)
    except MillpondError as exc:
        raise FaultNotApplicable(f"cannot list topics: {exc}") from exc
    if not names:
        raise FaultNotApplicable("the cluster has no topic to pick a partition from")
    return rng.choice(names)


async def pick_partition(cluster: ChaosCluster, topic: str | None, rng: random.Random) -> tuple[str, int]:
    """A random partition of ``topic`` (or of a random topic)."""
    name = await pick_topic(cluster, topic, rng)
    count = await cluster.partition_count(name)
    if count == 0:
        raise FaultNotApplicable(f"no node describes topic {name!r}")
    return name, rng.randrange(count)


async def choose_nodes(
    target: Target, cluster: ChaosCluster, rng: random.Random, topic: str | None = None
) -> tuple[list[int], dict[str, Any]]:
    """The nodes ``target`` names now, sorted, and a detail (the partition a ``leader`` leads).

    ``one``: a random up node; ``leader``: the leader of a random partition of ``topic``;
    ``controller``: the active controller; ``minority``: 1 to (N-1)/2 random up nodes;
    ``majority``: a random majority that is not everything (N/2+1 to N-1 nodes; all of them for
    N < 3); ``all``: every node. Raises :class:`FaultNotApplicable` when there are not enough up
    nodes or no leader / controller appears within ``TARGET_WAIT_S``.
    """
    everyone = sorted(cluster.node_ids)
    up = sorted(cluster.up())
    count = len(everyone)
    majority = count // 2 + 1
    detail: dict[str, Any] = {}
    try:
        if target == "all":
            return everyone, detail
        if target == "leader":
            name, partition = await pick_partition(cluster, topic, rng)
            detail.update(topic=name, partition=partition)
            return [await cluster.wait_leader(name, partition, TARGET_WAIT_S)], detail
        if target == "controller":
            controller = await wait_until_async(cluster.controller_id, TARGET_WAIT_S, "an active controller")
            return [controller], detail
    except WaitTimeout as exc:
        raise FaultNotApplicable(str(exc)) from exc
    if target == "one":
        size = 1
    elif target == "minority":
        size = rng.randint(1, max(1, (count - 1) // 2))
    elif target == "majority":
        size = rng.randint(majority, max(majority, count - 1))
    else:
        raise ValueError(f"unknown target {target!r}")
    if len(up) < size:
        raise FaultNotApplicable(f"{target} needs {size} up nodes, {len(up)} are up")
    return sorted(rng.sample(up, size)), detail


# --- process faults -------------------------------------------------------------------------------------
class ProcessFault(Fault):
    """``kill`` (SIGKILL; started again at stop), ``pause`` (SIGSTOP for at least the longest
    election timeout plus ``PAUSE_MARGIN_S``; SIGCONT at stop) or ``restart`` (clean SIGTERM
    shutdown; started again at stop) of the nodes a target names."""

    def __init__(self, name: str, description: str, action: ProcessAction, target: Target,
                 topic: str | None = None) -> None:
        super().__init__(name, description, topic)
        self.action = action
        self.target = target

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        nodes, detail = await choose_nodes(self.target, cluster, rng, self.topic)
        if self.action == "kill":
            for node in nodes:
                await cluster.kill(node)
        elif self.action == "pause":
            for node in nodes:
                await cluster.pause(node)
            detail["pause_s_min"] = cluster.election_timeout_max_s + PAUSE_MARGIN_S
        else:
            codes = await asyncio.gather(*(cluster.stop_node(node) for node in nodes))
            detail["exit_codes"] = dict(zip(map(str, nodes), codes, strict=True))
        return FaultRecord(self.name, nodes, cluster.keeps_majority(groups), detail,
                           undo=(nodes, asyncio.get_running_loop().time()))

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        nodes, since = record.undo
        if self.action == "pause":
            loop = asyncio.get_running_loop()
            # The fault is only a fault if the paused nodes miss an election timeout.
            await asyncio.sleep(max(0.0, since + record.detail["pause_s_min"] - loop.time()))
            for node in nodes:
                await cluster.resume(node)
            return {"resumed": nodes, "paused_s": round(loop.time() - since, 3)}
        stopped = [node for node in nodes if not cluster.running(node)]
        await asyncio.gather(*(cluster.start_node(node) for node in stopped))
        return {"started": stopped}


class RollingRestartFault(Fault):
    """Restart every node in turn (clean SIGTERM, start), waiting for the cluster to be ready in
    between. The roll runs in a task: ``start`` launches it, ``stop`` waits for it (at most
    ``ROLL_TIMEOUT_S``) and starts any node it left stopped."""

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        order = rng.sample(sorted(cluster.node_ids), len(cluster.node_ids))
        # One node is down at a time: the roll keeps a majority if every single node may be down.
        keeps = all(cluster.keeps_majority(groups, extra_down=[node]) for node in order)
        task = asyncio.create_task(self._roll(cluster, order), name=f"nemesis {self.name}")
        return FaultRecord(self.name, order, keeps, {"order": order}, undo=task)

    @staticmethod
    async def _roll(cluster: ChaosCluster, order: Sequence[int]) -> list[int]:
        done: list[int] = []
        for node in order:
            await cluster.restart(node)
            await cluster.wait_ready(ROLL_READY_TIMEOUT_S)
            done.append(node)
        return done

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        task: asyncio.Task[list[int]] = record.undo
        detail: dict[str, Any] = {}
        try:
            detail["restarted"] = await asyncio.wait_for(task, ROLL_TIMEOUT_S)
        except (TimeoutError, WaitTimeout, MillpondError, RuntimeError) as exc:
            detail["error"] = f"{type(exc).__name__}: {exc}"
        stopped = [node for node in cluster.node_ids if not cluster.running(node)]
        await asyncio.gather(*(cluster.start_node(node) for node in stopped))
        detail["started"] = stopped
        return detail


# --- network partitions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionPlan:
    """Which directed links a partition cuts, whom it aims at, and its shape's detail."""

    links: tuple[tuple[int, int], ...]
    targets: tuple[int, ...]
    detail: dict[str, Any]


def plan_partition(
    shape: PartitionShape, nodes: Sequence[int], rng: random.Random, chosen: int | None = None
) -> PartitionPlan:
    """The links a partition of ``shape`` cuts among ``nodes`` (pure; ``rng`` decides the sides).

    * ``isolate-one`` / ``isolate-leader``: ``chosen`` (a random node if None) loses every link
      both ways; targets ``[chosen]``.
    * ``halves``: a random floor(N/2) nodes against the rest, both ways; targets: the minority.
    * ``majorities-ring`` (Jepsen): nodes on a random ring; each node hears only the majority
      window centred on itself (every node sees a majority, no two the same one); the links *into*
      a node from outside its window are cut -- asymmetric. Targets: every node.
    * ``bridge``: two halves cut from each other both ways except one node of the larger half, the
      bridge, which keeps its links to both; targets: every node but the bridge.
    * ``one-way``: one random directed link ``i->j`` (i's calls to j and their answers fail, j's
      calls to i work); targets ``[i, j]``.
    """
    ordered = sorted(nodes)
    count = len(ordered)
    if count < 2:
        raise ValueError("a partition needs at least 2 nodes")
    links: set[tuple[int, int]] = set()

    def cut_between(side_a: Sequence[int], side_b: Sequence[int]) -> None:
        for a in side_a:
            for b in side_b:
                links.update({(a, b), (b, a)})

    if shape in ("isolate-one", "isolate-leader"):
        victim = chosen if chosen is not None else rng.choice(ordered)
        rest = [node for node in ordered if node != victim]
        cut_between([victim], rest)
        return PartitionPlan(tuple(sorted(links)), (victim,), {"groups": [[victim], rest]})
    shuffled = rng.sample(ordered, count)
    if shape == "halves":
        minority, majority = sorted(shuffled[: count // 2]), sorted(shuffled[count // 2:])
        cut_between(minority, majority)
        return PartitionPlan(tuple(sorted(links)), tuple(minority), {"groups": [minority, majority]})
    if shape == "majorities-ring":
        window = count // 2 + 1
        for start in range(count):
            seen = [shuffled[(start + offset) % count] for offset in range(window)]
            centre = seen[window // 2]
            links.update((other, centre) for other in ordered if other not in seen)
        return PartitionPlan(tuple(sorted(links)), tuple(ordered), {"ring": shuffled})
    if shape == "bridge":
        if count < 3:
            raise ValueError("a bridge needs at least 3 nodes")
        first, second = shuffled[: count // 2], shuffled[count // 2:]
        bridge, far = second[0], sorted(second[1:])
        cut_between(sorted(first), far)
        targets = tuple(sorted([*first, *far]))
        return PartitionPlan(tuple(sorted(links)), targets,
                             {"bridge": bridge, "groups": [sorted(first), far]})
    if shape == "one-way":
        source, destination = shuffled[0], shuffled[1]
        return PartitionPlan(((source, destination),), (source, destination),
                             {"from": source, "to": destination})
    raise ValueError(f"unknown partition shape {shape!r}")


class PartitionFault(Fault):
    """Cut the links of a :func:`plan_partition` shape, in ``refuse`` or ``silent`` mode."""

    def __init__(self, name: str, description: str, shape: PartitionShape, mode: CutMode,
                 topic: str | None = None) -> None:
        super().__init__(name, description, topic)
        self.shape = shape
        self.mode = mode

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        chosen: int | None = None
        detail: dict[str, Any] = {"mode": self.mode}
        if self.shape == "isolate-leader":
            leaders, found = await choose_nodes("leader", cluster, rng, self.topic)
            chosen = leaders[0]
            detail.update(found)
        elif self.shape == "isolate-one":
            chosen = (await choose_nodes("one", cluster, rng))[0][0]
        plan = plan_partition(self.shape, cluster.node_ids, rng, chosen)
        for i, j in plan.links:
            await cluster.cut(i, j, self.mode)
        detail.update(plan.detail, links=[list(link) for link in plan.links])
        return FaultRecord(self.name, list(plan.targets), cluster.keeps_majority(groups), detail,
                           undo=plan.links)

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        for i, j in record.undo:
            await cluster.heal_link(i, j)
        return {"healed": [list(link) for link in record.undo]}


# --- packet faults ----------------------------------------------------------------------------------------
def packet_toxic(kind: PacketKind, rng: random.Random) -> tuple[str, dict[str, int]]:
    """The Toxiproxy toxic type and random attributes of a packet fault ``kind``."""
    if kind == "latency":
        return "latency", {"latency": rng.randint(*LATENCY_MS_RANGE), "jitter": rng.randint(0, JITTER_MS_MAX)}
    if kind == "bandwidth":
        return "bandwidth", {"rate": rng.choice(BANDWIDTH_KIB_S_CHOICES)}
    if kind == "slicer":
        size = rng.choice(SLICER_BYTES_CHOICES)
        return "slicer", {"average_size": size, "size_variation": size // 2,
                          "delay": rng.randint(0, SLICER_DELAY_US_MAX)}
    if kind == "reset-peer":
        return "reset_peer", {"timeout": rng.randint(*RESET_PEER_MS_RANGE)}
    raise ValueError(f"unknown packet fault {kind!r}")


class PacketFault(Fault):
    """A toxic (latency with jitter, a bandwidth cap, a slicer, or TCP resets) on both streams of a
    random share of the directed links (``PACKET_LINK_SHARE``, at least one)."""

    def __init__(self, name: str, description: str, kind: PacketKind, topic: str | None = None) -> None:
        super().__init__(name, description, topic)
        self.kind = kind

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        links = cluster.links()
        chosen = [link for link in links if rng.random() < PACKET_LINK_SHARE] or [rng.choice(links)]
        toxic, attributes = packet_toxic(self.kind, rng)
        added: list[tuple[tuple[int, int], list[str]]] = []
        for i, j in chosen:
            added.append(((i, j), await cluster.add_packet_fault(i, j, toxic, attributes)))
        targets = sorted({node for link in chosen for node in link})
        detail = {"toxic": toxic, "attributes": attributes, "links": [list(link) for link in chosen]}
        return FaultRecord(self.name, targets, cluster.keeps_majority(groups), detail, undo=added)

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        for (i, j), toxics in record.undo:
            await cluster.remove_packet_fault(i, j, toxics)
        return {"removed": [list(link) for link, _ in record.undo]}


# --- admin-driven faults ------------------------------------------------------------------------------------
class LeaderTransferFault(Fault):
    """Ask a random partition's leader to hand leadership to another up replica
    (``AsyncAdmin.transfer_leadership``). Nothing to heal: stop reports who leads then."""

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        topic, partition = await pick_partition(cluster, self.topic, rng)
        try:
            leader = await cluster.wait_leader(topic, partition, TARGET_WAIT_S)
        except WaitTimeout as exc:
            raise FaultNotApplicable(str(exc)) from exc
        described = await cluster.describe_partition(topic, partition)
        up = cluster.up()
        candidates = sorted(r for r in (described.replicas if described else ()) if r != leader and r in up)
        if not candidates:
            raise FaultNotApplicable(f"{topic}/{partition} has no other up replica to lead")
        target = rng.choice(candidates)
        detail: dict[str, Any] = {"topic": topic, "partition": partition, "from": leader, "to": target}
        try:
            now_leader, epoch = await cluster.admin().transfer_leadership(topic, partition, target)
            detail.update(leader_after=now_leader, leader_epoch=epoch)
        except MillpondError as exc:  # the request was made: it is a fault either way
            detail["error"] = f"{type(exc).__name__}: {exc}"
        return FaultRecord(self.name, [target], cluster.keeps_majority(groups), detail,
                           undo=(topic, partition))

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        topic, partition = record.undo
        return {"leader": await cluster.leader_of(topic, partition)}


class MembershipFault(Fault):
    """Move one replica of a random partition (one with fewer replicas than nodes) to a node that
    holds none (``AsyncAdmin.reassign_partition``); stop moves it back and waits (at most
    ``MOVE_SETTLE_S``) until the metadata shows the original replicas again."""

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        groups = await cluster.replica_groups(self.topic)
        topic = await pick_topic(cluster, self.topic, rng)
        count = await cluster.partition_count(topic)
        up = set(cluster.up())
        movable: list[tuple[int, list[int], list[int]]] = []
        for partition in range(count):
            described = await cluster.describe_partition(topic, partition)
            if described is None:
                continue
            spares = sorted(up - set(described.replicas))
            if spares:
                movable.append((partition, list(described.replicas), spares))
        if not movable:
            raise FaultNotApplicable(f"every partition of {topic!r} has a replica on every up node")
        partition, replicas, spares = rng.choice(movable)
        leaving, joining = rng.choice(replicas), rng.choice(spares)
        moved = [joining if node == leaving else node for node in replicas]
        detail: dict[str, Any] = {"topic": topic, "partition": partition,
                                  "from_replicas": replicas, "to_replicas": moved}
        try:
            await cluster.admin().reassign_partition(topic, partition, moved)
        except MillpondError as exc:
            detail["error"] = f"{type(exc).__name__}: {exc}"
        return FaultRecord(self.name, [leaving, joining], cluster.keeps_majority(groups), detail,
                           undo=(topic, partition, replicas, moved))

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        topic, partition, original, moved = record.undo
        detail: dict[str, Any] = {"moved_settled": await self._settle(cluster, topic, partition, moved)}
        try:
            await cluster.admin().reassign_partition(topic, partition, original)
        except MillpondError as exc:
            detail["error"] = f"{type(exc).__name__}: {exc}"
        detail["restored"] = await self._settle(cluster, topic, partition, original)
        return detail

    @staticmethod
    async def _settle(cluster: ChaosCluster, topic: str, partition: int, replicas: Sequence[int]) -> bool:
        """Wait until the metadata lists ``replicas`` (in any order); False after ``MOVE_SETTLE_S``."""

        async def settled() -> bool:
            described = await cluster.describe_partition(topic, partition)
            return described is not None and sorted(described.replicas) == sorted(replicas)

        with contextlib.suppress(WaitTimeout):
            return await wait_until_async(settled, MOVE_SETTLE_S, f"{topic}/{partition} on {list(replicas)}")
        return False
