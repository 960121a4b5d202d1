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
    Header,
    NodeDescription,
    PartitionDescription,
    RecordMetadata,
    ReplicaDescription,
    TopicDescription,
    TopicPartition,
)
from millpond.client.admin import AsyncAdmin
from millpond.client.consumer import AsyncConsumer, ConsumerStatistics, PartitionStatistics
from millpond.client.producer import AsyncProducer, ProducerStatistics
from millpond.client.sync import Admin, Consumer, Producer
from millpond.errors import (
    BatchTooLarge,
    InternalError,
    InvalidConfig,
    InvalidRecordBatch,
    InvalidRequest,
    InvalidTopicName,
    MillpondError,
    NotController,
    NotLeader,
    OffsetOutOfRange,
    PartitionCountDecrease,
    ReplicaNotHosted,
    ReplicationFactorTooLarge,
    RequestTimeout,
    ResourceExhausted,
    TopicExists,
    Unavailable,
    UnknownPartition,
    UnknownTopic,
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
    "OffsetOutOfRange",
    "PartitionCountDecrease",
    "PartitionDescription",
    "PartitionStatistics",
    "Producer",
    "ProducerConfig",
    "ProducerStatistics",
    "RecordMetadata",
    "ReplicaDescription",
    "ReplicaNotHosted",
    "ReplicationFactorTooLarge",
    "RequestTimeout",
    "ResourceExhausted",
    "TopicDescription",
    "TopicExists",
    "TopicPartition",
    "Unavailable",
    "UnknownPartition",
    "UnknownTopic",
    "parse_acks",
    "parse_bootstrap",
]
