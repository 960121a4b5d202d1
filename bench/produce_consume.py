"""End-to-end throughput and latency of a local 3-node cluster: produce, consume, low-load produce latency.

Run: ``.venv/bin/python bench/produce_consume.py [--records 500000] [--partitions 3]
[--value-bytes 100,1024] [--acks all] [--replication 3] [--producers 1] [--seconds 30]
[--latency-records 1000] [--phases produce,consume,latency] [--py-spy DIR]``

Starts a :class:`~millpond.testing.cluster.LocalCluster` (real node processes,
a temporary data directory, always stopped at the end, also on Ctrl-C or an
error) and, for each value size, creates a fresh topic (``--partitions``,
``--replication``) and runs three phases. Every client runs in a fresh
process of its own, so it never shares a GIL with this supervisor or with
another client:

1. **produce**: ``--producers`` processes (default 1: the issue's floor is for
   one producer process) each send their share of ``--records`` keyless
   records of ``--value-bytes`` random bytes with ``AsyncProducer`` and then
   ``flush``. Timed from the first ``send`` to the last acknowledgement
   (``time.monotonic`` is system-wide, so several processes share one clock).
   Before the clock starts, each process sends one record to every partition
   (connections and metadata warm); those records are in the topic too.
2. **consume**: one ``AsyncConsumer`` assigned every partition reads
   everything from the log start up to the high watermarks it saw before the
   clock started, checking that offsets are consecutive per partition; timed
   from the first ``poll`` to the last record.
3. **latency** at low load, one record in flight: ``--latency-records``
   sequential sends after ``latency_warmup_sends`` untimed ones, first with
   ``AsyncProducer`` (``linger_ms=0``, ``inflight_batches_max=1``; each
   sample is ``await`` the send and then its future), then with the raw
   ``Produce`` RPC: a one-record batch encoded in the loop and sent straight
   to the partition's leader, the partitions in turn (a NOT_LEADER answer
   re-targets and is not sampled).

Each phase prints one line: records/s and MB/s of record values (MB = 10**6
bytes; keys, headers and batch framing are not counted), or p50/p99/p99.9/max
latency; then an indented ``cpu s:`` line with the CPU seconds each node and
the client used during the phase (``/proc``, Linux) and the total per record.
On a shared 2-core machine the rates swing with whatever else runs (the load
average is printed before and after); the CPU per record is steadier and
bounds what an idle machine could do (cores / CPU per record).

Bounded: a producer stops sending after ``--seconds``, the consumer stops
reading after ``--seconds``, a latency run stops after ``--seconds`` (what was
done is reported), and a client process that overruns by ``worker_grace_s``
is killed. ``--py-spy DIR`` records every node and client process with
``py-spy record --nonblocking`` (raw collapsed stacks) during each phase.

Producer settings, default ``--batch-bytes 1048576 --linger-ms 5 --inflight 5
--buffer-bytes 67108864`` (printed at the start): the client's defaults
except a 1 MiB batch (the client's is 512 KiB) and a buffer that holds every
in-flight batch. Per-record work on the broker is zero, so the broker's cost
is per batch (one Produce RPC, one Raft entry, its append and response RPCs,
an LMDB put) plus per byte (copies and checksums); a 1 MiB batch, which is
also the most one Raft append message carries (``limits.raft_msg_bytes_max``),
halves the batches of the 512 KiB default. Measured here (3 interleaved
pairs, 300,000 records, load average 4-5): 1 MiB took 5-18% less CPU per
100-byte record and 14-39% less per 1 KiB record than 512 KiB, and was
faster in 5 of the 6 pairs. 2 MiB batches with 5 in flight per partition
fill the client's 32 MiB default buffer (hence 64 MiB here) and stall
``send``. Five Produce RPCs in flight per partition keep the leader's Raft
pipeline and group commit fed while earlier batches replicate; 2 or 10
measured the same within the noise, because the pipeline is CPU-bound.
``linger_ms`` hardly matters for a producer that sends flat out (its send
loop yields only when a batch closes, so batches fill up). The "records/RPC"
figure is below a full batch because keyless records use the sticky
partitioner, and the record that does not fit a full batch opens a new
batch on the same partition before the partitioner moves on; that batch's
linger often passes before the partitioner comes back, so it goes alone
(a client behaviour, reported, not worked around here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds a client process may run past ``--seconds`` (start-up, warm-up, flush, close) before it is killed.
worker_grace_s = 60.0
#: Sends before the timed part of the latency phase (connections, metadata, JIT-less warm caches).
latency_warmup_sends = 50
#: Seconds to wait for every partition of a new topic to have a leader.
topic_ready_timeout_s = 30.0
#: Seconds to wait, after that, for the leaders to spread evenly over the nodes (then go on anyway).
leader_balance_timeout_s = 15.0


# ==================================================================================================
# Client processes. Each one reads a JSON spec from argv, prints ``{"ready": true}`` once connected,
# waits for a line on stdin ("go"), runs, and prints one JSON result line.
# ==================================================================================================
def _ready_then_wait_for_go() -> None:
    global _go_cpu_s
    print(json.dumps({"ready": True}), flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("supervisor went away")
    _go_cpu_s = time.process_time()


async def _produce_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from millpond.client import AsyncProducer, ProducerConfig

    config = ProducerConfig(
        acks=spec["acks"], linger_ms=spec["linger_ms"], batch_bytes=spec["batch_bytes"],
        inflight_batches_max=spec["inflight"], buffer_bytes=spec["buffer_bytes"],
    )
    topic, count, value_bytes = spec["topic"], spec["records"], spec["value_bytes"]
    value = os.urandom(value_bytes)
    key_bytes = spec["key_bytes"]
    keys = [os.urandom(key_bytes) for _ in range(1024)] if key_bytes else None
    async with AsyncProducer(spec["bootstrap"], config) as producer:
        # Warm-up (not timed, but part of the topic): one record to every partition opens the
        # channel to every leader and loads the metadata.
        warm = [await producer.send(topic, value, partition=p) for p in range(spec["partitions"])]
        await asyncio.gather(*warm)
        before = producer.statistics()
        _ready_then_wait_for_go()
        deadline = time.monotonic() + spec["seconds"]
        start = time.monotonic()
        sent = 0
        send = producer.send
        if keys is None:
            while sent < count:
                await send(topic, value)
                sent += 1
                if not sent & 1023 and time.monotonic() > deadline:
                    break
        else:
            while sent < count:
                await send(topic, value, keys[sent & 1023])
                sent += 1
                if not sent & 1023 and time.monotonic() > deadline:
                    break
        await producer.flush()
        end = time.monotonic()
        after = producer.statistics()
    return {
        "start": start, "end": end, "sent": sent,
        "acknowledged": after.records_acknowledged - before.records_acknowledged,
        "failed": after.records_failed - before.records_failed,
        "batches": after.batches_sent - before.batches_sent, "retries": after.retries - before.retries,
        "warmup_records": len(warm),
    }


async def _consume_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from millpond.client import AsyncConsumer, ConsumerConfig

    config = ConsumerConfig(auto_offset_reset="earliest", fetch_bytes_max=spec["fetch_bytes"],
                            fetch_wait_ms_max=100)
    topic = spec["topic"]
    async with AsyncConsumer(spec["bootstrap"], config) as consumer:
        tps = [(topic, p) for p in range(spec["partitions"])]
        consumer.assign(tps)
        ends = {p: await consumer.offset_for((topic, p), "latest") for p in range(spec["partitions"])}
        starts = {p: await consumer.offset_for((topic, p), "earliest") for p in range(spec["partitions"])}
        await consumer.seek_to_beginning()
        expected = sum(ends[p] - starts[p] for p in ends)
        _ready_then_wait_for_go()
        deadline = time.monotonic() + spec["seconds"]
        start = time.monotonic()
        count = value_bytes = 0
        positions = dict(starts)
        wrong_sizes = 0
        while count < expected and time.monotonic() < deadline:
            records = await consumer.poll(timeout_ms=1000, max_records=100_000)
            if not records:
                continue
            count += len(records)
            for record in (records[0], records[-1]):  # spot checks; summing every value is per-record work
                if len(record.value or b"") != spec["value_bytes"]:
                    wrong_sizes += 1
            for record in records:  # per-partition order: record offsets must be consecutive
                if record.offset != positions[record.partition]:
                    raise RuntimeError(f"partition {record.partition}: offset {record.offset}, "
                                       f"expected {positions[record.partition]}")
                positions[record.partition] = record.offset + 1
        end = time.monotonic()
        value_bytes = count * spec["value_bytes"]
        fetches = consumer.statistics().fetches
    return {"start": start, "end": end, "records": count, "expected": expected, "value_bytes": value_bytes,
            "wrong_sizes": wrong_sizes, "fetches": fetches}


async def _latency_client_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from millpond.client import AsyncProducer, ProducerConfig

    config = ProducerConfig(acks=spec["acks"], linger_ms=0, inflight_batches_max=1)
    topic, count = spec["topic"], spec["records"]
    value = os.urandom(spec["value_bytes"])
    latencies: list[float] = []
    deadline = time.monotonic() + spec["seconds"]
    async with AsyncProducer(spec["bootstrap"], config) as producer:
        for p in range(spec["partitions"]):
            await (await producer.send(topic, value, partition=p))
        for _ in range(latency_warmup_sends):
            await (await producer.send(topic, value))
        _ready_then_wait_for_go()
        for _ in range(count):
            start = time.perf_counter()
            await (await producer.send(topic, value))
            latencies.append(time.perf_counter() - start)
            if time.monotonic() > deadline:
                break
    return {"latencies": latencies}


async def _latency_raw_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc
    import grpc.aio

    from millpond.client import parse_acks
    from millpond.client._connection import CHANNEL_OPTIONS
    from millpond.errors import NotLeader, from_rpc_error
    from millpond.record_batch import Record, encode_batch
    from millpond.v1 import broker_pb2, broker_pb2_grpc

    topic, count = spec["topic"], spec["records"]
    acks = parse_acks(spec["acks"])
    value = os.urandom(spec["value_bytes"])
    channels: dict[str, grpc.aio.Channel] = {}

    def stub_for(address: str) -> Any:
        if address not in channels:
            channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return broker_pb2_grpc.BrokerStub(channels[address])  # type: ignore[no-untyped-call]

    stubs = {int(p): stub_for(a) for p, a in spec["leaders"].items()}
    partitions = sorted(stubs)
    latencies: list[float] = []
    redirects = 0

    async def one(partition: int) -> float | None:
        """One Produce of one record; None if the leader moved (the stub is updated, no sample)."""
        nonlocal redirects
        start = time.perf_counter()
        batch = encode_batch([Record(None, value, (), time.time_ns() // 1_000_000)])
        request = broker_pb2.ProduceRequest(topic=topic, partition=partition, acks=acks, batch=batch)
        try:
            await stubs[partition].Produce(request, timeout=10.0)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if not isinstance(error, NotLeader) or not error.leader_address:
                raise error from exc
            redirects += 1
            stubs[partition] = stub_for(error.leader_address)
            return None
        return time.perf_counter() - start

    try:
        for i in range(latency_warmup_sends):
            await one(partitions[i % len(partitions)])
        _ready_then_wait_for_go()
        deadline = time.monotonic() + spec["seconds"]
        for i in range(count):
            latency = await one(partitions[i % len(partitions)])
            if latency is not None:
                latencies.append(latency)
            if time.monotonic() > deadline:
                break
    finally:
        for channel in channels.values():
            await channel.close()
    return {"latencies": latencies, "redirects": redirects}


_WORKERS = {
    "produce": _produce_worker,
    "consume": _consume_worker,
    "latency-client": _latency_client_worker,
    "latency-raw": _latency_raw_worker,
}


def worker_main(kind: str, spec_json: str) -> None:
    result = asyncio.run(_WORKERS[kind](json.loads(spec_json)))
    result["cpu_s"] = time.process_time() - _go_cpu_s
    print(json.dumps(result), flush=True)


_go_cpu_s = 0.0


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ==================================================================================================
# The supervisor.
# ==================================================================================================
@dataclass
class Worker:
    """One client process."""

    kind: str
    process: subprocess.Popen[str]

    def wait_ready(self, timeout_s: float) -> None:
        line = self._line(timeout_s)
        if not json.loads(line).get("ready"):
            raise RuntimeError(f"{self.kind} worker: unexpected line {line!r}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout_s: float) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._line(timeout_s))
        self.process.wait(timeout_s)
        return result

    def _line(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        # A blocking readline with a watchdog: the process is killed if it overruns.
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise TimeoutError(f"{self.kind} worker did not answer within {timeout_s:.0f} s")
                if selector.select(remaining):
                    line = self.process.stdout.readline()
                    if not line:
                        code = self.process.wait()
                        raise RuntimeError(f"{self.kind} worker exited with code {code} (stderr above)")
                    return line

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Bench:
    def __init__(self, args: argparse.Namespace, cluster: Any) -> None:
        self.args = args
        self.cluster = cluster
        self.workers: list[Worker] = []
        self.last_cpu: tuple[float, dict[str, float | None]] = (0.0, {})

    def print_cpu(self, records: int) -> None:
        """One indented line: CPU seconds each process used during the last phase, and per record.

        On a shared machine the CPU cost per record is steadier than the rate: it tells what
        an otherwise idle machine could do (cores / cost per record) when the phase is CPU-bound.
        """
        wall, used = self.last_cpu
        if not used:
            return
        parts = [f"{name} {seconds:.2f}" for name, seconds in used.items() if seconds is not None]
        total = sum(seconds for seconds in used.values() if seconds is not None)
        per_record = f", {total / records * 1e6:,.1f} µs/record" if records else ""
        print(f"  cpu s: {', '.join(parts)}; total {total:.2f} in {wall:.2f} s wall "
              f"({total / wall:.2f} of {os.cpu_count()} cores{per_record})", flush=True)

    def spawn(self, kind: str, spec: dict[str, Any]) -> Worker:
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        worker = Worker(kind, process)
        self.workers.append(worker)
        return worker

    def run(self, kind: str, specs: list[dict[str, Any]], tag: str = "") -> list[dict[str, Any]]:
        """Start one process per spec, wait until all are connected, start them together, collect."""
        timeout_s = self.args.seconds + worker_grace_s
        workers = [self.spawn(kind, spec) for spec in specs]
        profilers: list[subprocess.Popen[bytes]] = []
        try:
            for worker in workers:
                worker.wait_ready(timeout_s)
            if self.args.py_spy is not None:
                targets = {f"node{n.node_id}": n.pid for n in self.cluster.nodes.values()}
                targets.update({f"{kind}{i}": w.process.pid for i, w in enumerate(workers)})
                profilers = self.start_profilers(f"{tag or kind}", targets)
            nodes = {f"node{n.node_id}": n.pid for n in self.cluster.nodes.values()}
            cpu_before = {name: _cpu_seconds(pid) for name, pid in nodes.items()}
            wall_before = time.monotonic()
            for worker in workers:
                worker.go()
            results = [worker.result(timeout_s) for worker in workers]
            wall = time.monotonic() - wall_before
            used: dict[str, float | None] = {}
            for name, pid in nodes.items():
                before, after = cpu_before[name], _cpu_seconds(pid)
                used[name] = None if before is None or after is None else after - before
            for i, result in enumerate(results):  # a worker measures itself, from "go" to its result
                used[f"{kind}{i}" if len(results) > 1 else kind] = result.get("cpu_s")
            self.last_cpu = (wall, used)
            return results
        finally:
            for worker in workers:
                worker.kill()
            self.stop_profilers(profilers)

    def start_profilers(self, tag: str, targets: dict[str, int | None]) -> list[subprocess.Popen[bytes]]:
        """``py-spy record`` (raw collapsed stacks, non-blocking, 100 Hz) on each target until stopped."""
        directory: Path = self.args.py_spy
        directory.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        profilers = []
        for name, pid in targets.items():
            if pid is None:
                continue
            output = directory / f"{tag}-{name}.txt"
            profilers.append(subprocess.Popen(
                [str(py_spy), "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                 "--format", "raw", "--output", str(output)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # let every sampler attach before the phase starts
        return profilers

    @staticmethod
    def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
        for profiler in profilers:
            if profiler.poll() is None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for profiler in profilers:
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    def create_topic(self, value_bytes: int) -> tuple[str, dict[int, str]]:
        from millpond.client import Admin

        topic = f"bench-{value_bytes}b-{uuid.uuid4().hex[:8]}"
        with Admin(self.cluster.bootstrap) as admin:
            admin.create_topic(topic, partitions=self.args.partitions,
                               replication_factor=self.args.replication)
        leaders = {p: self.cluster.leader(topic, p, timeout_s=topic_ready_timeout_s)
                   for p in range(self.args.partitions)}
        # The controller moves leaders to their preferred replicas shortly after creation (rate
        # limited); wait for a balanced spread so a transfer does not land in a timed phase.
        most = -(-self.args.partitions // len(self.cluster.nodes))
        deadline = time.monotonic() + leader_balance_timeout_s
        while time.monotonic() < deadline:
            leaders = self.leaders_now(topic)
            counts = [list(leaders.values()).count(node) for node in self.cluster.nodes]
            if all(leaders.values()) and max(counts) <= most:
                break
            time.sleep(0.2)
        return topic, {p: self.cluster.address(node) for p, node in leaders.items() if node}

    def leaders_now(self, topic: str) -> dict[int, int]:
        for described in self.cluster.describe().topics:
            if described.name == topic:
                return {p.partition: p.leader for p in described.partitions}
        return {}

    def base_spec(self, topic: str, value_bytes: int) -> dict[str, Any]:
        a = self.args
        return {"bootstrap": self.cluster.bootstrap, "topic": topic, "partitions": a.partitions,
                "value_bytes": value_bytes, "acks": a.acks, "seconds": a.seconds}

    def label(self, value_bytes: int) -> str:
        a = self.args
        return (f"value={_size(value_bytes)} acks={a.acks} partitions={a.partitions} "
                f"replication={a.replication}")

    # --- phases ---------------------------------------------------------------------------
    def produce(self, topic: str, value_bytes: int) -> int:
        a = self.args
        shares = [a.records // a.producers + (i < a.records % a.producers) for i in range(a.producers)]
        specs = [{**self.base_spec(topic, value_bytes), "records": share, "linger_ms": a.linger_ms,
                  "batch_bytes": a.batch_bytes, "inflight": a.inflight, "buffer_bytes": a.buffer_bytes,
                  "key_bytes": a.key_bytes} for share in shares]
        results = self.run("produce", specs, f"produce-{_size(value_bytes)}")
        start = min(r["start"] for r in results)
        end = max(r["end"] for r in results)
        acknowledged = sum(r["acknowledged"] for r in results)
        failed = sum(r["failed"] for r in results)
        sent = sum(r["sent"] for r in results)
        seconds = end - start
        batches = sum(r["batches"] for r in results)
        note = "" if sent == a.records else f", stopped by --seconds after {sent:,} of {a.records:,}"
        print(f"produce {self.label(value_bytes)} producers={a.producers}: "
              f"{acknowledged / seconds:,.0f} msgs/s {acknowledged * value_bytes / seconds / 1e6:.1f} MB/s "
              f"({acknowledged:,} records in {seconds:.2f} s; {batches:,} Produce RPCs, "
              f"{acknowledged / max(1, batches):,.0f} records/RPC, "
              f"retries {sum(r['retries'] for r in results)}"
              f"{note})", flush=True)
        self.print_cpu(acknowledged)
        if failed:
            print(f"  !! {failed:,} records FAILED", flush=True)
        return acknowledged + sum(r["warmup_records"] for r in results)

    def consume(self, topic: str, value_bytes: int, produced: int | None) -> None:
        """Read the topic back; ``produced``: records the produce phase put there (None: not run)."""
        a = self.args
        [result] = self.run("consume", [{**self.base_spec(topic, value_bytes), "fetch_bytes": a.fetch_bytes}],
                            f"consume-{_size(value_bytes)}")
        seconds = result["end"] - result["start"]
        count = result["records"]
        note = "" if count == result["expected"] else f", stopped after {count:,} of {result['expected']:,}"
        print(f"consume {self.label(value_bytes)}: {count / seconds:,.0f} msgs/s "
              f"{result['value_bytes'] / seconds / 1e6:.1f} MB/s ({count:,} records in {seconds:.2f} s; "
              f"{result['fetches']:,} Fetch RPCs{note})", flush=True)
        self.print_cpu(count)
        if produced is not None and result["expected"] != produced:
            print(f"  !! the log holds {result['expected']:,} records, "
                  f"the producers acknowledged {produced:,}",
                  flush=True)
        if result["wrong_sizes"]:
            print(f"  !! {result['wrong_sizes']} spot-checked records had the wrong size", flush=True)

    def latency(self, topic: str, value_bytes: int, leaders: dict[int, str]) -> None:
        a = self.args
        spec = {**self.base_spec(topic, value_bytes), "records": a.latency_records}
        runs = (("latency-client", "AsyncProducer linger_ms=0"), ("latency-raw", "raw Produce RPC"))
        for kind, name in runs:
            [result] = self.run(kind, [{**spec, "leaders": {str(p): addr for p, addr in leaders.items()}}],
                                f"{kind}-{_size(value_bytes)}")
            latencies = sorted(result["latencies"])
            n = len(latencies)
            if not n:
                print(f"latency {self.label(value_bytes)} {name}: no sample", flush=True)
                continue
            redirects = f", {result['redirects']} NOT_LEADER re-sent" if result.get("redirects") else ""
            print(f"latency {self.label(value_bytes)} {name}, 1 in flight: "
                  f"p50={_quantile_ms(latencies, 0.50):.2f} ms p99={_quantile_ms(latencies, 0.99):.2f} ms "
                  f"p99.9={_quantile_ms(latencies, 0.999):.2f} ms max={latencies[-1] * 1e3:.2f} ms "
                  f"mean={statistics.fmean(latencies) * 1e3:.2f} ms ({n:,} sends, "
                  f"{n / sum(latencies):,.0f} sends/s{redirects})", flush=True)
            self.print_cpu(n)


def _quantile_ms(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of sorted latencies in seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1e3


def _size(value_bytes: int) -> str:
    if value_bytes >= 1024 and value_bytes % 1024 == 0:
        return f"{value_bytes // 1024}KiB"
    return f"{value_bytes}B"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000,
                        help="records per produce phase (all producers together)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of each topic")
    parser.add_argument("--replication", type=int, default=3, help="replication factor of each topic")
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the local cluster")
    parser.add_argument("--value-bytes", type=_ints, default=[100, 1024], help="value sizes, comma-separated")
    parser.add_argument("--key-bytes", type=int, default=0,
                        help="random keys of this size (0: keyless records, sticky partitioner)")
    parser.add_argument("--acks", default="all", choices=["0", "1", "all"])
    parser.add_argument("--producers", type=int, default=1, help="producer processes (the floor is for 1)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap of each phase")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--batch-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--inflight", type=int, default=5, help="Produce RPCs in flight per partition")
    parser.add_argument("--buffer-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--fetch-bytes", type=int, default=4 * 1024 * 1024, help="consumer fetch_bytes_max")
    parser.add_argument("--latency-records", type=int, default=1000, help="sequential sends per latency run")
    parser.add_argument("--phases", default="produce,consume,latency",
                        help="which phases to run (consume reads what produce wrote)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="parent of the cluster's temporary directory (default: the system's)")
    parser.add_argument("--keep-logs", action="store_true", help="print the cluster's data dir and keep it")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record every node and client process with py-spy during each phase "
                             "(raw collapsed stacks, DIR/<phase>-<value>-<process>.txt)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return
    phases = set(args.phases.split(","))
    if not 1 <= args.producers <= 64 or args.records < args.producers:
        parser.error("--producers must be in [1, 64] and at most --records")

    from millpond.testing.cluster import LocalCluster

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (and a SIGINT that a non-interactive shell set to "ignore") must reach the
    # ``finally`` below that stops the cluster: its nodes run in sessions of their own.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    print(f"millpond produce/consume bench: {args.nodes} nodes, {os.cpu_count()} CPUs, {_load()}")
    print(f"producer: linger_ms={args.linger_ms} batch_bytes={args.batch_bytes} "
          f"inflight_batches_max={args.inflight} buffer_bytes={args.buffer_bytes} "
          f"key_bytes={args.key_bytes}; consumer: fetch_bytes_max={args.fetch_bytes}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="millpond-bench-", dir=args.data_dir))
    cluster = LocalCluster(nodes=args.nodes, data_dir=data_dir)
    bench = Bench(args, cluster)
    started = time.monotonic()
    try:
        cluster.start()
        print(f"cluster up in {time.monotonic() - started:.1f} s: {cluster.bootstrap} "
              f"(pids {', '.join(str(n.pid) for n in cluster.nodes.values())})", flush=True)
        for value_bytes in args.value_bytes:
            topic, leaders = bench.create_topic(value_bytes)
            print(f"topic {topic}: leaders {bench.leaders_now(topic)}", flush=True)
            produced: int | None = None
            if "produce" in phases:
                produced = bench.produce(topic, value_bytes)
            if "consume" in phases:
                bench.consume(topic, value_bytes, produced)
            if "latency" in phases:
                leaders = {p: cluster.address(n) for p, n in bench.leaders_now(topic).items()}
                bench.latency(topic, value_bytes, leaders)
    finally:
        bench.kill_all()
        cluster.stop()
        if args.keep_logs:
            print(f"cluster data and logs kept in {data_dir}")
        else:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.1f} s, {_load()}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (the cluster and every client process were stopped)", file=sys.stderr)
        sys.exit(130)
