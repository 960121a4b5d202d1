"""Configuration is validated when built: acks, bootstrap lists, ranges and their relations."""

from __future__ import annotations

import pytest

from millpond.client import ConsumerConfig, ProducerConfig, parse_acks, parse_bootstrap
from millpond.v1 import broker_pb2


@pytest.mark.parametrize(("given", "wire"), [
    (0, broker_pb2.ACKS_NONE), ("0", broker_pb2.ACKS_NONE), (1, broker_pb2.ACKS_LEADER),
    ("1", broker_pb2.ACKS_LEADER), ("all", broker_pb2.ACKS_ALL), ("ALL", broker_pb2.ACKS_ALL),
    (-1, broker_pb2.ACKS_ALL),
])
def test_acks_map_to_the_wire_enum(given: int | str, wire: int) -> None:
    assert parse_acks(given) == wire


@pytest.mark.parametrize("given", [2, "some", "", 3])
def test_other_acks_are_refused(given: int | str) -> None:
    with pytest.raises(ValueError, match="acks"):
        parse_acks(given)


def test_bootstrap_lists_split_deduplicate_and_check_ports() -> None:
    assert parse_bootstrap("a:1, b:2,a:1") == ("a:1", "b:2")
    assert parse_bootstrap(["a:1", "c:3,d:4"]) == ("a:1", "c:3", "d:4")
    assert parse_bootstrap("[::1]:9091") == ("[::1]:9091",)
    for bad in ["", "host", "host:0", "host:70000", ":9091", "host:x"]:
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


def test_producer_config_checks_ranges_and_relations() -> None:
    assert ProducerConfig().acks_value == broker_pb2.ACKS_ALL
    with pytest.raises(ValueError, match="batch_bytes"):
        ProducerConfig(batch_bytes=64)
    with pytest.raises(ValueError, match="batch_bytes"):
        ProducerConfig(batch_bytes=3 * 1024 * 1024)
    with pytest.raises(ValueError, match="delivery_timeout_ms"):
        ProducerConfig(delivery_timeout_ms=1000, request_timeout_ms=5000)
    with pytest.raises(ValueError, match="inflight_batches_max"):
        ProducerConfig(inflight_batches_max=0)
    with pytest.raises(TypeError):
        ProducerConfig(linger_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="acks"):
        ProducerConfig(acks="most")


def test_consumer_config_checks_the_reset_policy() -> None:
    assert ConsumerConfig(auto_offset_reset="earliest").auto_offset_reset == "earliest"
    with pytest.raises(ValueError, match="auto_offset_reset"):
        ConsumerConfig(auto_offset_reset="smallest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fetch_bytes_max"):
        ConsumerConfig(fetch_bytes_max=0)
