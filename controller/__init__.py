"""millpond.controller: the metadata state machine (Raft group 0) and the active controller.

* :mod:`~millpond.controller.records` — metadata record types and their versioned codec;
* :mod:`~millpond.controller.state` — :class:`MetadataImage`, the deterministic state machine
  every node applies the metadata log to;
* :mod:`~millpond.controller.topic_config` — topic names, configuration keys, topic limits;
* :mod:`~millpond.controller.placement` — pure replica placement;
* :mod:`~millpond.controller.decisions` — the active controller's pure decision rules;
* :mod:`~millpond.controller.controller` — :class:`ActiveController`, the shell that proposes them;
* :mod:`~millpond.controller.groups` — consumer groups, pure (records, state, assignors, coordinator);
* :mod:`~millpond.controller.group_coordinator` — :class:`GroupCoordinator`, their shell on the
  active controller;
* :mod:`~millpond.controller.reports` — heartbeat reports and leader actions;
* :mod:`~millpond.controller.ids` — group ids of partitions.
"""

from millpond.controller.controller import (
    ActiveController,
    ControllerSettings,
    ControllerStatistics,
    PartitionDescription,
    Propose,
    TopicDescription,
)
from millpond.controller.group_coordinator import GroupCoordinator, GroupCoordinatorStatistics
from millpond.controller.ids import METADATA_GROUP, group_id, split_group
from millpond.controller.records import MetadataRecord, RecordDecodeError, decode, encode
from millpond.controller.reports import ActionKind, HeartbeatResult, LeaderAction, LeaderReport
from millpond.controller.state import (
    ApplyResult,
    ImageStatistics,
    MetadataImage,
    NodeState,
    PartitionState,
    TopicState,
)
from millpond.controller.topic_config import TopicConfig, resolve_config

__all__ = [
    "METADATA_GROUP",
    "ActionKind",
    "ActiveController",
    "ApplyResult",
    "ControllerSettings",
    "ControllerStatistics",
    "GroupCoordinator",
    "GroupCoordinatorStatistics",
    "HeartbeatResult",
    "ImageStatistics",
    "LeaderAction",
    "LeaderReport",
    "MetadataImage",
    "MetadataRecord",
    "NodeState",
    "PartitionDescription",
    "PartitionState",
    "Propose",
    "RecordDecodeError",
    "TopicConfig",
    "TopicDescription",
    "TopicState",
    "decode",
    "encode",
    "group_id",
    "resolve_config",
    "split_group",
]
