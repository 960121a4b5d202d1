"""``millpond cluster status`` and ``millpond topic create|list|describe|alter|delete``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from millpond._cli.common import CommandError, join_ids, parse_pairs, print_table
from millpond.client import AsyncAdmin, ClientConfig, ClusterDescription, TopicDescription
from millpond.errors import MillpondError

_WAIT_POLL_S = 0.25
#: How long an admin command keeps retrying an unreachable cluster before it reports it.
_REQUEST_TIMEOUT_MS = 5000


def _admin(args: argparse.Namespace, request_timeout_ms: int = _REQUEST_TIMEOUT_MS) -> AsyncAdmin:
    return AsyncAdmin(args.bootstrap, ClientConfig(request_timeout_ms=request_timeout_ms))


def _cluster_json(cluster: ClusterDescription) -> dict[str, Any]:
    return {
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller,
        "controller_voters": list(cluster.controller_voters),
        "nodes": [asdict(node) for node in cluster.nodes],
        "topics": len(cluster.topics),
        "partitions": sum(len(t.partitions) for t in cluster.topics),
        "under_replicated_partitions": cluster.under_replicated_partitions,
        "offline_partitions": cluster.offline_partitions,
        "ready": cluster.ready,
    }


def _not_ready_reason(cluster: ClusterDescription) -> str:
    reasons = []
    if not cluster.controller:
        reasons.append("no active controller")
    down = [n.id for n in cluster.nodes if not n.alive]
    if down:
        reasons.append(f"nodes not alive: {join_ids(down)}")
    leaderless = sum(1 for t in cluster.topics for p in t.partitions if not p.leader)
    if leaderless or cluster.offline_partitions:
        reasons.append(f"{max(leaderless, cluster.offline_partitions)} partitions without a leader")
    return "; ".join(reasons) or "no nodes registered"


def cluster_status(args: argparse.Namespace) -> int:
    """Nodes, the active controller, under-replicated and offline partitions; ``--wait`` until ready."""

    async def describe() -> ClusterDescription:
        if args.wait is None:
            async with _admin(args) as admin:
                return await admin.describe_cluster(include_topics=True)
        deadline = time.monotonic() + args.wait
        last: ClusterDescription | None = None
        error: MillpondError | None = None
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            try:
                async with _admin(args, max(100, min(2000, remaining_ms))) as admin:
                    last = await admin.describe_cluster(include_topics=True)
                error = None
                if last.ready:
                    return last
            except MillpondError as exc:
                error = exc
            if time.monotonic() >= deadline:
                if error is not None or last is None:
                    reason = f"{type(error).__name__}: {error}"
                else:
                    reason = _not_ready_reason(last)
                raise CommandError(f"cluster not ready after {args.wait:g} s: {reason}")
            await asyncio.sleep(_WAIT_POLL_S)

    cluster = asyncio.run(describe())
    if args.json:
        print(json.dumps(_cluster_json(cluster)))
        return 0
    print(f"cluster {cluster.cluster_id}  controller {cluster.controller or 'none'}  "
          f"voters {join_ids(cluster.controller_voters)}")
    print_table(
        ["node", "address", "alive", "epoch", "role"],
        [[n.id, n.address, "yes" if n.alive else "NO", n.epoch,
          "controller" if n.id == cluster.controller else ""] for n in cluster.nodes],
    )
    partitions = sum(len(t.partitions) for t in cluster.topics)
    print(f"topics {len(cluster.topics)}  partitions {partitions}  "
          f"under-replicated {cluster.under_replicated_partitions}  offline {cluster.offline_partitions}")
    return 0


def topic_create(args: argparse.Namespace) -> int:
    config = dict(parse_pairs(args.config, "--config"))

    async def create() -> TopicDescription:
        async with _admin(args) as admin:
            return await admin.create_topic(args.name, args.partitions, args.replication, config)

    topic = asyncio.run(create())
    print(f"created topic {topic.name} "
          f"({len(topic.partitions)} partitions, replication {topic.replication_factor})")
    return 0


def topic_list(args: argparse.Namespace) -> int:
    async def names() -> list[str]:
        async with _admin(args) as admin:
            return await admin.list_topics()

    for name in asyncio.run(names()):
        print(name)
    return 0


def _topic_json(topic: TopicDescription) -> dict[str, Any]:
    return {
        "name": topic.name,
        "topic_id": topic.topic_id,
        "replication_factor": topic.replication_factor,
        "config": dict(topic.config),
        "partitions": [
            {**asdict(p), "replicas": list(p.replicas), "isr": list(p.isr)} for p in topic.partitions
        ],
    }


def topic_describe(args: argparse.Namespace) -> int:
    async def describe() -> TopicDescription:
        async with _admin(args) as admin:
            return await admin.describe_topic(args.name)

    topic = asyncio.run(describe())
    if args.json:
        print(json.dumps(_topic_json(topic)))
        return 0
    config = " ".join(f"{k}={v}" for k, v in sorted(topic.config.items()))
    print(f"topic {topic.name}  id {topic.topic_id}  partitions {len(topic.partitions)}  "
          f"replication {topic.replication_factor}" + (f"  config {config}" if config else ""))
    print_table(
        ["partition", "leader", "epoch", "replicas", "isr", "log-start", "high-watermark"],
        [[p.partition, p.leader or "none", p.leader_epoch, join_ids(p.replicas), join_ids(p.isr),
          p.log_start_offset, p.high_watermark] for p in topic.partitions],
    )
    return 0


def topic_alter(args: argparse.Namespace) -> int:
    async def alter() -> TopicDescription:
        async with _admin(args) as admin:
            return await admin.alter_partitions(args.name, args.partitions)

    topic = asyncio.run(alter())
    print(f"topic {topic.name} now has {len(topic.partitions)} partitions")
    return 0


def topic_delete(args: argparse.Namespace) -> int:
    async def delete() -> None:
        async with _admin(args) as admin:
            await admin.delete_topic(args.name)

    asyncio.run(delete())
    print(f"deleted topic {args.name}")
    return 0
