"""Topic names, topic configuration keys (types, ranges, defaults), and the topic limits.

Configuration travels as strings (``map<string, string>`` in the API). The
controller validates and normalizes it before it enters the metadata log
(:func:`validate_config`); the log keeps only the keys the user set, so the
defaults below can change without rewriting it. Readers resolve the full,
typed configuration with :func:`resolve_config`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from millpond import limits
from millpond.controller.ids import PARTITIONS_PER_TOPIC_LIMIT
from millpond.errors import InvalidConfig, InvalidTopicName

__all__ = [
    "CLEANUP_POLICIES",
    "CONFIG_KEYS",
    "INTERNAL_PREFIX",
    "ConfigKey",
    "TopicConfig",
    "check_relations",
    "cluster_partitions_max",
    "resolve_config",
    "topic_config_value_chars_max",
    "topic_name_chars_max",
    "topic_partitions_max",
    "topic_replication_factor_max",
    "topics_max",
    "validate_config",
    "validate_topic_name",
]

# --- Limits (to move to millpond/limits.py) ------------------------------------------
#: Longest topic name.
topic_name_chars_max = 200
#: Most partitions one topic may have (the group id layout allows 2**20).
topic_partitions_max = 1024
#: Most replicas per partition; one more member must fit in a Raft group while a
#: replica is being re-placed (learner added before the dead replica is removed).
topic_replication_factor_max = 5
#: Most topics in the cluster.
topics_max = 4096
#: Most partitions over all topics of the cluster (each is a Raft group on rf nodes).
cluster_partitions_max = 65_536
#: Longest configuration value.
topic_config_value_chars_max = 256

_INT64_MAX: Final = 2**63 - 1
_DAY_MS: Final = 86_400_000


def check_relations() -> None:
    """Raise ``ValueError`` if the limits above contradict each other or :mod:`millpond.limits`."""
    problems: list[str] = []
    if not 1 <= topic_partitions_max < PARTITIONS_PER_TOPIC_LIMIT:
        problems.append("topic_partitions_max must be in [1, 2**20)")
    if topic_replication_factor_max + 1 > limits.raft_group_members_max:
        problems.append("topic_replication_factor_max + 1 must be <= raft_group_members_max")
    if cluster_partitions_max < topic_partitions_max:
        problems.append("cluster_partitions_max must be >= topic_partitions_max")
    if problems:
        raise ValueError("; ".join(problems))


check_relations()

# --- Topic names -------------------------------------------------------------------------

_NAME_CHARS: Final = re.compile(r"[A-Za-z0-9._-]+")
_BAD_CHAR: Final = re.compile(r"[^A-Za-z0-9._-]")
#: Prefix of internal topics (created by millpond itself, e.g. for consumer groups).
INTERNAL_PREFIX: Final = "__"


def validate_topic_name(name: str, *, internal: bool = False) -> None:
    """Raise :class:`InvalidTopicName` unless ``name`` is 1-200 characters of ``[A-Za-z0-9._-]``,
    not ``"."`` or ``".."``, and (unless ``internal``) does not start with ``"__"``."""
    if not name:
        raise InvalidTopicName("topic name must not be empty")
    if len(name) > topic_name_chars_max:
        raise InvalidTopicName(f"topic name is {len(name)} characters long; at most "
                               f"{topic_name_chars_max} are allowed")
    if not _NAME_CHARS.fullmatch(name):
        bad = _BAD_CHAR.search(name)
        char = bad.group() if bad else "?"
        raise InvalidTopicName(f"topic name {name!r} contains {char!r}; allowed are letters, digits, "
                               f"'.', '_' and '-'")
    if name in (".", ".."):
        raise InvalidTopicName(f"topic name {name!r} is not allowed")
    if name.startswith(INTERNAL_PREFIX) and not internal:
        raise InvalidTopicName(f"topic name {name!r} starts with {INTERNAL_PREFIX!r}, which is reserved "
                               f"for internal topics")


# --- Configuration keys --------------------------------------------------------------------

_INTEGER: Final = re.compile(r"-?[0-9]+")
#: Accepted values of ``cleanup_policy`` (normalized spelling).
CLEANUP_POLICIES: Final = ("delete", "compact", "compact,delete")


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One topic configuration key: its default and how a value is checked and normalized."""

    name: str
    default: str
    doc: str
    parse: Callable[[str, str], str]
    """``parse(key, value)`` returns the normalized value or raises :class:`InvalidConfig`."""


def _integer(low: int, high: int, *, infinite: bool = False) -> Callable[[str, str], str]:
    def parse(key: str, value: str) -> str:
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise InvalidConfig(f"config {key}: {value!r} is not an integer")
        number = int(text)
        if not (low <= number <= high or (infinite and number == -1)):
            span = f"-1 (infinite) or {low}..{high}" if infinite else f"{low}..{high}"
            raise InvalidConfig(f"config {key}: {number} is out of range ({span})")
        return str(number)

    return parse


def _cleanup_policy(key: str, value: str) -> str:
    parts = sorted({part.strip() for part in value.split(",")})
    normalized = ",".join(parts)
    if normalized not in CLEANUP_POLICIES:
        raise InvalidConfig(f"config {key}: {value!r} is not one of {', '.join(CLEANUP_POLICIES)}")
    return normalized


CONFIG_KEYS: Final[dict[str, ConfigKey]] = {
    key.name: key
    for key in (
        ConfigKey("retention_ms", str(7 * _DAY_MS),
                  "Delete batches older than this (ms; -1 keeps them forever).",
                  _integer(1, _INT64_MAX, infinite=True)),
        ConfigKey("retention_bytes", "-1",
                  "Delete the oldest batches while a partition holds more bytes than this (-1: no limit).",
                  _integer(1, _INT64_MAX, infinite=True)),
        ConfigKey("cleanup_policy", "delete",
                  "delete (retention), compact (latest value per key), or compact,delete (both).",
                  _cleanup_policy),
        ConfigKey("delete_retention_ms", str(_DAY_MS),
                  "How long compaction keeps tombstones, so slow consumers see deletions (ms).",
                  _integer(0, _INT64_MAX)),
        ConfigKey("min_compaction_lag_ms", "0",
                  "Records younger than this stay uncompacted (ms).",
                  _integer(0, _INT64_MAX)),
        ConfigKey("max_message_bytes", str(1024 * 1024),
                  "Largest record batch a producer may send to this topic (bytes).",
                  _integer(1024, limits.batch_bytes_max)),
        ConfigKey("min_insync_replicas", "1",
                  "acks=all fails while the ISR is smaller than this (at most the replication factor).",
                  _integer(1, topic_replication_factor_max)),
    )
}
"""Every topic configuration key, by name."""


def validate_config(config: Mapping[str, str], replication_factor: int) -> dict[str, str]:
    """The normalized explicit configuration, or :class:`InvalidConfig` naming the first bad key.

    Keys are checked in sorted order so the reported error is deterministic.
    Unknown keys are refused (with a suggestion for a near miss such as
    ``retention.ms``); ``min_insync_replicas`` may not exceed ``replication_factor``.
    """
    normalized: dict[str, str] = {}
    for key in sorted(config):
        value = config[key]
        spec = CONFIG_KEYS.get(key)
        if spec is None:
            near = difflib.get_close_matches(key.replace(".", "_").replace("-", "_"), CONFIG_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            known = ", ".join(sorted(CONFIG_KEYS))
            raise InvalidConfig(f"unknown config key {key!r}{hint}; known keys: {known}")
        if not isinstance(value, str):
            raise InvalidConfig(f"config {key}: value must be a string, got {type(value).__name__}")
        if len(value) > topic_config_value_chars_max:
            raise InvalidConfig(f"config {key}: value is {len(value)} characters long; at most "
                                f"{topic_config_value_chars_max} are allowed")
        normalized[key] = spec.parse(key, value)
    min_isr = int(normalized.get("min_insync_replicas", CONFIG_KEYS["min_insync_replicas"].default))
    if min_isr > replication_factor:
        raise InvalidConfig(f"config min_insync_replicas: {min_isr} exceeds the replication factor "
                            f"{replication_factor}")
    return normalized


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """A topic's full, typed configuration (explicit values over defaults)."""

    retention_ms: int
    retention_bytes: int
    cleanup_policy: str
    delete_retention_ms: int
    min_compaction_lag_ms: int
    max_message_bytes: int
    min_insync_replicas: int

    @property
    def compact(self) -> bool:
        """Whether compaction runs (``compact`` or ``compact,delete``)."""
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        """Whether retention deletes old batches (``delete`` or ``compact,delete``)."""
        return "delete" in self.cleanup_policy

    def as_strings(self) -> dict[str, str]:
        """Every key with its value as a string (what DescribeTopic shows)."""
        return {key: str(getattr(self, key)) for key in sorted(CONFIG_KEYS)}


def resolve_config(explicit: Mapping[str, str]) -> TopicConfig:
    """The full configuration of a topic whose stored (already validated) keys are ``explicit``."""
    merged = {key: spec.default for key, spec in CONFIG_KEYS.items()} | dict(explicit)
    return TopicConfig(
        retention_ms=int(merged["retention_ms"]),
        retention_bytes=int(merged["retention_bytes"]),
        cleanup_policy=merged["cleanup_policy"],
        delete_retention_ms=int(merged["delete_retention_ms"]),
        min_compaction_lag_ms=int(merged["min_compaction_lag_ms"]),
        max_message_bytes=int(merged["max_message_bytes"]),
        min_insync_replicas=int(merged["min_insync_replicas"]),
    )
