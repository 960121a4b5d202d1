"""Helpers for tests that run real node processes."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from millpond.client import Admin, ClientConfig
from millpond.testing.cluster import LocalCluster
from millpond.testing.waiting import wait_until
from millpond.v1 import broker_pb2 as pb
from millpond.v1 import broker_pb2_grpc as pb_grpc

#: Fast failure detection for tests: 50 ms ticks (election timeout 0.5-1 s),
#: fencing after 1.5 s of silence, ISR lag 1.5 s.
FAST = ["--tick-ms", "50", "--heartbeat-interval-ms", "200", "--session-timeout-ms", "1500",
        "--replica-lag-ms-max", "1500"]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout_s``."""
    return wait_until(condition, timeout_s, what)


def admin(cluster: LocalCluster) -> Admin:
    return Admin(cluster.bootstrap, ClientConfig(request_timeout_ms=5000))


def broker_stub(address: str) -> tuple[grpc.Channel, pb_grpc.BrokerStub]:
    """A plain blocking stub, for requests the client library would never send."""
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.BrokerStub(channel)


def produce_raw(stub: pb_grpc.BrokerStub, topic: str, partition: int, batch: bytes,
                acks: int = pb.ACKS_ALL, timeout_s: float = 5.0) -> pb.ProduceResponse:
    return stub.Produce(pb.ProduceRequest(topic=topic, partition=partition, acks=acks, batch=batch),
                        timeout=timeout_s)
