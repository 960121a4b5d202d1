"""The chaos harness: its Toxiproxy API client (against a scripted HTTP server), the majority
arithmetic, and a real 3-node cluster whose node-to-node links run through fault proxies.

The live tests share one module-scoped cluster (starting one costs seconds on these machines);
each test heals everything and waits for a ready cluster when it ends, and uses its own topic.
Node and proxy logs stay in the pytest temporary directory for a failing test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from millpond.chaos.harness import (
    FAST_NODE_ARGS,
    ChaosCluster,
    CutMode,
    has_connected_majority,
    link_name,
)
from millpond.chaos.toxiproxy_api import (
    ToxiproxyClient,
    ToxiproxyConflict,
    ToxiproxyError,
    ToxiproxyNotFound,
    ToxiproxyUnavailable,
)
from millpond.client import (
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    ClientConfig,
    ConsumerConfig,
    ProducerConfig,
)
from millpond.testing.cluster import free_ports
from millpond.testing.waiting import wait_until_async

#: Seconds one live test may take in all (its own healing included).
TEST_TIMEOUT_S = 150.0
#: Seconds the shared cluster may take to start.
START_TIMEOUT_S = 120.0
#: Seconds to wait for a new leader, a healed cluster, a replica back in the ISR.
CONVERGE_S = 60.0
#: Records per produce round (small: the point is the path, not the volume).
RECORDS = 20


# --- the Toxiproxy API client against a scripted server ----------------------------------------------
@dataclass
class _Exchange:
    method: str
    path: str
    body: Any


class _ScriptedServer:
    """An HTTP/1.1 server answering each request with the next scripted (status, body, chunked)."""

    def __init__(self, answers: list[tuple[int, Any, bool]]) -> None:
        self.answers = answers
        self.seen: list[_Exchange] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode().split()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        raw = await reader.readexactly(length) if length else b""
        self.seen.append(_Exchange(request_line[0], request_line[1], json.loads(raw) if raw else None))
        status, body, chunked = self.answers.pop(0)
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        if chunked:
            half = len(payload) // 2
            parts = [part for part in (payload[:half], payload[half:]) if part]
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
            writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n")
        else:
            writer.write(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()


def test_client_sends_the_toxiproxy_requests_and_parses_the_answers() -> None:
    proxy = {"name": "n1->n2", "listen": "127.0.0.1:40001", "upstream": "127.0.0.1:9092",
             "enabled": True, "toxics": []}
    toxic = {"name": "cut-silent-upstream", "type": "timeout", "stream": "upstream", "toxicity": 1.0,
             "attributes": {"timeout": 0}}
    script: list[tuple[int, Any, bool]] = [
        (201, proxy, False), (200, {**proxy, "enabled": False}, True), (200, toxic, False),
        (204, None, False), (200, {"n1->n2": proxy}, True), (204, None, False),
    ]

    async def main() -> None:
        server = _ScriptedServer(script)
        async with server as url:
            client = ToxiproxyClient(url)
            created = await client.create_proxy("n1->n2", "127.0.0.1:0", "127.0.0.1:9092")
            assert created.listen == "127.0.0.1:40001" and created.enabled
            assert not (await client.disable("n1->n2")).enabled
            added = await client.add_toxic("n1->n2", type="timeout", name="cut-silent-upstream",
                                           stream="upstream", attributes={"timeout": 0})
            assert added.type == "timeout" and added.attributes == {"timeout": 0}
            await client.remove_toxic("n1->n2", "cut-silent-upstream")
            assert set(await client.proxies()) == {"n1->n2"}
            await client.reset()
        assert [(e.method, e.path) for e in server.seen] == [
            ("POST", "/proxies"),
            ("POST", "/proxies/n1-%3En2"),
            ("POST", "/proxies/n1-%3En2/toxics"),
            ("DELETE", "/proxies/n1-%3En2/toxics/cut-silent-upstream"),
            ("GET", "/proxies"),
            ("POST", "/reset"),
        ]
        assert server.seen[0].body == {"name": "n1->n2", "listen": "127.0.0.1:0",
                                       "upstream": "127.0.0.1:9092", "enabled": True}
        assert server.seen[1].body == {"enabled": False}
        assert server.seen[2].body == {"type": "timeout", "name": "cut-silent-upstream", "stream": "upstream",
                                       "toxicity": 1.0, "attributes": {"timeout": 0}}

    asyncio.run(asyncio.wait_for(main(), 30))


def test_client_raises_the_servers_json_error_by_status() -> None:
    script: list[tuple[int, Any, bool]] = [
        (404, {"error": "proxy not found", "status": 404}, False),
        (409, {"error": "proxy already exists", "status": 409}, False),
        (400, {"error": "bad toxic type", "status": 400}, True),
    ]

    async def main() -> None:
        async with _ScriptedServer(script) as url:
            client = ToxiproxyClient(url)
            with pytest.raises(ToxiproxyNotFound, match="proxy not found") as missing:
                await client.get_proxy("nope")
            assert missing.value.status == 404 and missing.value.path == "/proxies/nope"
            with pytest.raises(ToxiproxyConflict, match="already exists"):
                await client.create_proxy("a", "127.0.0.1:0", "127.0.0.1:1")
            with pytest.raises(ToxiproxyError, match="bad toxic type") as bad:
                await client.add_toxic("a", type="nonsense")
            assert type(bad.value) is ToxiproxyError and bad.value.status == 400
        port = free_ports(1)[0]
        with pytest.raises(ToxiproxyUnavailable):
            await ToxiproxyClient(f"http://127.0.0.1:{port}", request_timeout_s=2).version()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_connected_majority_needs_a_leader_with_two_way_links_to_a_majority() -> None:
    group = (1, 2, 3)
    assert has_connected_majority(group)
    assert has_connected_majority(group, down=[3])
    assert not has_connected_majority(group, down=[2, 3])
    isolated_1 = [(1, 2), (2, 1), (1, 3), (3, 1)]
    assert has_connected_majority(group, cut=isolated_1)
    assert not has_connected_majority(group, down=[2], cut=isolated_1)
    # A one-way cut breaks the pair: a message over one link, its answer over the other.
    assert has_connected_majority(group, cut=[(1, 2)])
    assert not has_connected_majority(group, cut=[(1, 2), (2, 3), (3, 1)])
    # Five nodes on a ring, each linked only to its neighbours: each node leads a majority of 3.
    ring = (1, 2, 3, 4, 5)
    cut = [(a, b) for a in ring for b in ring if a != b and (b - a) % 5 not in (1, 4)]
    assert has_connected_majority(ring, cut=cut)
    assert not has_connected_majority(ring, down=[2, 5], cut=cut)


# --- a live cluster through proxies ----------------------------------------------------------------------
@dataclass
class Live:
    """The shared cluster and the event loop every test of this module runs on."""

    runner: asyncio.Runner
    cluster: ChaosCluster

    def run(self, body: Callable[[ChaosCluster], Awaitable[None]]) -> None:
        """Run ``body``, then heal everything and wait for a ready cluster (for the next test)."""

        async def main() -> None:
            try:
                await body(self.cluster)
            finally:
                await self.cluster.heal_all()
                await self.cluster.wait_ready(CONVERGE_S)

        self.runner.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    runner = asyncio.Runner()
    cluster = ChaosCluster(3, data_dir=tmp_path_factory.mktemp("chaos-harness"), node_args=FAST_NODE_ARGS)
    try:
        runner.run(asyncio.wait_for(cluster.start(), START_TIMEOUT_S))
        yield Live(runner, cluster)
    finally:
        runner.run(cluster.stop())
        runner.close()


async def _create(cluster: ChaosCluster, topic: str) -> int:
    """Create a 1-partition, 3-replica topic; return its leader once it is the preferred replica
    (the controller moves leadership there soon after creation: wait, so that move is not
    mistaken for the effect of a fault)."""
    await cluster.admin().create_topic(topic, 1, 3)

    async def preferred_leader() -> int:
        described = await cluster.describe_partition(topic, 0)
        return described.leader if described and described.leader == described.replicas[0] else 0

    return await wait_until_async(preferred_leader, CONVERGE_S, f"{topic}/0 led by its preferred replica")


def _side(cluster: ChaosCluster, without: int) -> str:
    """Bootstrap addresses of every node but ``without``: a client on the majority side."""
    return ",".join(cluster.address(node) for node in cluster.node_ids if node != without)


def _values(prefix: str) -> list[bytes]:
    return [b"%s-%03d" % (prefix.encode(), index) for index in range(RECORDS)]


async def _produce(
    cluster: ChaosCluster, topic: str, values: list[bytes], bootstrap: str | None = None
) -> list[int]:
    """Send ``values`` to partition 0 with acks=all; return their offsets (all must be acknowledged).

    ``bootstrap`` defaults to every node. Under a partition pass the majority side's nodes: the
    client keeps asking the node that answered last for metadata, and a node cut off from the
    majority answers with what it knew when it was cut off (no leader)."""
    config = ProducerConfig(acks="all", request_timeout_ms=5_000, delivery_timeout_ms=int(CONVERGE_S * 1000))
    async with AsyncProducer(bootstrap or cluster.bootstrap, config) as producer:
        futures = [await producer.send(topic, value, partition=0) for value in values]
        return [(await future).offset for future in futures]


async def _consume(cluster: ChaosCluster, topic: str, count: int) -> list[bytes]:
    """Read partition 0 from its start until ``count`` records arrived (or ``CONVERGE_S`` passed)."""
    config = ConsumerConfig(auto_offset_reset="earliest", request_timeout_ms=5_000)
    values: list[bytes] = []
    async with AsyncConsumer(cluster.bootstrap, config) as consumer:
        consumer.assign([(topic, 0)])
        deadline = asyncio.get_running_loop().time() + CONVERGE_S
        while len(values) < count and asyncio.get_running_loop().time() < deadline:
            values.extend(record.value or b"" for record in await consumer.poll(timeout_ms=1_000))
    return values


async def _wait_in_sync(cluster: ChaosCluster, topic: str, node: int) -> None:
    """Wait until ``node`` is back in partition 0's ISR (within the lag bound: caught up)."""

    async def in_sync() -> bool:
        described = await cluster.describe_partition(topic, 0)
        return described is not None and described.leader != 0 and node in described.isr

    await wait_until_async(in_sync, CONVERGE_S, f"node {node} back in the ISR of {topic}/0")


def test_cluster_through_proxies_produces_and_consumes(live: Live) -> None:
    async def body(cluster: ChaosCluster) -> None:
        command = " ".join(cluster.local.command(1))
        assert f"2={cluster.route(1, 2)}" in command and f"3={cluster.route(1, 3)}" in command
        assert f"1={cluster.address(1)}" in command
        proxies = await cluster.api.proxies()
        assert set(proxies) == {link_name(i, j) for i, j in cluster.links()}
        assert all(p.enabled and p.upstream == cluster.address(int(name[-1])) for name, p in proxies.items())
        await _create(cluster, "through-proxies")
        values = _values("v")
        offsets = await _produce(cluster, "through-proxies", values)
        assert offsets == list(range(RECORDS))
        assert await _consume(cluster, "through-proxies", RECORDS) == values
        assert all(path.exists() for path in cluster.node_logs.values()) and cluster.proxy_log.exists()

    live.run(body)


@pytest.mark.parametrize("mode", ["refuse", "silent"])
def test_isolated_leader_is_replaced_on_the_majority_side_and_catches_up_after_healing(
    live: Live, mode: CutMode
) -> None:
    topic = f"isolate-{mode}"

    async def body(cluster: ChaosCluster) -> None:
        old = await _create(cluster, topic)
        before = _values("before")
        await _produce(cluster, topic, before)
        cut = await cluster.isolate(old, mode)
        assert sorted(cut) == sorted([(old, n) for n in cluster.node_ids if n != old]
                                     + [(n, old) for n in cluster.node_ids if n != old])
        new = await cluster.wait_leader(topic, 0, CONVERGE_S, exclude=[old])
        assert new != old
        during = _values("during")
        await _produce(cluster, topic, during, _side(cluster, old))
        await cluster.heal_all()
        await _wait_in_sync(cluster, topic, old)
        assert await _consume(cluster, topic, 2 * RECORDS) == before + during

    live.run(body)


def test_one_way_cut_into_the_leader_makes_the_others_elect_a_new_one(live: Live) -> None:
    topic = "one-way"

    async def body(cluster: ChaosCluster) -> None:
        old = await _create(cluster, topic)
        # The leader still reaches the followers, but nothing reaches it: no answer to its
        # heartbeats and appends. It must step down (check quorum) and the others elect.
        for other in cluster.node_ids:
            if other != old:
                await cluster.cut(other, old, "refuse")
        assert set(cluster.cut_links()) == {(other, old) for other in cluster.node_ids if other != old}
        new = await cluster.wait_leader(topic, 0, CONVERGE_S, exclude=[old])
        await _produce(cluster, topic, _values("one-way"), _side(cluster, old))
        for other in cluster.node_ids:
            if other != old:
                await cluster.heal_link(other, old)
        assert not cluster.cut_links() and new != old
        await _wait_in_sync(cluster, topic, old)

    live.run(body)


def test_paused_leader_is_replaced_and_rejoins_when_resumed(live: Live) -> None:
    topic = "pause"

    async def body(cluster: ChaosCluster) -> None:
        old = await _create(cluster, topic)
        await cluster.pause(old)
        assert cluster.paused == {old} and old not in cluster.up()
        await cluster.wait_leader(topic, 0, CONVERGE_S, exclude=[old])
        await _produce(cluster, topic, _values("paused"), _side(cluster, old))
        await cluster.resume(old)
        await _wait_in_sync(cluster, topic, old)

    live.run(body)


def test_killed_node_restarts_on_its_data_and_rejoins(live: Live) -> None:
    topic = "kill"

    async def body(cluster: ChaosCluster) -> None:
        old = await _create(cluster, topic)
        await cluster.kill(old)
        assert not cluster.running(old)
        await cluster.wait_leader(topic, 0, CONVERGE_S, exclude=[old])
        await _produce(cluster, topic, _values("killed"), _side(cluster, old))
        await cluster.restart(old)
        await _wait_in_sync(cluster, topic, old)
        assert await cluster.controller_id() != 0

    live.run(body)


def test_client_proxies_and_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    """Clients bootstrap through ``c->n{j}``; a cluster stopped with a paused node and a cut link:
    every process it started is gone."""

    async def main() -> dict[str, int | None]:
        async with ChaosCluster(3, data_dir=tmp_path / "stop", node_args=FAST_NODE_ARGS,
                                proxy_clients=True) as cluster:
            proxies = await cluster.api.proxies()
            routes = [proxies[f"c->n{node}"].listen for node in cluster.node_ids]
            assert cluster.bootstrap.split(",") == routes
            await cluster.cut_client(1)
            async with AsyncAdmin(cluster.bootstrap, ClientConfig(request_timeout_ms=5_000)) as admin:
                assert len((await admin.describe_cluster()).nodes) == 3  # answered through c->n2 or c->n3
            await cluster.pause(2)
            await cluster.cut(1, 3, "silent", both_ways=True)
            pids = cluster.pids()
        assert all(not cluster.running(node) for node in cluster.node_ids)
        return pids

    pids = asyncio.run(asyncio.wait_for(main(), START_TIMEOUT_S))
    assert set(pids) == {"proxy", "n1", "n2", "n3"} and all(pids.values())
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} is still there"
