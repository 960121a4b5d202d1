"""Consumer groups: server-side assignment in the manner of KIP-848 (pure logic).

No I/O, no clock, no randomness: the active controller passes time, topic
metadata and fresh member ids in, proposes the records that come out, and
every node applies them to its :class:`GroupsImage`.

* :mod:`~millpond.controller.groups.records` — the group records and their JSON form;
* :mod:`~millpond.controller.groups.state` — :class:`GroupState`, :class:`GroupsImage` (records applied);
* :mod:`~millpond.controller.groups.assignors` — the ``uniform`` (default) and ``range`` assignors;
* :mod:`~millpond.controller.groups.reconciliation` — a member's path to its target, revoke first;
* :mod:`~millpond.controller.groups.coordinator` — :func:`heartbeat`, :func:`session_expired`,
  :func:`delete_group`;
* :mod:`~millpond.controller.groups.offsets` — :func:`commit_offsets`, :func:`fetch_offsets`,
  :func:`plan_reset_offsets`;
* :mod:`~millpond.controller.groups.sessions` — :class:`SessionTracker` (in memory, active controller);
* :mod:`~millpond.controller.groups.errors` — :class:`GroupError` and its reasons.
"""

from millpond.controller.groups.assignors import (
    ASSIGNORS,
    DEFAULT_ASSIGNOR,
    Assignor,
    MemberSubscriptionSpec,
    RangeAssignor,
    UniformAssignor,
    assignor_named,
)
from millpond.controller.groups.coordinator import (
    DEFAULT_SETTINGS,
    GroupSettings,
    HeartbeatDecision,
    HeartbeatRequest,
    HeartbeatResponse,
    delete_group,
    heartbeat,
    resolve_subscriptions,
    session_expired,
)
from millpond.controller.groups.errors import GroupError, GroupErrorReason
from millpond.controller.groups.offsets import (
    OffsetChange,
    OffsetCommitDecision,
    OffsetCommitEntry,
    OffsetCommitRequest,
    PartitionBounds,
    PartitionResult,
    ResetMode,
    ResetPlan,
    ResetSpec,
    commit_offsets,
    fetch_offsets,
    plan_reset_offsets,
)
from millpond.controller.groups.records import (
    GroupDelete,
    GroupEpochBump,
    GroupMemberRemove,
    GroupMemberUpsert,
    GroupRecord,
    MemberCurrentAssignment,
    OffsetCommit,
    TargetAssignment,
    from_json,
    group_record_types,
    to_json,
)
from millpond.controller.groups.sessions import Session, SessionTracker, SessionUpdate, expired_members
from millpond.controller.groups.state import (
    CommittedOffset,
    GroupApplyResult,
    GroupDescription,
    GroupListing,
    GroupsImage,
    GroupState,
    GroupStateName,
    MemberState,
    TopicPartition,
)

__all__ = [
    "ASSIGNORS",
    "DEFAULT_ASSIGNOR",
    "DEFAULT_SETTINGS",
    "Assignor",
    "CommittedOffset",
    "GroupApplyResult",
    "GroupDelete",
    "GroupDescription",
    "GroupEpochBump",
    "GroupError",
    "GroupErrorReason",
    "GroupListing",
    "GroupMemberRemove",
    "GroupMemberUpsert",
    "GroupRecord",
    "GroupSettings",
    "GroupState",
    "GroupStateName",
    "GroupsImage",
    "HeartbeatDecision",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "MemberCurrentAssignment",
    "MemberState",
    "MemberSubscriptionSpec",
    "OffsetChange",
    "OffsetCommit",
    "OffsetCommitDecision",
    "OffsetCommitEntry",
    "OffsetCommitRequest",
    "PartitionBounds",
    "PartitionResult",
    "RangeAssignor",
    "ResetMode",
    "ResetPlan",
    "ResetSpec",
    "Session",
    "SessionTracker",
    "SessionUpdate",
    "TargetAssignment",
    "TopicPartition",
    "UniformAssignor",
    "assignor_named",
    "commit_offsets",
    "delete_group",
    "expired_members",
    "fetch_offsets",
    "from_json",
    "group_record_types",
    "heartbeat",
    "plan_reset_offsets",
    "resolve_subscriptions",
    "session_expired",
    "to_json",
]
