"""The ``log`` workload: keyed producers and pollers on one replicated topic, then a full read-back.

Producers send unique values (``"<process>-<n>"``) under a small key space,
one record per produce, ``acks=all`` (or ``acks=1`` for ``acks1-demo``), to
the partition the key hashes to. Pollers start at offset 0 of every
partition and fetch committed records in a rotation. After the runner healed
all faults, a fresh process per partition reads it from the beginning until it
reaches the high watermark, and every replica is asked for its high watermark
and a checksum of its committed prefix (replica divergence).

``acks1-demo`` runs the same under leader kills with ``acks=1``: an
acknowledged record can die with its leader before any follower has it, so
``lost-write``/``unseen`` (and the offset reuse that follows:
``inconsistent-offsets``, ``stale-offset``, ``nonmonotonic-send``) are
*expected* and reported as allowed: the documented semantics of ``acks=1``.

Options (``--opt k=v``): ``partitions`` (3), ``producers`` (4), ``pollers`` (2),
``keys`` (12), ``rate`` (total sends per second, 150), ``send_timeout_ms`` (3000),
``replication`` (min(3, nodes); fewer replicas than nodes gives the ``membership`` fault
somewhere to move a replica to).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from millpond.chaos.workloads.base import FinalState, WorkloadContext
from millpond.chaos.workloads.wire import Failed, FetchResult, Indeterminate, WireClient
from millpond.node.channels import channel_options
from millpond.partitioner import partition_for_key
from millpond.v1 import admin_pb2, admin_pb2_grpc
from millpond.v1 import broker_pb2 as pb

#: Process ids: producers count up from 0 (a producer that got ``info`` continues as
#: ``process + producers``), pollers from this base, final readers from the next.
POLLER_PROCESS_BASE = 1_000_000
FINAL_PROCESS_BASE = 2_000_000
#: Bytes per fetch; long-poll wait of a poller's fetch.
FETCH_BYTES = 256 * 1024
POLL_WAIT_MS = 200
#: Per-RPC deadline of metadata and fetch calls.
RPC_TIMEOUT_S = 3.0
#: Pause after an operation that could not even be attempted (no leader known), so a leaderless
#: partition does not turn a producer into a busy loop.
NO_LEADER_PAUSE_S = 0.1


@dataclass(frozen=True)
class LogOptions:
    partitions: int = 3
    producers: int = 4
    pollers: int = 2
    keys: int = 12
    rate: float = 150.0
    send_timeout_ms: int = 3000
    replication: int = 0  # 0: min(3, nodes)

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> LogOptions:
        known = {"partitions", "producers", "pollers", "keys", "rate", "send_timeout_ms", "replication"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown log workload options {unknown}; known: {sorted(known)}")
        try:
            parsed = cls(
                partitions=int(options.get("partitions", cls.partitions)),
                producers=int(options.get("producers", cls.producers)),
                pollers=int(options.get("pollers", cls.pollers)),
                keys=int(options.get("keys", cls.keys)),
                rate=float(options.get("rate", cls.rate)),
                send_timeout_ms=int(options.get("send_timeout_ms", cls.send_timeout_ms)),
                replication=int(options.get("replication", cls.replication)),
            )
        except ValueError as exc:
            raise ValueError(f"bad log workload option: {exc}") from exc
        for name in ("partitions", "producers", "keys", "send_timeout_ms"):
            if getattr(parsed, name) < 1:
                raise ValueError(f"option {name} must be >= 1")
        if parsed.pollers < 0 or not 0 < parsed.rate <= 10_000 or parsed.replication < 0:
            raise ValueError("pollers and replication must be >= 0 and rate in (0, 10000]")
        return parsed


class LogWorkload:
    """See the module docstring."""

    checker = "log"

    def __init__(self, name: str = "log", acks: int = pb.ACKS_ALL,
                 allowed: frozenset[str] = frozenset(), node_args: tuple[str, ...] = (),
                 description: str = "", defaults: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._defaults = dict(defaults or {})
        self.acks = acks
        self.allowed = allowed
        self.node_args = node_args
        self.description = description or "keyed acks=all producers, pollers, full read-back"
        self.topic = "chaos-log"
        self.options = LogOptions()
        self.partitions = self.options.partitions
        self._replication = 0
        self._client: WireClient | None = None

    def configure(self, options: Mapping[str, str], nodes: int) -> None:
        """Apply ``--opt`` values (ValueError names a bad one)."""
        self.options = LogOptions.parse({**self._defaults, **options})
        self.partitions = self.options.partitions
        self._replication = self.options.replication or min(3, nodes)
        if self._replication > nodes:
            raise ValueError(f"replication {self._replication} exceeds the {nodes} nodes")

    # --- setup ---------------------------------------------------------------------------------
    async def setup(self, ctx: WorkloadContext) -> None:
        self._replication = self._replication or min(3, len(ctx.addresses))
        self._client = WireClient(dict(ctx.addresses), self.topic, RPC_TIMEOUT_S)
        await _create_topic(ctx.addresses, self.topic, self.partitions, self._replication)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            await self._client.refresh_leaders()
            if all(self._client.leader_of(p) for p in range(self.partitions)):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"topic {self.topic} has partitions without a leader after 60 s")
            await asyncio.sleep(0.1)

    # --- the faulty period -----------------------------------------------------------------------
    async def run(self, ctx: WorkloadContext, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            for worker in range(self.options.producers):
                tasks.create_task(self._producer(ctx, stop, worker))
            for worker in range(self.options.pollers):
                tasks.create_task(self._poller(ctx, stop, worker))

    async def _producer(self, ctx: WorkloadContext, stop: asyncio.Event, worker: int) -> None:
        client = self._require_client()
        options = self.options
        interval_s = options.producers / options.rate
        process, sent = worker, 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            key = f"k{ctx.rng.randrange(options.keys)}"
            partition = partition_for_key(key.encode(), self.partitions)
            value = f"{process}-{sent}"
            sent += 1
            op = ctx.history.invoke(process, "send", {"key": key, "value": value, "partition": partition},
                                    node=client.leader_of(partition))
            try:
                offset, node = await asyncio.wait_for(
                    client.send(partition, key, value, self.acks), options.send_timeout_ms / 1000)
            except Failed as exc:
                ctx.history.complete(op, "fail", op.value, exc.error, node=exc.node)
                if exc.node is None:
                    await _pause(stop, NO_LEADER_PAUSE_S)
            except (Indeterminate, TimeoutError) as exc:
                error = exc.error if isinstance(exc, Indeterminate) else "TIMEOUT"
                ctx.history.complete(op, "info", op.value, error,
                                     node=exc.node if isinstance(exc, Indeterminate) else None)
                process += options.producers  # this process may have a write in flight: retire it
                sent = 0
            else:
                ctx.history.complete(op, "ok", {**op.value, "offset": offset}, node=node)
            next_at = max(next_at + interval_s, loop.time() - 1.0)
            await _pause(stop, next_at - loop.time())

    async def _poller(self, ctx: WorkloadContext, stop: asyncio.Event, worker: int) -> None:
        client = self._require_client()
        process = POLLER_PROCESS_BASE + worker
        positions = dict.fromkeys(range(self.partitions), 0)
        self._assign(ctx, process, positions)
        turn = worker
        while not stop.is_set():
            partition = turn % self.partitions
            turn += 1
            op = ctx.history.invoke(process, "poll", {}, node=client.leader_of(partition))
            try:
                result: FetchResult = await client.fetch(partition, positions[partition], POLL_WAIT_MS,
                                                         FETCH_BYTES)
            except Failed as exc:
                ctx.history.complete(op, "fail", None, exc.error, node=exc.node)
                start = _out_of_range_start(exc.error)
                if start is not None:  # our position left the log: seek to its start, on the record
                    positions[partition] = start
                    self._assign(ctx, process, positions)
                else:
                    await _pause(stop, NO_LEADER_PAUSE_S)
                continue
            records = [[r.partition, r.offset, r.key, r.value] for r in result.records]
            ctx.history.complete(op, "ok", {"records": records}, node=result.node)
            if result.records:
                positions[partition] = result.records[-1].offset + 1

    def _assign(self, ctx: WorkloadContext, process: int, positions: dict[int, int]) -> None:
        value = {"partitions": sorted(positions), "positions": {str(p): o for p, o in positions.items()}}
        op = ctx.history.invoke(process, "assign", value)
        ctx.history.complete(op, "ok", value)

    # --- after healing -------------------------------------------------------------------------------
    async def final(self, ctx: WorkloadContext, deadline_s: float) -> FinalState:
        client = self._require_client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        for partition in range(self.partitions):
            await self._final_read(ctx, client, partition, deadline)
        replicas = await self._replica_states(client, deadline)
        await client.close()
        return FinalState(replicas=replicas)

    async def _final_read(self, ctx: WorkloadContext, client: WireClient, partition: int,
                          deadline: float) -> None:
        """Read ``partition`` from offset 0 until a fetch at the high watermark returns nothing."""
        loop = asyncio.get_running_loop()
        process = FINAL_PROCESS_BASE + partition
        op = ctx.history.invoke(process, "final-read", {"partition": partition})
        records: list[list[Any]] = []
        position, high_watermark, caught_up, last_error = 0, -1, False, None
        while loop.time() < deadline:
            try:
                result = await client.fetch(partition, position, 100, FETCH_BYTES)
            except Failed as exc:
                last_error = exc.error
                start = _out_of_range_start(exc.error)
                if start is not None and start > position:
                    last_error = f"log start moved past {position}: {exc.error}"
                    break
                await asyncio.sleep(0.1)
                continue
            high_watermark = result.high_watermark
            records.extend([r.partition, r.offset, r.key, r.value] for r in result.records)
            if result.records:
                position = result.records[-1].offset + 1
            elif position >= high_watermark:
                caught_up = True
                break
        value = {"partition": partition, "high_watermark": high_watermark, "records": records,
                 "caught_up": caught_up}
        ctx.history.complete(op, "ok", value, None if caught_up else last_error or "deadline")

    async def _replica_states(self, client: WireClient,
                              deadline: float) -> dict[str, dict[str, dict[str, Any]]]:
        """Wait (bounded) for every replica of each partition to reach one high watermark; then
        checksum each up to the lowest one."""
        loop = asyncio.get_running_loop()
        states: dict[str, dict[str, dict[str, Any]]] = {}
        for partition in range(self.partitions):
            replicas: tuple[int, ...] = ()
            described: dict[int, Any] = {}
            while True:
                replicas = await client.replicas_of(partition) or replicas
                described = {}
                for node in replicas:
                    response = await client.describe_replica(node, partition)
                    if response is not None:
                        described[node] = response
                marks = {r.high_watermark for r in described.values()}
                if replicas and len(described) == len(replicas) and len(marks) == 1:
                    break
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.2)
            upto = min((r.high_watermark for r in described.values()), default=0)
            entry: dict[str, dict[str, Any]] = {}
            for node in replicas:
                summed = await client.describe_replica(node, partition, upto)
                known = described.get(node)
                entry[str(node)] = {
                    "commit_index": known.high_watermark if known is not None else -1,
                    "upto": summed.checksum_end_offset if summed is not None else -1,
                    "checksum": summed.checksum if summed is not None else "",
                }
            states[f"{self.topic}/{partition}"] = entry
        return states

    def _require_client(self) -> WireClient:
        if self._client is None:
            raise RuntimeError("setup() was not called")
        return self._client


def _out_of_range_start(error: str) -> int | None:
    """The log start offset named by an ``OFFSET_OUT_OF_RANGE [start, hw]`` failure, else None."""
    if not error.startswith("OFFSET_OUT_OF_RANGE ["):
        return None
    with contextlib.suppress(ValueError):
        return int(error.split("[", 1)[1].split(",", 1)[0])
    return None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` (pacing) or until ``stop`` is set, whichever comes first."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _create_topic(addresses: Mapping[int, str], topic: str, partitions: int, replication: int) -> None:
    """Create the workload's topic through any node (retrying while the cluster settles)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    last: Exception | None = None
    while loop.time() < deadline:
        for node in sorted(addresses):
            async with grpc.aio.insecure_channel(addresses[node], options=channel_options()) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                try:
                    await stub.CreateTopic(admin_pb2.CreateTopicRequest(
                        name=topic, partitions=partitions, replication_factor=replication), timeout=10)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                        return
                    last = exc
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not create topic {topic}: {last}")
