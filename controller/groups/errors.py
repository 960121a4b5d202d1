"""Why a consumer-group request or record was refused: one exception, one enum of Kafka-like reasons.

The group logic is pure and knows nothing of gRPC, so it raises (or returns,
in a response) a :class:`GroupError` carrying a :class:`GroupErrorReason`.
The reason names are Kafka's where Kafka has one, so clients written against
KIP-848 recognise them. Translating them into the project's error tree
(:mod:`millpond.errors`) happens once, by :func:`to_millpond_error` (the
metadata image maps rejected records with it, the active controller refused
requests); the mapping is in the table below (``retriable`` is
:attr:`GroupError.retriable`, and equals the mapped class's).

::

    reason                      gRPC status           retriable  meaning
    INVALID_REQUEST             INVALID_ARGUMENT      no         malformed request (message says what)
    UNKNOWN_MEMBER_ID           NOT_FOUND             no         the member id is not in the group: rejoin
    FENCED_MEMBER_EPOCH         FAILED_PRECONDITION   no         the member is fenced: drop every partition,
                                                                 rejoin with epoch 0 and the same member id
    STALE_MEMBER_EPOCH          FAILED_PRECONDITION   yes        epoch behind the member's: heartbeat, retry
    UNRELEASED_INSTANCE_ID      FAILED_PRECONDITION   yes        another live member holds the instance id
    FENCED_INSTANCE_ID          FAILED_PRECONDITION   no         the instance id now belongs to a newer member
    GROUP_MAX_SIZE_REACHED      RESOURCE_EXHAUSTED    yes        the group has its maximum of members
    GROUPS_MAX_REACHED          RESOURCE_EXHAUSTED    yes        the cluster has its maximum of groups
    UNSUPPORTED_ASSIGNOR        INVALID_ARGUMENT      no         no server-side assignor has that name
    GROUP_ID_NOT_FOUND          NOT_FOUND             no         no such group
    GROUP_NOT_EMPTY             FAILED_PRECONDITION   yes        the group has members (delete, reset, admin)
    UNKNOWN_TOPIC_OR_PARTITION  NOT_FOUND             no         the topic or partition does not exist
    PARTITION_NOT_ASSIGNED      FAILED_PRECONDITION   no         commit of a partition not owned
    OFFSET_METADATA_TOO_LARGE   INVALID_ARGUMENT      no         commit metadata over the limit
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from millpond import errors

__all__ = ["RETRIABLE_REASONS", "GroupError", "GroupErrorReason", "to_millpond_error"]


class GroupErrorReason(StrEnum):
    """The stable reason names of :class:`GroupError` (see the module table)."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNKNOWN_MEMBER_ID = "UNKNOWN_MEMBER_ID"
    FENCED_MEMBER_EPOCH = "FENCED_MEMBER_EPOCH"
    STALE_MEMBER_EPOCH = "STALE_MEMBER_EPOCH"
    UNRELEASED_INSTANCE_ID = "UNRELEASED_INSTANCE_ID"
    FENCED_INSTANCE_ID = "FENCED_INSTANCE_ID"
    GROUP_MAX_SIZE_REACHED = "GROUP_MAX_SIZE_REACHED"
    GROUPS_MAX_REACHED = "GROUPS_MAX_REACHED"
    UNSUPPORTED_ASSIGNOR = "UNSUPPORTED_ASSIGNOR"
    GROUP_ID_NOT_FOUND = "GROUP_ID_NOT_FOUND"
    GROUP_NOT_EMPTY = "GROUP_NOT_EMPTY"
    UNKNOWN_TOPIC_OR_PARTITION = "UNKNOWN_TOPIC_OR_PARTITION"
    PARTITION_NOT_ASSIGNED = "PARTITION_NOT_ASSIGNED"
    OFFSET_METADATA_TOO_LARGE = "OFFSET_METADATA_TOO_LARGE"


#: Reasons after which the same request may succeed later without the client changing anything
#: but waiting (or heartbeating first, for ``STALE_MEMBER_EPOCH``).
RETRIABLE_REASONS: Final = frozenset({
    GroupErrorReason.STALE_MEMBER_EPOCH,
    GroupErrorReason.UNRELEASED_INSTANCE_ID,
    GroupErrorReason.GROUP_MAX_SIZE_REACHED,
    GroupErrorReason.GROUPS_MAX_REACHED,
    GroupErrorReason.GROUP_NOT_EMPTY,
})


class GroupError(Exception):
    """A consumer-group request or record refused for :attr:`reason`; :attr:`message` says why."""

    def __init__(self, reason: GroupErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    @property
    def retriable(self) -> bool:
        """Whether retrying the same request later may succeed (see the module table)."""
        return self.reason in RETRIABLE_REASONS

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupError) and (self.reason, self.message) == (other.reason, other.message)

    def __hash__(self) -> int:
        return hash((self.reason, self.message))

    def __repr__(self) -> str:
        return f"GroupError({self.reason.value}, {self.message!r})"


_ERROR_CLASSES: Final[dict[GroupErrorReason, type[errors.MillpondError]]] = {
    GroupErrorReason.INVALID_REQUEST: errors.InvalidRequest,
    GroupErrorReason.UNKNOWN_MEMBER_ID: errors.UnknownMemberId,
    GroupErrorReason.FENCED_MEMBER_EPOCH: errors.FencedMemberEpoch,
    GroupErrorReason.STALE_MEMBER_EPOCH: errors.StaleMemberEpoch,
    GroupErrorReason.UNRELEASED_INSTANCE_ID: errors.UnreleasedInstanceId,
    GroupErrorReason.FENCED_INSTANCE_ID: errors.FencedInstanceId,
    GroupErrorReason.GROUP_MAX_SIZE_REACHED: errors.GroupMaxSizeReached,
    GroupErrorReason.GROUPS_MAX_REACHED: errors.GroupsMaxReached,
    GroupErrorReason.UNSUPPORTED_ASSIGNOR: errors.UnsupportedAssignor,
    GroupErrorReason.GROUP_ID_NOT_FOUND: errors.GroupIdNotFound,
    GroupErrorReason.GROUP_NOT_EMPTY: errors.GroupNotEmpty,
    GroupErrorReason.UNKNOWN_TOPIC_OR_PARTITION: errors.UnknownPartition,
    GroupErrorReason.PARTITION_NOT_ASSIGNED: errors.PartitionNotAssigned,
    GroupErrorReason.OFFSET_METADATA_TOO_LARGE: errors.OffsetMetadataTooLarge,
}


def to_millpond_error(error: GroupError) -> errors.MillpondError:
    """The :mod:`millpond.errors` class of ``error.reason`` (see the module table), with its message.

    ``UNKNOWN_TOPIC_OR_PARTITION`` becomes :class:`~millpond.errors.UnknownPartition`
    (the message names the topic and partition).
    """
    return _ERROR_CLASSES[error.reason](error.message)
