"""Topic name rules and configuration keys: what is accepted, normalized, and refused (with which message)."""

from __future__ import annotations

import pytest

from millpond.controller.topic_config import (
    CONFIG_KEYS,
    resolve_config,
    validate_config,
    validate_topic_name,
)
from millpond.errors import InvalidConfig, InvalidTopicName


@pytest.mark.parametrize("name", ["orders", "a", "A-b_c.9", "x" * 200, "...", "_single", "a__b"])
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize(("name", "message"), [
    ("", "topic name must not be empty"),
    ("x" * 201, "topic name is 201 characters long; at most 200 are allowed"),
    ("a b", "topic name 'a b' contains ' '; allowed are letters, digits, '.', '_' and '-'"),
    ("caf\u00e9", "topic name 'caf\u00e9' contains '\u00e9'"),
    ("a/b", "contains '/'"),
    (".", "topic name '.' is not allowed"),
    ("..", "topic name '..' is not allowed"),
    ("__consumer_offsets", "topic name '__consumer_offsets' starts with '__', which is reserved for internal "
                           "topics"),
])
def test_invalid_topic_names(name: str, message: str) -> None:
    with pytest.raises(InvalidTopicName) as info:
        validate_topic_name(name)
    assert message in info.value.message


def test_internal_topics_may_use_the_reserved_prefix() -> None:
    validate_topic_name("__groups", internal=True)


def test_valid_config_is_normalized() -> None:
    assert validate_config({"retention_ms": " 0060000", "cleanup_policy": "delete, compact",
                            "retention_bytes": "-1", "min_insync_replicas": "2"}, replication_factor=3) == {
        "retention_ms": "60000", "cleanup_policy": "compact,delete", "retention_bytes": "-1",
        "min_insync_replicas": "2"}


@pytest.mark.parametrize(("config", "message"), [
    ({"retention.ms": "1"}, "unknown config key 'retention.ms' (did you mean 'retention_ms'?); known keys: "
                            "cleanup_policy, delete_retention_ms, max_message_bytes, min_compaction_lag_ms, "
                            "min_insync_replicas, retention_bytes, retention_ms"),
    ({"colour": "red"}, "unknown config key 'colour'; known keys: cleanup_policy,"),
    ({"retention_ms": "7d"}, "config retention_ms: '7d' is not an integer"),
    ({"retention_ms": "0"},
     "config retention_ms: 0 is out of range (-1 (infinite) or 1..9223372036854775807)"),
    ({"retention_bytes": "-2"}, "config retention_bytes: -2 is out of range"),
    ({"delete_retention_ms": "-1"},
     "config delete_retention_ms: -1 is out of range (0..9223372036854775807)"),
    ({"max_message_bytes": "100"}, "config max_message_bytes: 100 is out of range (1024..2097152)"),
    ({"cleanup_policy": "archive"}, "config cleanup_policy: 'archive' is not one of delete, compact, "
                                    "compact,delete"),
    ({"min_insync_replicas": "3"}, "config min_insync_replicas: 3 exceeds the replication factor 2"),
    ({"retention_ms": "1" * 300}, "config retention_ms: value is 300 characters long; at most 256"),
])
def test_invalid_config_is_refused_precisely(config: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        validate_config(config, replication_factor=2)
    assert message in info.value.message


def test_resolve_fills_defaults_under_explicit_values() -> None:
    config = resolve_config({"cleanup_policy": "compact,delete", "retention_ms": "-1"})
    assert config.retention_ms == -1
    assert config.retention_bytes == -1
    assert config.compact and config.delete
    assert config.max_message_bytes == 1024 * 1024
    assert config.min_insync_replicas == 1
    assert resolve_config({}).retention_ms == 7 * 24 * 3600 * 1000
    assert set(resolve_config({}).as_strings()) == set(CONFIG_KEYS)


def test_every_default_passes_its_own_validation() -> None:
    for key, spec in CONFIG_KEYS.items():
        assert spec.parse(key, spec.default) == spec.default
