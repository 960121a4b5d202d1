"""A controller cut off from the others stops acting as controller (found by the chaos group workload).

An active controller isolated by a silent partition could keep answering
consumer-group heartbeats from its stale state for as long as the partition
lasted, handing a member partitions the new controller had given to another:
its controller loop, which drops the controller object on losing leadership,
could sit in a proposal that cannot commit. Now ``Node.controller`` checks the
Raft role and term on every use, and the loop's tick is bounded. This test
pins the property (refused within seconds of a new controller being elected);
the hang itself depends on a proposal being in flight at the moment of the cut,
which a script reproduced but this test does not force.
"""

from __future__ import annotations

import asyncio

import grpc

from millpond.chaos.harness import FAST_NODE_ARGS, ChaosCluster
from millpond.client import AsyncAdmin, ClientConfig
from millpond.testing.waiting import wait_until_async
from millpond.v1 import groups_pb2 as pb
from millpond.v1 import groups_pb2_grpc as pb_grpc


def _heartbeat(member: str, epoch: int, owned: list[int] | None,
               join: bool = False) -> pb.ConsumerGroupHeartbeatRequest:
    request = pb.ConsumerGroupHeartbeatRequest(group_id="g", member_id=member, member_epoch=epoch)
    if join:
        request.subscribed_topic_names.names.append("t")
        request.session_timeout_ms = 4_000
    if owned is not None:
        request.owned.topics.append(pb.TopicPartitions(topic="t", partitions=owned))
    return request


async def _ask(address: str,
               request: pb.ConsumerGroupHeartbeatRequest) -> pb.ConsumerGroupHeartbeatResponse | str:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response: pb.ConsumerGroupHeartbeatResponse = await pb_grpc.ConsumerGroupsStub(channel) \
                .ConsumerGroupHeartbeat(request, timeout=3)
            return response
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


def test_an_isolated_controller_stops_answering_group_heartbeats(tmp_path) -> None:
    async def scenario() -> None:
        node_args = (*FAST_NODE_ARGS, "--group-heartbeat-interval-ms", "500")
        async with ChaosCluster(3, data_dir=tmp_path / "cluster", node_args=node_args) as cluster:
            async with AsyncAdmin(cluster.bootstrap, ClientConfig(request_timeout_ms=20_000)) as admin:
                await admin.create_topic("t", partitions=2, replication_factor=3)
            controller = await cluster.controller_id()
            old = cluster.address(controller)

            async def joined() -> pb.ConsumerGroupHeartbeatResponse | None:
                answer = await _ask(old, _heartbeat("m1", 0, [], join=True))
                return answer if not isinstance(answer, str) else None

            first = await wait_until_async(joined, 30, "m1 joined through the controller")
            owned = sorted(p for t in first.assignment for p in t.partitions)

            async def steady() -> pb.ConsumerGroupHeartbeatResponse | None:
                # A heartbeat that reports exactly what the member owns changes nothing: no write,
                # the answer comes from the controller's state alone (the stale path).
                answer = await _ask(old, _heartbeat("m1", first.member_epoch, owned))
                if isinstance(answer, str):
                    return None
                now_owned = sorted(p for t in answer.assignment for p in t.partitions)
                return answer if now_owned == owned == [0, 1] else None

            await wait_until_async(steady, 30, "m1 steady with both partitions")
            await cluster.isolate(controller, mode="silent")

            async def new_controller() -> int:
                elected = await cluster.controller_id()
                return elected if elected and elected != controller else 0

            new = await wait_until_async(new_controller, 30, "the majority elects another controller")

            async def refused() -> bool:
                answer = await _ask(old, _heartbeat("m1", first.member_epoch, owned))
                # Meanwhile another member joins through the new controller and gets the partitions.
                await _ask(cluster.address(new), _heartbeat("m2", 0, [], join=True))
                return isinstance(answer, str)

            # An election timeout is 0.5-1 s with these flags; 15 s is generous on a loaded machine.
            await wait_until_async(refused, 15, f"isolated node {controller} stops answering as controller")
            await cluster.heal_all(ready_timeout_s=60)

    asyncio.run(asyncio.wait_for(scenario(), 240))
