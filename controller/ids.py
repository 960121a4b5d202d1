"""Raft group ids: group 0 is the metadata log; partition ``p`` of topic ``t`` is ``t << 20 | p``.

Topic ids start at 1 and are never reused, so no partition's group is 0 and a
topic deleted and re-created gets fresh groups (a node never mistakes old data
for the new topic's).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "METADATA_GROUP",
    "PARTITIONS_PER_TOPIC_LIMIT",
    "PARTITION_BITS",
    "group_id",
    "split_group",
]

#: The metadata log's Raft group, hosted by every node.
METADATA_GROUP: Final = 0
#: Low bits of a group id that hold the partition number.
PARTITION_BITS: Final = 20
#: Hard ceiling of partitions per topic that the id layout allows (the enforced limit is lower).
PARTITIONS_PER_TOPIC_LIMIT: Final = 1 << PARTITION_BITS
_PARTITION_MASK: Final = PARTITIONS_PER_TOPIC_LIMIT - 1


def group_id(topic_id: int, partition: int) -> int:
    """The Raft group of ``partition`` of topic ``topic_id``; ``ValueError`` if either is out of range."""
    if topic_id < 1:
        raise ValueError(f"topic ids start at 1, got {topic_id}")
    if not 0 <= partition < PARTITIONS_PER_TOPIC_LIMIT:
        raise ValueError(f"partition must be in [0, {PARTITIONS_PER_TOPIC_LIMIT}), got {partition}")
    return topic_id << PARTITION_BITS | partition


def split_group(group: int) -> tuple[int, int]:
    """``(topic_id, partition)`` of a partition's group; ``ValueError`` for the metadata group."""
    if group <= METADATA_GROUP:
        raise ValueError(f"group {group} is not a partition's group")
    return group >> PARTITION_BITS, group & _PARTITION_MASK
