"""The one error tree of millpond, shared by the broker and its clients.

::

    MillpondError                      base; carries code, reason, gRPC status, retriable
    ├── InvalidRequest                 INVALID_ARGUMENT   bad names, counts, sizes, configs
    │   ├── InvalidTopicName
    │   ├── InvalidConfig
    │   ├── InvalidRecordBatch         malformed batch
    │   │   ├── CorruptRecordBatch     CRC mismatch: damaged in transit? retriable
    │   │   └── RecordKeyRequired      a keyless record sent to a compacted topic
    │   ├── BatchTooLarge
    │   ├── UnsupportedAssignor        no server-side assignor has that name (consumer groups)
    │   └── OffsetMetadataTooLarge     offset commit metadata over the limit
    ├── PartitionCountDecrease         INVALID_ARGUMENT   partitions can only grow
    ├── ReplicationFactorTooLarge      FAILED_PRECONDITION  more replicas than live nodes
    ├── UnknownTopic                   NOT_FOUND
    ├── UnknownPartition               NOT_FOUND
    ├── ReplicaNotHosted               NOT_FOUND          this node has no replica of the partition
    ├── TopicExists                    ALREADY_EXISTS
    ├── OffsetOutOfRange               OUT_OF_RANGE       carries log_start_offset, high_watermark
    ├── NotLeader                      FAILED_PRECONDITION  retriable; carries the leader's id/address
    ├── NotController                  FAILED_PRECONDITION  retriable; carries the controller's id/address
    ├── Unavailable                    UNAVAILABLE        retriable: no leader yet, node stopping, peer gone
    ├── RequestTimeout                 DEADLINE_EXCEEDED  retriable; may or may not have taken effect
    ├── ResourceExhausted              RESOURCE_EXHAUSTED retriable after retry_after_ms
    │   ├── GroupMaxSizeReached        the consumer group has its maximum of members
    │   └── GroupsMaxReached           the cluster has its maximum of consumer groups
    ├── InternalError                  INTERNAL
    │   consumer groups (Kafka's reason names; controller/groups/errors.py maps the coordinator's onto these)
    ├── UnknownMemberId                NOT_FOUND          the member left or expired: rejoin with epoch 0
    ├── GroupIdNotFound                NOT_FOUND          no such consumer group
    ├── FencedMemberEpoch              FAILED_PRECONDITION  drop every partition, rejoin with epoch 0
    ├── StaleMemberEpoch               FAILED_PRECONDITION  retriable: heartbeat to learn the epoch, retry
    ├── UnreleasedInstanceId           FAILED_PRECONDITION  retriable: a live member holds the instance id
    ├── FencedInstanceId               FAILED_PRECONDITION  the instance id belongs to a newer member
    ├── GroupNotEmpty                  FAILED_PRECONDITION  retriable: the group has members
    └── PartitionNotAssigned           FAILED_PRECONDITION  commit of a partition the member does not own

Each class has a stable numeric ``code`` and a stable ``reason`` string. On the
wire (see ``proto/millpond/v1/common.proto``) an error is the gRPC status code
and message plus trailing metadata ``millpond-error-reason`` and, where they
apply, ``millpond-leader`` (``"<id>@<host:port>"``), ``millpond-log-start-offset``,
``millpond-high-watermark`` and ``millpond-retry-after-ms``. The server
translates once, in an interceptor (:func:`to_status`); the client translates
back once (:func:`from_rpc_error`), raising the most specific class.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

REASON_KEY = "millpond-error-reason"
LEADER_KEY = "millpond-leader"
LOG_START_KEY = "millpond-log-start-offset"
HIGH_WATERMARK_KEY = "millpond-high-watermark"
RETRY_AFTER_KEY = "millpond-retry-after-ms"


class MillpondError(Exception):
    """Base of every error millpond reports to a user."""

    code: int = 1
    reason: str = "UNKNOWN"
    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def metadata(self) -> list[tuple[str, str]]:
        """Trailing metadata describing this error (reason first)."""
        return [(REASON_KEY, self.reason)]


class InvalidRequest(MillpondError):
    """An argument is out of range or malformed; retrying the same request cannot succeed."""

    code, reason, status = 10, "INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT


class InvalidTopicName(InvalidRequest):
    """A topic name breaks the naming rules."""

    code, reason = 11, "INVALID_TOPIC_NAME"


class InvalidConfig(InvalidRequest):
    """A configuration key is unknown or its value is out of range."""

    code, reason = 12, "INVALID_CONFIG"


class InvalidRecordBatch(InvalidRequest):
    """A record batch is malformed or its CRC does not match."""

    code, reason = 13, "INVALID_RECORD_BATCH"


class CorruptRecordBatch(InvalidRecordBatch):
    """A record batch's CRC does not match its bytes; resending an intact copy may succeed."""

    code, reason, retriable = 17, "CORRUPT_BATCH", True


class RecordKeyRequired(InvalidRecordBatch):
    """A record without a key was sent to a compacted topic (compaction keeps the latest record per
    key, so every record needs one); the whole batch is refused, nothing is appended."""

    code, reason = 18, "RECORD_KEY_REQUIRED"


class BatchTooLarge(InvalidRequest):
    """A record batch exceeds the size limit."""

    code, reason = 14, "BATCH_TOO_LARGE"


class PartitionCountDecrease(MillpondError):
    """A topic's partition count can only grow."""

    code, reason, status = 15, "PARTITION_COUNT_DECREASE", grpc.StatusCode.INVALID_ARGUMENT


class ReplicationFactorTooLarge(MillpondError):
    """More replicas were asked for than the cluster has live nodes."""

    code, reason, status = 16, "REPLICATION_FACTOR_TOO_LARGE", grpc.StatusCode.FAILED_PRECONDITION


class UnknownTopic(MillpondError):
    """No topic has this name."""

    code, reason, status = 20, "UNKNOWN_TOPIC", grpc.StatusCode.NOT_FOUND


class UnknownPartition(MillpondError):
    """The topic has no partition with this number."""

    code, reason, status = 21, "UNKNOWN_PARTITION", grpc.StatusCode.NOT_FOUND


class ReplicaNotHosted(MillpondError):
    """The node asked hosts no replica of the partition (a replica-level request went to another node)."""

    code, reason, status = 23, "REPLICA_NOT_HOSTED", grpc.StatusCode.NOT_FOUND


class TopicExists(MillpondError):
    """A topic with this name already exists."""

    code, reason, status = 22, "TOPIC_EXISTS", grpc.StatusCode.ALREADY_EXISTS


class OffsetOutOfRange(MillpondError):
    """The offset lies below the log start offset or above the high watermark."""

    code, reason, status = 30, "OFFSET_OUT_OF_RANGE", grpc.StatusCode.OUT_OF_RANGE

    def __init__(self, message: str, log_start_offset: int = -1, high_watermark: int = -1) -> None:
        super().__init__(message)
        self.log_start_offset = log_start_offset
        self.high_watermark = high_watermark

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (LOG_START_KEY, str(self.log_start_offset)),
                (HIGH_WATERMARK_KEY, str(self.high_watermark))]


class _Redirect(MillpondError):
    """Base of errors that name the node to ask instead."""

    status, retriable = grpc.StatusCode.FAILED_PRECONDITION, True

    def __init__(self, message: str, leader_id: int = 0, leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address

    def metadata(self) -> list[tuple[str, str]]:
        extra = [(LEADER_KEY, f"{self.leader_id}@{self.leader_address}")] if self.leader_id else []
        return [*super().metadata(), *extra]


class NotLeader(_Redirect):
    """This node does not lead the partition; ask ``leader_address`` (if known)."""

    code, reason = 40, "NOT_LEADER"


class NotController(_Redirect):
    """This node is not the active controller; ask ``leader_address`` (if known)."""

    code, reason = 41, "NOT_CONTROLLER"


class Unavailable(MillpondError):
    """The cluster cannot serve this now (no leader yet, node stopping); retry with backoff."""

    code, reason, status, retriable = 50, "UNAVAILABLE", grpc.StatusCode.UNAVAILABLE, True


class RequestTimeout(MillpondError):
    """The request did not complete in time; it may or may not have taken effect."""

    code, reason, status, retriable = 51, "TIMEOUT", grpc.StatusCode.DEADLINE_EXCEEDED, True


class ResourceExhausted(MillpondError):
    """A limit was reached; retry after ``retry_after_ms``."""

    code, reason, status, retriable = 52, "RESOURCE_EXHAUSTED", grpc.StatusCode.RESOURCE_EXHAUSTED, True

    def __init__(self, message: str, retry_after_ms: int = 100) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def metadata(self) -> list[tuple[str, str]]:
        return [*super().metadata(), (RETRY_AFTER_KEY, str(self.retry_after_ms))]


class InternalError(MillpondError):
    """A bug or an unexpected failure inside millpond."""

    code, reason, status = 90, "INTERNAL", grpc.StatusCode.INTERNAL


# --- consumer groups (KIP-848 reasons; the coordinator's GroupErrorReason maps onto these) ---------


class UnsupportedAssignor(InvalidRequest):
    """No server-side assignor has the requested name."""

    code, reason = 60, "UNSUPPORTED_ASSIGNOR"


class OffsetMetadataTooLarge(InvalidRequest):
    """An offset commit's metadata string is longer than ``group_offset_metadata_bytes_max``."""

    code, reason = 61, "OFFSET_METADATA_TOO_LARGE"


class UnknownMemberId(MillpondError):
    """The member is not in the group (it left, or its session expired): rejoin with epoch 0."""

    code, reason, status = 62, "UNKNOWN_MEMBER_ID", grpc.StatusCode.NOT_FOUND


class GroupIdNotFound(MillpondError):
    """No consumer group has this id."""

    code, reason, status = 63, "GROUP_ID_NOT_FOUND", grpc.StatusCode.NOT_FOUND


class FencedMemberEpoch(MillpondError):
    """The member's epoch is not the group's view of it: release every partition, rejoin with epoch 0."""

    code, reason, status = 64, "FENCED_MEMBER_EPOCH", grpc.StatusCode.FAILED_PRECONDITION


class StaleMemberEpoch(MillpondError):
    """The request carries an older epoch than the member's: heartbeat to learn it, then retry."""

    code, reason, status, retriable = 65, "STALE_MEMBER_EPOCH", grpc.StatusCode.FAILED_PRECONDITION, True


class UnreleasedInstanceId(MillpondError):
    """Another live member holds the static instance id; retry once it left or expired."""

    code, reason, status, retriable = 66, "UNRELEASED_INSTANCE_ID", grpc.StatusCode.FAILED_PRECONDITION, True


class FencedInstanceId(MillpondError):
    """The static instance id now belongs to a newer member: this process was replaced."""

    code, reason, status = 67, "FENCED_INSTANCE_ID", grpc.StatusCode.FAILED_PRECONDITION


class GroupNotEmpty(MillpondError):
    """The group has members (delete, offset reset and admin commits need an empty group)."""

    code, reason, status, retriable = 68, "GROUP_NOT_EMPTY", grpc.StatusCode.FAILED_PRECONDITION, True


class PartitionNotAssigned(MillpondError):
    """An offset commit names a partition the committing member does not own."""

    code, reason, status = 69, "PARTITION_NOT_ASSIGNED", grpc.StatusCode.FAILED_PRECONDITION


class GroupMaxSizeReached(ResourceExhausted):
    """The consumer group has its maximum of members; retry later."""

    code, reason = 70, "GROUP_MAX_SIZE_REACHED"


class GroupsMaxReached(ResourceExhausted):
    """The cluster has its maximum of consumer groups; retry later."""

    code, reason = 71, "GROUPS_MAX_REACHED"


def _all_classes() -> list[type[MillpondError]]:
    found: list[type[MillpondError]] = []
    pending: list[type[MillpondError]] = [MillpondError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


BY_REASON: dict[str, type[MillpondError]] = {
    cls.reason: cls for cls in _all_classes() if not cls.__name__.startswith("_")
}

_BY_STATUS: dict[grpc.StatusCode, type[MillpondError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: UnknownTopic,
    grpc.StatusCode.ALREADY_EXISTS: TopicExists,
    grpc.StatusCode.OUT_OF_RANGE: OffsetOutOfRange,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeout,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.INTERNAL: InternalError,
}


def to_status(error: MillpondError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """The gRPC status code, message and trailing metadata that carry ``error``."""
    return error.status, error.message, error.metadata()


def from_rpc_error(exc: grpc.RpcError) -> MillpondError:
    """The most specific :class:`MillpondError` for a failed call (``raise ... from exc``)."""
    code: grpc.StatusCode = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details: str = (exc.details() if hasattr(exc, "details") else None) or str(code)
    trailers: Iterable[tuple[str, str | bytes]] = (
        exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    ) or ()
    meta = {key: value.decode() if isinstance(value, bytes) else value for key, value in trailers}
    cls = BY_REASON.get(meta.get(REASON_KEY, ""))
    if cls is None:
        cls = _BY_STATUS.get(code, Unavailable if code == grpc.StatusCode.CANCELLED else InternalError)
    if issubclass(cls, OffsetOutOfRange):
        return cls(details, int(meta.get(LOG_START_KEY, -1)), int(meta.get(HIGH_WATERMARK_KEY, -1)))
    if issubclass(cls, _Redirect):
        leader_id, _, address = meta.get(LEADER_KEY, "0@").partition("@")
        return cls(details, int(leader_id or 0), address)
    if issubclass(cls, ResourceExhausted):
        return cls(details, int(meta.get(RETRY_AFTER_KEY, 100)))
    return cls(details)
