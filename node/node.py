"""One broker node: its store, Raft groups, gRPC server and the loops that keep it in the cluster.

Tasks, all owned by one ``TaskGroup`` (an exception in any stops the node):

* the :class:`RaftHost` ticker and Ready loop (all Raft groups);
* the transport's per-peer senders;
* **reconcile**: hosts exactly the partition replicas the metadata image
  assigns to this node (started on every metadata change);
* **controller**: while this node leads the metadata log (and has applied its
  own term's first entry), runs the :class:`ActiveController` and ticks it;
* **heartbeat**: registers with the active controller, then heartbeats it with
  reports of the partitions this node leads, and carries out its actions;
* **log cleaner**: every ``cleaner_interval_ms``, retention and compaction
  decisions for the partitions this node leads (:mod:`millpond.node.log_cleaner`;
  its own short loop, because the heartbeat loop waits on controller RPCs and
  retention must not stop when the controller is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from millpond import errors, limits
from millpond.controller import (
    METADATA_GROUP,
    ActionKind,
    ActiveController,
    ApplyResult,
    ControllerSettings,
    LeaderAction,
    MetadataImage,
    TopicConfig,
)
from millpond.invariant import InvariantViolation, invariant
from millpond.node.admin_service import AdminService
from millpond.node.broker_service import BrokerService
from millpond.node.channels import channel_options, server_options
from millpond.node.config import NodeConfig
from millpond.node.controller_service import ControllerService
from millpond.node.group_service import GroupService
from millpond.node.grpc_errors import ErrorInterceptor
from millpond.node.isr import IsrTracker
from millpond.node.leader_duties import carry_out, leader_reports, step_down_everywhere
from millpond.node.log_cleaner import LogCleaner, topic_config
from millpond.node.metadata import MetadataMachine
from millpond.node.partition import PartitionMachine
from millpond.node.raft_host import RaftHost
from millpond.node.replica import Replica
from millpond.node.transport import RaftTransport
from millpond.raft import EntryKind, Membership, Role
from millpond.raft.lmdb_store import LogStore
from millpond.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc, groups_pb2, groups_pb2_grpc
from millpond.v1 import internal_pb2 as internal
from millpond.v1 import internal_pb2_grpc as internal_grpc

log = logging.getLogger(__name__)

_SERVICE_NAMES = (
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name,
    groups_pb2.DESCRIPTOR.services_by_name["ConsumerGroups"].full_name,
    internal.DESCRIPTOR.services_by_name["RaftTransport"].full_name,
    internal.DESCRIPTOR.services_by_name["ControllerService"].full_name,
)
_CONTROLLER_RPC_TIMEOUT_S = 5.0


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Node:
    """A millpond broker node. :meth:`run` serves until :meth:`stop` (or a fatal error)."""

    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id
        self.incarnation = secrets.randbits(63)
        self.epoch = 0
        self.alive = False
        self._last_heartbeat_ok_ms = 0
        self._metadata = MetadataMachine(self._on_metadata_change)
        self._partitions: dict[int, PartitionMachine] = {}
        self._cleaner = LogCleaner(self._partitions)
        self._controller: ActiveController | None = None
        self._controller_term = -1
        self._isr = IsrTracker(config.replica_lag_ms_max)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._reconcile = asyncio.Event()
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._store: LogStore | None = None
        self._host: RaftHost | None = None
        self._metadata_replica: Replica | None = None
        self.started = asyncio.Event()

    # -- views used by the services ------------------------------------------------------------
    @property
    def image(self) -> MetadataImage:
        return self._metadata.image

    @property
    def controller(self) -> ActiveController | None:
        """The active controller if this node leads the metadata log *now*, else None.

        Checked on every use, not only by the controller loop: that loop can sit
        in a proposal that cannot commit (this node cut off from the others),
        and a node that lost its leadership must stop answering as controller at
        once (a stale controller would keep handing out group assignments).
        Within one election timeout of being cut off a leader still believes it
        leads (check-quorum then steps it down): the usual leader-lease window.
        """
        replica = self._metadata_replica
        if self._controller is None or replica is None:
            return None
        raft = replica.raft
        if raft.role != Role.LEADER or raft.term != self._controller_term:
            return None
        return self._controller

    @property
    def host(self) -> RaftHost:
        invariant(self._host is not None, "node not started", node=self.node_id)
        return self._host  # type: ignore[return-value]

    def controller_id(self) -> int:
        replica = self._metadata_replica
        return replica.raft.lead if replica is not None else 0

    def controller_voters(self) -> list[int]:
        replica = self._metadata_replica
        return sorted(replica.raft.membership.voters) if replica is not None else []

    def address_of(self, node_id: int) -> str:
        node = self.image.node(node_id)
        if node is not None:
            return node.address
        return self.config.peers.get(node_id, "")

    def local_partition(self, group: int) -> PartitionMachine | None:
        return self._partitions.get(group)

    def topic_config(self, name: str) -> TopicConfig:
        """``name``'s configuration as this node's metadata image has it (defaults if unknown)."""
        topic = self.image.topic(name)
        return topic_config(topic.config if topic is not None else ())

    def peer_channel(self, node_id: int) -> grpc.aio.Channel | None:
        """The channel for a node-to-node call to ``node_id``: through its ``--peers`` route when one
        is configured (a chaos run points it at a fault proxy), else its registered address.

        ``address_of`` stays the address clients are told (NOT_LEADER hints); node-to-node traffic
        must take the configured route so a cut link cuts all of it, not only Raft."""
        address = self.config.peers.get(node_id) or self.address_of(node_id)
        return self.channel(address) if address else None

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=channel_options())
            self._channels[address] = channel
        return channel

    async def wait_metadata(self, condition: Callable[[MetadataImage], bool], timeout_s: float) -> bool:
        return await self._metadata.wait_until(condition, timeout_s)

    def leader_partition(self, topic: str, partition: int) -> PartitionMachine:
        """The local replica of ``topic``/``partition`` if this node leads it (see BrokerService)."""
        state = self.image.topic(topic)
        if state is None:
            raise errors.UnknownTopic(f"topic {topic!r} does not exist")
        if partition >= state.partition_count:
            raise errors.UnknownPartition(
                f"topic {topic!r} has {state.partition_count} partitions; {partition} does not exist")
        group = state.group(partition)
        machine = self._partitions.get(group)
        if machine is not None and machine.replica.raft.role == Role.LEADER:
            return machine
        leader = machine.replica.raft.lead if machine is not None else 0
        if not leader:
            recorded = self.image.partition_by_group(group)
            leader = recorded.leader if recorded is not None else 0
        if leader == self.node_id:
            leader = 0
        if not leader:
            raise errors.Unavailable(f"{topic}/{partition} has no leader yet; retry shortly")
        raise errors.NotLeader(f"node {self.node_id} does not lead {topic}/{partition}",
                               leader, self.address_of(leader))

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to shut down cleanly."""
        self._stopping.set()

    def _fail_stop(self, exc: InvariantViolation) -> None:
        self._fatal = exc
        self._stopping.set()

    async def run(self) -> None:
        """Serve until stopped. Raises what made the node stop, if it was an error."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = LogStore(config.data_dir / "raft")
        self._host = RaftHost(self.node_id, self._store, config.tick_ms, config.election_ticks)
        peers = sorted(config.peers)
        voters = config.metadata_voters()
        self._metadata_replica = await self._host.add_group(
            METADATA_GROUP, Membership.of(voters, tuple(p for p in peers if p not in voters)),
            lambda replica: self._metadata)
        transport = RaftTransport(self.node_id, config.peers, self.incarnation, self._host.deliver)
        self._host.attach(transport)
        server = self._build_server(transport)
        try:
            await server.start()
            transport.start()
            if config.unsafe_ack_before_commit:
                log.warning("UNSAFE: acks=all is answered before commit (--unsafe-ack-before-commit); "
                            "acknowledged writes can be lost. Only for the chaos suite's negative control.")
            print(f"millpond node {self.node_id} listening on {config.listen}", flush=True)
            self.started.set()
            async with asyncio.TaskGroup() as tasks:
                running = [
                    tasks.create_task(self._host.run(), name="raft-host"),
                    tasks.create_task(self._reconcile_loop(), name="reconcile"),
                    tasks.create_task(self._controller_loop(), name="controller"),
                    tasks.create_task(self._heartbeat_loop(), name="heartbeat"),
                    tasks.create_task(self._cleaner_loop(), name="log-cleaner"),
                ]
                await self._stopping.wait()
                for task in running:
                    task.cancel()
        finally:
            await server.stop(grace=1.0)
            await transport.close()
            for channel in self._channels.values():
                await channel.close(grace=None)
            await self._host.close()
            self._store.close()
        if self._fatal is not None:
            raise self._fatal

    def _build_server(self, transport: RaftTransport) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorInterceptor(self._fail_stop)],
                                 options=server_options())
        broker = BrokerService(self, unsafe_ack_before_commit=self.config.unsafe_ack_before_commit)
        broker_pb2_grpc.add_BrokerServicer_to_server(broker, server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(self), server)
        groups_pb2_grpc.add_ConsumerGroupsServicer_to_server(GroupService(self), server)
        internal_grpc.add_ControllerServiceServicer_to_server(ControllerService(self), server)
        internal_grpc.add_RaftTransportServicer_to_server(transport, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*_SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        if server.add_insecure_port(self.config.listen) == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        self._health = health_servicer
        return server

    # -- partitions hosted here --------------------------------------------------------------------
    def _on_metadata_change(self, result: ApplyResult | None) -> None:
        if result is None or result.changed_groups:
            self._reconcile.set()

    async def _reconcile_loop(self) -> None:
        self._reconcile.set()
        while True:
            await self._reconcile.wait()
            self._reconcile.clear()
            await self._reconcile_partitions()

    async def _reconcile_partitions(self) -> None:
        host = self.host
        wanted = self.image.groups_hosted_by(self.node_id)
        for group in [g for g in self._partitions if g not in wanted]:
            host.remove_group(group)
            self._partitions.pop(group, None)
            self._isr.forget(group)
        for group, voters in sorted(wanted.items()):
            if group in self._partitions:
                continue
            state = self.image.partition_by_group(group)
            topic = self.image.topic_by_id(state.topic_id) if state is not None else None
            if state is None or topic is None:
                continue
            name, partition = topic.name, state.partition

            def machine(replica: Replica, name: str = name, partition: int = partition) -> PartitionMachine:
                return PartitionMachine(replica, name, partition, lambda: self.topic_config(name))

            replica = await host.add_group(group, Membership.of(list(voters)), machine)
            self._partitions[group] = replica.machine  # type: ignore[assignment]

    # -- the active controller ------------------------------------------------------------------
    async def _propose_metadata(self, data: bytes) -> ApplyResult:
        replica = self._metadata_replica
        invariant(replica is not None, "metadata group not hosted", node=self.node_id)
        assert replica is not None  # for the type checker; invariant() already stopped us
        try:
            index, term = replica.propose([data], EntryKind.CONTROL)
            result = await replica.wait_applied(index, term)
        except errors.NotLeader as exc:
            leader = self.controller_id()
            raise errors.NotController("this node stopped being the active controller", leader,
                                       self.address_of(leader) if leader else "") from exc
        invariant(isinstance(result, ApplyResult), "metadata apply returned no ApplyResult")
        return result  # type: ignore[return-value]

    def _leads_metadata(self) -> bool:
        replica = self._metadata_replica
        if replica is None:
            return False
        raft = replica.raft
        return (raft.role == Role.LEADER and raft.log.applied == raft.log.committed
                and raft.log.term(raft.log.applied) == raft.term)

    async def _controller_loop(self) -> None:
        settings = ControllerSettings(
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            session_timeout_ms=self.config.session_timeout_ms,
            replica_lag_ms_max=self.config.replica_lag_ms_max,
            replacement_delay_ms=self.config.replacement_delay_ms,
        )
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_ms / 1000)
            if self._leads_metadata():
                term = self._metadata_replica.raft.term if self._metadata_replica is not None else -1
                if self._controller is None or term != self._controller_term:
                    # A new leadership starts with fresh in-memory state (sessions, reports).
                    self._controller_term = term
                    log.info("node %d is now the active controller", self.node_id)
                    self._controller = ActiveController(self.image, self._propose_metadata, _now_ms,
                                                        settings, group_settings=self.config.group_settings())
            elif self._controller is not None and self._metadata_replica is not None \
                    and self._metadata_replica.raft.role != Role.LEADER:
                log.info("node %d is no longer the active controller", self.node_id)
                self._controller = None
            if self.controller is not None and self._controller is not None:
                try:
                    # Bounded: a controller cut off from the others must get back here to notice.
                    results = await asyncio.wait_for(self._controller.tick(),
                                                     self.config.session_timeout_ms / 1000)
                    for result in results:
                        log.info("controller: %s -> %s", result.record,
                                 "ok" if result.ok else result.error)
                except errors.NotController:
                    self._controller = None
                except TimeoutError:
                    log.warning("controller tick did not finish within the session timeout")
                except errors.MillpondError as exc:
                    log.warning("controller tick failed: %s", exc)

    # -- retention and compaction -----------------------------------------------------------------
    async def _cleaner_loop(self) -> None:
        while True:
            await asyncio.sleep(limits.cleaner_interval_ms / 1000)
            self._cleaner.tick()

    # -- heartbeats to the controller -------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_ms / 1000)
            try:
                await self._heartbeat_once()
            except errors.MillpondError as exc:
                log.debug("heartbeat failed: %s", exc)
            silent_ms = _now_ms() - self._last_heartbeat_ok_ms
            if self.alive and silent_ms > self.config.session_timeout_ms:
                self.alive = False  # the controller has fenced us by now: lead nothing
            if not self.alive and self.epoch:
                step_down_everywhere(self._partitions, self.host)

    async def _heartbeat_once(self) -> None:
        leader = self.controller_id()
        channel = self.peer_channel(leader) if leader else None
        if channel is None:
            return
        stub = internal_grpc.ControllerServiceStub(channel)
        try:
            if not self.epoch:
                registered = await stub.RegisterNode(internal.RegisterNodeRequest(
                    node_id=self.node_id, address=self.config.listen, incarnation=self.incarnation),
                    timeout=_CONTROLLER_RPC_TIMEOUT_S)
                self.epoch = registered.epoch
            reports = leader_reports(self._partitions, self._isr, _now_ms())
            response = await stub.NodeHeartbeat(internal.NodeHeartbeatRequest(
                node_id=self.node_id, epoch=self.epoch, metadata_applied=self.image.applied_index,
                leading=[internal.LeaderReport(
                    group=r.group, term=r.term, voters=r.voters, learners=r.learners,
                    in_sync=r.in_sync, log_start_offset=r.log_start_offset,
                    high_watermark=r.high_watermark) for r in reports],
            ), timeout=_CONTROLLER_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            error = errors.from_rpc_error(exc)
            if isinstance(error, errors.InvalidRequest):
                self.epoch = 0  # the controller does not know us (yet): register again
            raise error from exc
        self._last_heartbeat_ok_ms = _now_ms()
        self.alive = response.alive
        if response.alive:
            carry_out([_action(a) for a in response.actions], self.host)


def _action(proto: internal.LeaderAction) -> LeaderAction:
    kind_name = proto.WhichOneof("action")
    return LeaderAction(group=proto.group, kind=ActionKind(kind_name), node=getattr(proto, kind_name))


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack to stderr (a debugging aid for stuck nodes)."""
    import sys

    for task in asyncio.all_tasks():
        chain, awaited = [], task.get_coro()
        while awaited is not None and len(chain) < 64:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        print(f"--- task {task.get_name()}: {' -> '.join(chain)}", file=sys.stderr)
    sys.stderr.flush()


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM/SIGINT."""
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    with contextlib.suppress(asyncio.CancelledError):
        await node.run()
