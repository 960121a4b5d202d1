"""The ``compaction`` workload: keyed updates and deletes on a compacted topic, then a check that
compaction left exactly the latest record of every key.

Producers update a small set of keys many times over (``acks=all``, one attempt per send, as
the ``log`` workload does), on topic ``chaos-compact`` with ``cleanup_policy=compact``, a short
``min_compaction_lag_ms`` and ``delete_retention_ms``, while the nemesis kills and cuts nodes:
compaction runs on leaders that change. A share of the sends are *tombstones* (null payload):
some delete a key that is written again later, and some *retire* it -- the key's slot moves on to
a fresh key, so the tombstone stays the key's last record, expires after ``delete_retention_ms``
and takes the whole key with it. Every record has a unique identity, the ``value`` of its send:
a value record's payload, or, for a tombstone, the ``chaos-id`` record header (the vocabulary is
in :mod:`millpond.chaos.history`). Pollers read every partition from offset 0 meanwhile, through
batches compaction is rewriting, moving past emptied ones.

**The final phase** (per partition, concurrently) must know that compaction has caught up, or
the checker could not tell a record compaction should have removed from one it has not reached
yet. The cleaner's progress lives only in the leader's memory, so the workload makes it visible
in the data itself:

1. wait until every replica reports one high watermark, unchanged for a while (sends that timed
   out during the faults have landed or never will);
2. send two *marker* records with one fresh key, ``m1`` then ``m2``, at adjacent offsets that end
   the log (C = offset of ``m2`` + 1 is then the high watermark);
3. fetch ``m1``'s offset from the leader until ``m1`` is gone. Only a pass whose compaction point
   includes ``m2`` drops ``m1``, that pass's compaction point is C, and ``m1`` lies in its last
   step with drops (after ``m1`` only ``m2`` follows, the latest of its key). Steps are applied in
   log order on every replica, so once ``m1`` is gone from a node, every step of a pass over the
   whole log ``[start, C)`` is applied there;
4. read the partition from offset 0 on that node (``f="final-read"``), recording C, a wall-clock
   time before that pass began (taken just before ``m2`` is sent: the pass's clock T is later),
   the topic's ``delete_retention_ms`` and when the read ended. If the leader changed meanwhile,
   the read counts as ``fail`` and steps 3-4 repeat on the new leader; if something landed after
   ``m2``, a new marker pair is sent. At the deadline the read is made without a compaction
   point (the checker reports ``compaction-not-caught-up``).

Then every replica's checksum is collected once they agree (rewrites run asynchronously on each
replica, so equal high watermarks are not yet equal bytes), as for the ``log`` workload.

Options (``--opt k=v``): ``partitions`` (3), ``producers`` (4), ``pollers`` (1), ``keys`` (12 key
slots), ``rate`` (total sends per second, 90), ``tombstone_percent`` (10: deletes of a live key),
``retire_percent`` (2: a tombstone that retires its key), ``min_compaction_lag_ms`` (500),
``delete_retention_ms`` (15000), ``send_timeout_ms`` (3000), ``replication`` (min(3, nodes)).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import grpc

from millpond import errors
from millpond.chaos.workloads.base import FinalState, WorkloadContext
from millpond.chaos.workloads.wire import DEFINITE_FAILURES, Failed, Indeterminate, WireClient, error_name
from millpond.node.channels import channel_options
from millpond.partitioner import partition_for_key
from millpond.record_batch import Record, decode_batch, encode_batch, iter_batches
from millpond.v1 import admin_pb2, admin_pb2_grpc
from millpond.v1 import broker_pb2 as pb
from millpond.v1 import broker_pb2_grpc as pb_grpc

__all__ = ["ID_HEADER", "TOPIC", "CompactionClient", "CompactionOptions", "CompactionWorkload"]

TOPIC = "chaos-compact"
#: The record header carrying a tombstone's identity (its payload is null).
ID_HEADER = "chaos-id"

#: Process ids: producers count up from 0 (a producer that got ``info`` continues as ``process +
#: producers``), pollers from this base, final reads and marker pairs from theirs (attempt or round
#: ``n`` of partition ``p`` is ``base + n * partitions + p``).
POLLER_PROCESS_BASE = 1_000_000
FINAL_PROCESS_BASE = 2_000_000
MARKER_PROCESS_BASE = 3_000_000
#: Bytes per fetch; long-poll wait of a poller's fetch; deadline of metadata, fetch and describe calls.
FETCH_BYTES = 256 * 1024
POLL_WAIT_MS = 200
RPC_TIMEOUT_S = 3.0
#: Pause after an operation that could not even be attempted (no leader known).
NO_LEADER_PAUSE_S = 0.1
#: Final phase: how long the replicas' high watermark must hold still before the markers go out,
#: how often compaction's progress is probed, and the share of the deadline kept for the
#: fallback read (without a compaction point) and the replica checksums.
QUIET_S = 1.0
PROBE_INTERVAL_S = 0.5
RESERVE_S = 12.0
#: Bound on marker rounds and final-read attempts per partition (each needs a fault to fail).
ROUNDS_MAX = 20


@dataclass(frozen=True)
class CompactionOptions:
    """The workload's ``--opt`` settings (see the module docstring)."""

    partitions: int = 3
    producers: int = 4
    pollers: int = 1
    keys: int = 12
    rate: float = 90.0
    tombstone_percent: float = 10.0
    retire_percent: float = 2.0
    min_compaction_lag_ms: int = 500
    delete_retention_ms: int = 15_000
    send_timeout_ms: int = 3000
    replication: int = 0  # 0: min(3, nodes)

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> CompactionOptions:
        """Parse ``--opt`` values; ValueError names an unknown or bad one."""
        known = {item.name: item.type for item in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown compaction workload options {unknown}; known: {sorted(known)}")
        try:
            values: dict[str, Any] = {name: float(text) if known[name] == "float" else int(text)
                                      for name, text in options.items()}
        except ValueError as exc:
            raise ValueError(f"bad compaction workload option: {exc}") from exc
        parsed = cls(**values)
        for name in ("partitions", "producers", "keys", "send_timeout_ms"):
            if getattr(parsed, name) < 1:
                raise ValueError(f"option {name} must be >= 1")
        if parsed.pollers < 0 or parsed.replication < 0 or not 0 < parsed.rate <= 10_000:
            raise ValueError("pollers and replication must be >= 0 and rate in (0, 10000]")
        if not 0 <= parsed.tombstone_percent + parsed.retire_percent <= 100 or \
                min(parsed.tombstone_percent, parsed.retire_percent) < 0:
            raise ValueError("tombstone_percent and retire_percent must be >= 0 and add up to at most 100")
        if parsed.min_compaction_lag_ms < 0 or parsed.delete_retention_ms < 0:
            raise ValueError("min_compaction_lag_ms and delete_retention_ms must be >= 0")
        return parsed


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """A record as fetched: ``value`` is its identity (the payload, or a tombstone's ``chaos-id``)."""

    partition: int
    offset: int
    key: str
    value: str
    tombstone: bool


@dataclass(frozen=True, slots=True)
class CompactedFetch:
    """What one fetch returned: records, and the offset after the last batch (emptied ones included)."""

    records: tuple[ReadRecord, ...]
    next_offset: int
    high_watermark: int
    node: int


class CompactionClient(WireClient):
    """:class:`WireClient` plus tombstones: records with a null payload and an identity header, and
    fetches that report where the last returned batch ends, so a reader moves past batches that
    compaction emptied."""

    async def send_record(self, partition: int, key: str, ident: str, tombstone: bool,
                          timestamp_ms: int) -> tuple[int, int]:
        """Produce one record (``acks=all``); return (offset, node). A tombstone has a null payload
        and ``ident`` in its :data:`ID_HEADER`; a value record's payload is ``ident``. Raises
        :class:`Failed` (certainly not appended) or :class:`Indeterminate`."""
        node = await self._leader(partition)
        record = Record(key.encode(), None, ((ID_HEADER, ident.encode()),)) if tombstone else \
            Record(key.encode(), ident.encode())
        batch = encode_batch([record], timestamp_ms=timestamp_ms)
        stub = pb_grpc.BrokerStub(self._channel(node))
        try:
            response = await stub.Produce(
                pb.ProduceRequest(topic=self._topic, partition=partition, acks=pb.ACKS_ALL, batch=batch),
                timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            if isinstance(error, DEFINITE_FAILURES) and _from_server(exc):
                self._forget_or_follow(partition, error)
                raise Failed(error_name(error), node) from exc
            self._leaders.pop(partition, None)
            raise Indeterminate(error_name(error), node) from exc
        return response.base_offset, node

    async def fetch_records(self, partition: int, offset: int, max_wait_ms: int,
                            max_bytes: int) -> CompactedFetch:
        """Committed records of ``partition`` from ``offset`` on, from its leader. Raises
        :class:`Failed` carrying the error name (``OFFSET_OUT_OF_RANGE [start, hw]`` names the
        bounds)."""
        node = await self._leader(partition)
        stub = pb_grpc.BrokerStub(self._channel(node))
        try:
            response = await stub.Fetch(
                pb.FetchRequest(topic=self._topic, partition=partition, offset=offset,
                                max_bytes=max_bytes, max_wait_ms=max_wait_ms),
                timeout=self._timeout_s + max_wait_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            if isinstance(error, errors.NotLeader | errors.Unavailable | errors.RequestTimeout):
                self._forget_or_follow(partition, error)
            if isinstance(error, errors.OffsetOutOfRange):
                raise Failed(f"OFFSET_OUT_OF_RANGE [{error.log_start_offset}, {error.high_watermark}]",
                             node) from exc
            raise Failed(error_name(error), node) from exc
        records: list[ReadRecord] = []
        next_offset = offset
        for view in iter_batches(response.batches):
            header, decoded = decode_batch(view)
            next_offset = max(next_offset, header.next_offset)
            for record in decoded:
                if record.offset >= offset:
                    records.append(_read_record(partition, record))
        return CompactedFetch(tuple(records), next_offset, response.high_watermark, node)


def _read_record(partition: int, record: Record) -> ReadRecord:
    """A fetched record with its identity: the payload, or a tombstone's ``chaos-id`` header ("" if
    it has none: a record nobody sent, which the checker reports)."""
    key = (record.key or b"").decode()
    if record.value is not None:
        return ReadRecord(partition, record.offset, key, record.value.decode(), False)
    ident = next((value for name, value in record.headers if name == ID_HEADER and value is not None), b"")
    return ReadRecord(partition, record.offset, key, ident.decode(), True)


def _from_server(exc: grpc.aio.AioRpcError) -> bool:
    """True when the broker itself answered with a millpond error (see :mod:`.wire`)."""
    return any(key == errors.REASON_KEY for key, _ in exc.trailing_metadata() or ())


def _records_json(records: tuple[ReadRecord, ...] | list[ReadRecord]) -> dict[str, Any]:
    """The ``records`` and ``tombstones`` fields of a read's ok value."""
    return {"records": [[r.partition, r.offset, r.key, r.value] for r in records],
            "tombstones": [[r.partition, r.offset] for r in records if r.tombstone]}


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: the clock of record timestamps and of the nodes' cleaners."""
    return time.time_ns() // 1_000_000


class CompactionWorkload:
    """See the module docstring."""

    checker = "compaction"
    allowed: frozenset[str] = frozenset()
    node_args: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.name = "compaction"
        self.description = ("keyed updates and tombstones on a compacted topic; after healing, "
                            "exactly the latest record per key")
        self.topic = TOPIC
        self.options = CompactionOptions()
        self.partitions = self.options.partitions
        self._replication = 0
        self._client: CompactionClient | None = None
        self._generations: list[int] = []

    def configure(self, options: Mapping[str, str], nodes: int) -> None:
        """Apply ``--opt`` values (ValueError names a bad one)."""
        self.options = CompactionOptions.parse(options)
        self.partitions = self.options.partitions
        self._replication = self.options.replication or min(3, nodes)
        if self._replication > nodes:
            raise ValueError(f"replication {self._replication} exceeds the {nodes} nodes")

    # --- setup -----------------------------------------------------------------------------------
    async def setup(self, ctx: WorkloadContext) -> None:
        """Create the compacted topic and wait until every partition has a leader."""
        self._replication = self._replication or min(3, len(ctx.addresses))
        self._client = CompactionClient(dict(ctx.addresses), self.topic, RPC_TIMEOUT_S)
        self._generations = [0] * self.options.keys
        config = {"cleanup_policy": "compact",
                  "min_compaction_lag_ms": str(self.options.min_compaction_lag_ms),
                  "delete_retention_ms": str(self.options.delete_retention_ms)}
        await _create_topic(ctx.addresses, self.topic, self.partitions, self._replication, config)
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
        """Producers and pollers until ``stop`` is set."""
        async with asyncio.TaskGroup() as tasks:
            for worker in range(self.options.producers):
                tasks.create_task(self._producer(ctx, stop, worker))
            for worker in range(self.options.pollers):
                tasks.create_task(self._poller(ctx, stop, worker))

    def _next_write(self, ctx: WorkloadContext) -> tuple[str, bool]:
        """The key of the next send and whether it is a tombstone (a retiring one moves its slot on)."""
        options = self.options
        slot = ctx.rng.randrange(options.keys)
        key = f"k{slot}.{self._generations[slot]}"
        draw = ctx.rng.random() * 100
        if draw < options.retire_percent:
            self._generations[slot] += 1  # later sends to this slot use a fresh key
            return key, True
        return key, draw < options.retire_percent + options.tombstone_percent

    async def _producer(self, ctx: WorkloadContext, stop: asyncio.Event, worker: int) -> None:
        options = self.options
        interval_s = options.producers / options.rate
        process, sent = worker, 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            key, tombstone = self._next_write(ctx)
            partition = partition_for_key(key.encode(), self.partitions)
            ident = f"{process}-{sent}"
            sent += 1
            outcome, _ = await self._send(ctx, process, partition, key, ident, tombstone)
            if outcome == "info":
                process += options.producers  # this process may have a write in flight: retire it
                sent = 0
            elif outcome == "no-leader":
                await _pause(stop, NO_LEADER_PAUSE_S)
            next_at = max(next_at + interval_s, loop.time() - 1.0)
            await _pause(stop, next_at - loop.time())

    async def _send(self, ctx: WorkloadContext, process: int, partition: int, key: str, ident: str,
                    tombstone: bool) -> tuple[str, int | None]:
        """One recorded send; returns the outcome (``ok``, ``fail``, ``no-leader``, ``info``) and the
        offset of an ok send."""
        client = self._require_client()
        timestamp_ms = wall_clock_ms()
        op = ctx.history.invoke(process, "send", {"key": key, "value": ident, "partition": partition,
                                                  "tombstone": tombstone, "timestamp_ms": timestamp_ms},
                                node=client.leader_of(partition))
        try:
            offset, node = await asyncio.wait_for(
                client.send_record(partition, key, ident, tombstone, timestamp_ms),
                self.options.send_timeout_ms / 1000)
        except Failed as exc:
            ctx.history.complete(op, "fail", op.value, exc.error, node=exc.node)
            return "no-leader" if exc.node is None else "fail", None
        except (Indeterminate, TimeoutError) as exc:
            error = exc.error if isinstance(exc, Indeterminate) else "TIMEOUT"
            ctx.history.complete(op, "info", op.value, error,
                                 node=exc.node if isinstance(exc, Indeterminate) else None)
            return "info", None
        ctx.history.complete(op, "ok", {**op.value, "offset": offset}, node=node)
        return "ok", offset

    async def _poller(self, ctx: WorkloadContext, stop: asyncio.Event, worker: int) -> None:
        client = self._require_client()
        process = POLLER_PROCESS_BASE + worker
        positions = dict.fromkeys(range(self.partitions), 0)
        _assign(ctx, process, positions)
        turn = worker
        while not stop.is_set():
            partition = turn % self.partitions
            turn += 1
            op = ctx.history.invoke(process, "poll", {}, node=client.leader_of(partition))
            try:
                result = await client.fetch_records(partition, positions[partition], POLL_WAIT_MS,
                                                    FETCH_BYTES)
            except Failed as exc:
                ctx.history.complete(op, "fail", None, exc.error, node=exc.node)
                start = _out_of_range_start(exc.error)
                if start is not None:  # our position left the log: seek to its start, on the record
                    positions[partition] = start
                    _assign(ctx, process, positions)
                else:
                    await _pause(stop, NO_LEADER_PAUSE_S)
                continue
            ctx.history.complete(op, "ok", _records_json(result.records), node=result.node)
            positions[partition] = max(positions[partition], result.next_offset)

    # --- after healing ---------------------------------------------------------------------------
    async def final(self, ctx: WorkloadContext, deadline_s: float) -> FinalState:
        """Wait for compaction to catch up, read every partition back, collect replica checksums."""
        client = self._require_client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        settle_by = deadline - min(RESERVE_S, deadline_s / 3)
        points: dict[int, int | None] = {}
        async with asyncio.TaskGroup() as tasks:
            for partition in range(self.partitions):
                tasks.create_task(self._final_partition(ctx, partition, settle_by, deadline, points))
        replicas = await self._replica_states(client, deadline)
        await client.close()
        return FinalState(replicas=replicas, notes={"compaction_points": points})

    async def _final_partition(self, ctx: WorkloadContext, partition: int, settle_by: float,
                               deadline: float, points: dict[int, int | None]) -> None:
        """Steps 1-4 of the module docstring for one partition."""
        client = self._require_client()
        loop = asyncio.get_running_loop()
        await self._wait_quiet(client, partition, settle_by)
        round_number = attempts = 0
        while round_number < ROUNDS_MAX and attempts < ROUNDS_MAX and loop.time() < settle_by:
            markers = await self._send_markers(ctx, partition, round_number)
            round_number += 1
            if markers is None:
                continue
            first, second, pass_after_ms = markers
            point = {"point": second + 1, "pass_after_ms": pass_after_ms}
            while attempts < ROUNDS_MAX and loop.time() < settle_by:
                node = await self._await_marker_dropped(client, partition, first, second, settle_by)
                if node is None:
                    break  # something landed after the markers (a new round), or the deadline
                attempts += 1
                if await self._final_read(ctx, client, partition, attempts, deadline, node, point):
                    points[partition] = second + 1
                    return
                # the leader changed during the read: probe the new one
        points[partition] = None
        await self._final_read(ctx, client, partition, attempts + 1, deadline, None,
                               {"point": None, "pass_after_ms": None})

    async def _wait_quiet(self, client: CompactionClient, partition: int, deadline: float) -> None:
        """Until every replica reports one high watermark, the same twice :data:`QUIET_S` apart."""
        loop = asyncio.get_running_loop()
        previous: int | None = None
        while loop.time() < deadline:
            marks = {r.high_watermark for r in (await self._describe_all(client, partition)).values()}
            mark = next(iter(marks)) if len(marks) == 1 else None
            if mark is not None and mark == previous:
                return
            previous = mark
            await asyncio.sleep(QUIET_S)

    async def _send_markers(self, ctx: WorkloadContext, partition: int,
                            round_number: int) -> tuple[int, int, int] | None:
        """Send the marker pair of a round; (offset of m1, offset of m2, m2's timestamp) if both were
        acknowledged at adjacent offsets, else None."""
        process = MARKER_PROCESS_BASE + round_number * self.partitions + partition
        key = f"marker-p{partition}-r{round_number}"
        first_outcome, first = await self._send(ctx, process, partition, key, f"{key}-m1", False)
        if first_outcome != "ok":
            await asyncio.sleep(PROBE_INTERVAL_S)
            return None
        pass_after_ms = wall_clock_ms()  # before m2 goes out: the pass that drops m1 starts later
        second_outcome, second = await self._send(ctx, process, partition, key, f"{key}-m2", False)
        if second_outcome != "ok" or first is None or second != first + 1:
            await asyncio.sleep(PROBE_INTERVAL_S)
            return None
        return first, second, pass_after_ms

    async def _await_marker_dropped(self, client: CompactionClient, partition: int, first: int,
                                    second: int, deadline: float) -> int | None:
        """The node (the leader) on which m1 is gone while m2 still ends the log; None if a record
        landed after m2 or the deadline passed."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            try:
                fetched = await client.fetch_records(partition, first, 0, FETCH_BYTES)
            except Failed:
                await asyncio.sleep(PROBE_INTERVAL_S)
                continue
            if fetched.high_watermark > second + 1:
                return None
            if not any(record.offset == first for record in fetched.records):
                return fetched.node
            await asyncio.sleep(PROBE_INTERVAL_S)
        return None

    async def _final_read(self, ctx: WorkloadContext, client: CompactionClient, partition: int,
                          attempt: int, deadline: float, node: int | None, point: dict[str, Any]) -> bool:
        """Read ``partition`` from offset 0 to its high watermark as one ``final-read``. With ``node``,
        every fetch must be served by it (the node where the pass is known to be applied): a fetch
        from another node ends the read as ``fail``. Returns whether it completed ``ok``."""
        loop = asyncio.get_running_loop()
        process = FINAL_PROCESS_BASE + attempt * self.partitions + partition
        op = ctx.history.invoke(process, "final-read", {"partition": partition}, node=node)
        records: list[ReadRecord] = []
        position, high_watermark, caught_up, last_error = 0, -1, False, None
        while loop.time() < deadline:
            try:
                result = await client.fetch_records(partition, position, 100, FETCH_BYTES)
            except Failed as exc:
                last_error = exc.error
                start = _out_of_range_start(exc.error)
                if start is not None and start > position:
                    last_error = f"log start moved past {position}: {exc.error}"
                    break
                await asyncio.sleep(0.1)
                continue
            if node is not None and result.node != node:
                ctx.history.complete(op, "fail", None, f"LEADER_CHANGED {node}->{result.node}",
                                     node=result.node)
                return False
            high_watermark = result.high_watermark
            records.extend(result.records)
            if result.next_offset > position:
                position = result.next_offset
            elif position >= high_watermark:
                caught_up = True
                break
            else:  # no batch below the high watermark: not expected, but never spin
                await asyncio.sleep(0.1)
        compaction = {**point, "delete_retention_ms": self.options.delete_retention_ms,
                      "read_end_ms": wall_clock_ms()}
        value = {"partition": partition, "high_watermark": high_watermark, **_records_json(records),
                 "caught_up": caught_up, "compaction": compaction}
        ctx.history.complete(op, "ok", value, None if caught_up else last_error or "deadline")
        return True

    async def _describe_all(self, client: CompactionClient, partition: int,
                            upto: int = -1) -> dict[int, admin_pb2.DescribeReplicaResponse]:
        """Every replica's own description of ``partition`` (replicas that do not answer are left out)."""
        described: dict[int, admin_pb2.DescribeReplicaResponse] = {}
        for node in await client.replicas_of(partition):
            response = await client.describe_replica(node, partition, upto)
            if response is not None:
                described[node] = response
        return described

    async def _replica_states(self, client: CompactionClient,
                              deadline: float) -> dict[str, dict[str, dict[str, Any]]]:
        """Wait (bounded) until the replicas of each partition hold one high watermark and the same
        checksum up to it (compacted rewrites run asynchronously on each replica); report them."""
        loop = asyncio.get_running_loop()
        states: dict[str, dict[str, dict[str, Any]]] = {}
        for partition in range(self.partitions):
            replicas = await client.replicas_of(partition)
            entry: dict[str, dict[str, Any]] = {}
            while True:
                described = await self._describe_all(client, partition)
                upto = min((r.high_watermark for r in described.values()), default=0)
                summed = await self._describe_all(client, partition, upto)
                entry = {
                    str(node): {
                        "commit_index": described[node].high_watermark if node in described else -1,
                        "upto": summed[node].checksum_end_offset if node in summed else -1,
                        "checksum": summed[node].checksum if node in summed else "",
                    } for node in replicas}
                agreed = len({(e["commit_index"], e["upto"], e["checksum"]) for e in entry.values()}) == 1
                if (replicas and agreed) or loop.time() >= deadline:
                    break
                await asyncio.sleep(PROBE_INTERVAL_S)
            states[f"{self.topic}/{partition}"] = entry
        return states

    def _require_client(self) -> CompactionClient:
        if self._client is None:
            raise RuntimeError("setup() was not called")
        return self._client


def _assign(ctx: WorkloadContext, process: int, positions: dict[int, int]) -> None:
    """Record that a poller (re)starts every partition at ``positions``."""
    value = {"partitions": sorted(positions), "positions": {str(p): o for p, o in positions.items()}}
    op = ctx.history.invoke(process, "assign", value)
    ctx.history.complete(op, "ok", value)


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


async def _create_topic(addresses: Mapping[int, str], topic: str, partitions: int, replication: int,
                        config: dict[str, str]) -> None:
    """Create the compacted topic through any node (retrying while the cluster settles)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    last: Exception | None = None
    while loop.time() < deadline:
        for node in sorted(addresses):
            async with grpc.aio.insecure_channel(addresses[node], options=channel_options()) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                try:
                    await stub.CreateTopic(admin_pb2.CreateTopicRequest(
                        name=topic, partitions=partitions, replication_factor=replication, config=config),
                        timeout=10)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                        return
                    last = exc
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not create topic {topic}: {last}")
