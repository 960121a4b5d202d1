"""The Broker gRPC service: produce, fetch and list-offsets on partition leaders."""

from __future__ import annotations

from typing import Protocol

import grpc

from millpond import errors, limits
from millpond.node.partition import PartitionMachine
from millpond.v1 import broker_pb2 as pb
from millpond.v1 import broker_pb2_grpc as pb_grpc


class Partitions(Protocol):
    """How the broker finds partition replicas hosted on this node."""

    def leader_partition(self, topic: str, partition: int) -> PartitionMachine:
        """The local replica of ``topic``/``partition`` if this node leads it.

        Raises :class:`errors.UnknownTopic`, :class:`errors.UnknownPartition`,
        :class:`errors.NotLeader` (with the leader's address when known).
        """
        ...


def _check_partition_args(topic: str, partition: int) -> None:
    if not topic:
        raise errors.InvalidRequest("topic must not be empty")
    if partition < 0:
        raise errors.InvalidRequest(f"partition must be >= 0, got {partition}")


class BrokerService(pb_grpc.BrokerServicer):
    """Serves the data plane of the partitions this node leads."""

    def __init__(self, partitions: Partitions, *, unsafe_ack_before_commit: bool = False) -> None:
        self._partitions = partitions
        # The chaos suite's negative control: every produce is answered as soon as the leader
        # appended it to its in-memory log, before any fsync or replication (loses acknowledged
        # writes when a leader dies or is cut off). Only reachable through a hidden node flag.
        self._unsafe_ack_before_commit = unsafe_ack_before_commit

    async def Produce(self, request: pb.ProduceRequest,
                      context: grpc.aio.ServicerContext) -> pb.ProduceResponse:
        _check_partition_args(request.topic, request.partition)
        if not request.batch:
            raise errors.InvalidRecordBatch("batch must not be empty")
        machine = self._partitions.leader_partition(request.topic, request.partition)
        base, index, term = machine.append(request.batch)
        acks = request.acks or pb.ACKS_ALL
        if acks == pb.ACKS_NONE:
            return pb.ProduceResponse(base_offset=-1, leader_epoch=term)
        if self._unsafe_ack_before_commit:  # not even durable locally: the widest loss window
            return pb.ProduceResponse(base_offset=base, log_start_offset=machine.log_start_offset,
                                      leader_epoch=term)
        if acks == pb.ACKS_LEADER:
            await machine.replica.wait_persisted(index, term)
        else:
            await machine.replica.wait_applied(index, term)
        return pb.ProduceResponse(base_offset=base, log_start_offset=machine.log_start_offset,
                                  leader_epoch=term)

    async def Fetch(self, request: pb.FetchRequest,
                    context: grpc.aio.ServicerContext) -> pb.FetchResponse:
        _check_partition_args(request.topic, request.partition)
        if request.offset < 0:
            raise errors.InvalidRequest(f"offset must be >= 0, got {request.offset}")
        max_bytes = min(request.max_bytes or limits.fetch_bytes_default, limits.fetch_bytes_max)
        wait_s = min(request.max_wait_ms, limits.fetch_wait_ms_max) / 1000
        machine = self._partitions.leader_partition(request.topic, request.partition)
        machine.check_offset(request.offset)
        if request.offset == machine.high_watermark and wait_s > 0:
            await machine.wait_beyond(request.offset, wait_s)
        data = machine.read(request.offset, max_bytes)
        return pb.FetchResponse(batches=data, high_watermark=machine.high_watermark,
                                log_start_offset=machine.log_start_offset)

    async def ListOffsets(self, request: pb.ListOffsetsRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListOffsetsResponse:
        _check_partition_args(request.topic, request.partition)
        machine = self._partitions.leader_partition(request.topic, request.partition)
        spec = request.WhichOneof("spec")
        if spec == "earliest":
            return pb.ListOffsetsResponse(offset=machine.log_start_offset, timestamp_ms=-1)
        if spec == "latest":
            return pb.ListOffsetsResponse(offset=machine.high_watermark, timestamp_ms=-1)
        if spec == "timestamp_ms":
            if request.timestamp_ms < 0:
                raise errors.InvalidRequest(f"timestamp_ms must be >= 0, got {request.timestamp_ms}")
            offset, timestamp = machine.offset_for_timestamp(request.timestamp_ms)
            return pb.ListOffsetsResponse(offset=offset, timestamp_ms=timestamp)
        raise errors.InvalidRequest("one of earliest, latest or timestamp_ms is required")


