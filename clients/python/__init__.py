"""millpond's Python client: a producer, a consumer and an admin client, asynchronous and blocking.

One asyncio implementation (``grpc.aio``) with a thin blocking facade that
runs it on a background event loop::

    from millpond.client import Admin, Producer, Consumer, ProducerConfig

    with Admin("127.0.0.1:9091") as admin:
        admin.create_topic("orders", partitions=3, replication_factor=3)
    with Producer("127.0.0.1:9091", ProducerConfig(acks="all")) as producer:
        metadata = producer.send("orders", b"paid", key=b"order-17").result()
    with Consumer("127.0.0.1:9091") as consumer:
        consumer.assign([("orders", metadata.partition)])
        consumer.seek(("orders", metadata.partition), metadata.offset)
        records = consumer.poll(timeout_ms=1000)

Consumer groups: ``Consumer(bootstrap, ConsumerConfig(group_id="billing"))``,
then ``consumer.subscribe(["orders"])`` and ``poll`` / ``commit`` (see
:mod:`millpond.client.consumer` for the protocol and the commit recipes);
``Admin.list_groups`` / ``describe_group`` / ``reset_offsets`` / ``delete_group``.

or, in asyncio code, :class:`AsyncAdmin`, :class:`AsyncProducer` and
:class:`AsyncConsumer` with the same methods as coroutines.

Errors are the classes of :mod:`millpond.errors` (re-exported here), each
with a ``retriable`` flag; the docstring of every method lists those it
raises and what a call that timed out may have done.
"""

from millpond.client._config import ClientConfig, ConsumerConfig, ProducerConfig, parse_acks, parse_bootstrap
from millpond.client._types import (
    ClusterDescription,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    GroupMemberDescription,
    Header,
    NodeDescription,
    OffsetAndMetadata,
    OffsetChange,
    PartitionDescription,
    PartitionLag,
    RecordMetadata,
    ReplicaDescription,
    TopicDescription,
    TopicPartition,
)
from millpond.client.admin import AsyncAdmin
from millpond.client.consumer import AsyncConsumer, ConsumerStatistics, PartitionStatistics, RebalanceCallback
from millpond.client.producer import AsyncProducer, ProducerStatistics
from millpond.client.sync import Admin, Consumer, Producer
from millpond.errors import (
    BatchTooLarge,
    FencedInstanceId,
    FencedMemberEpoch,
    GroupIdNotFound,
    GroupMaxSizeReached,
    GroupNotEmpty,
    GroupsMaxReached,
    InternalError,
    InvalidConfig,
    InvalidRecordBatch,
    InvalidRequest,
    InvalidTopicName,
    MillpondError,
    NotController,
    NotLeader,
    OffsetMetadataTooLarge,
    OffsetOutOfRange,
    PartitionCountDecrease,
    PartitionNotAssigned,
    RecordKeyRequired,
    ReplicaNotHosted,
    ReplicationFactorTooLarge,
    RequestTimeout,
    ResourceExhausted,
    StaleMemberEpoch,
    TopicExists,
    Unavailable,
    UnknownMemberId,
    UnknownPartition,
    UnknownTopic,
    UnreleasedInstanceId,
    UnsupportedAssignor,
)

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "BatchTooLarge",
    "ClientConfig",
    "ClusterDescription",
    "Consumer",
    "ConsumerConfig",
    "ConsumerRecord",
    "ConsumerStatistics",
    "FencedInstanceId",
    "FencedMemberEpoch",
    "GroupDescription",
    "GroupIdNotFound",
    "GroupListing",
    "GroupMaxSizeReached",
    "GroupMemberDescription",
    "GroupNotEmpty",
    "GroupsMaxReached",
    "Header",
    "InternalError",
    "InvalidConfig",
    "InvalidRecordBatch",
    "InvalidRequest",
    "InvalidTopicName",
    "MillpondError",
    "NodeDescription",
    "NotController",
    "NotLeader",
    "OffsetAndMetadata",
    "OffsetChange",
    "OffsetMetadataTooLarge",
    "OffsetOutOfRange",
    "PartitionCountDecrease",
    "PartitionDescription",
    "PartitionLag",
    "PartitionNotAssigned",
    "PartitionStatistics",
    "Producer",
    "ProducerConfig",
    "ProducerStatistics",
    "RebalanceCallback",
    "RecordKeyRequired",
    "RecordMetadata",
    "ReplicaDescription",
    "ReplicaNotHosted",
    "ReplicationFactorTooLarge",
    "RequestTimeout",
    "ResourceExhausted",
    "StaleMemberEpoch",
    "TopicDescription",
    "TopicExists",
    "TopicPartition",
    "Unavailable",
    "UnknownMemberId",
    "UnknownPartition",
    "UnknownTopic",
    "UnreleasedInstanceId",
    "UnsupportedAssignor",
    "parse_acks",
    "parse_bootstrap",
]
