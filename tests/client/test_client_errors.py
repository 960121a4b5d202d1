"""gRPC failures become the most specific millpond error, once, at the client's one call site.

A real grpc.aio server on 127.0.0.1:0 aborts with a given status code and
trailing metadata; the client's ``call`` must raise the class, fields and
cause that ``millpond.errors`` promises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest

from millpond import errors
from millpond.client._connection import CHANNEL_OPTIONS, Connections, call
from millpond.v1 import admin_pb2, admin_pb2_grpc


class _Aborting(admin_pb2_grpc.AdminServicer):
    """ListTopics aborts with the configured status and trailing metadata; DescribeTopic hangs."""

    def __init__(self) -> None:
        self.status = grpc.StatusCode.OK
        self.details = ""
        self.metadata: tuple[tuple[str, str], ...] = ()

    async def ListTopics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(self.status, self.details, trailing_metadata=self.metadata)

    async def DescribeTopic(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.Event().wait()  # never answers: the caller's deadline must fire


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[_Aborting, str]]:
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    servicer = _Aborting()
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def _list_topics_error(status: grpc.StatusCode, details: str,
                             metadata: tuple[tuple[str, str], ...]) -> errors.MillpondError:
    async with _server() as (servicer, address):
        servicer.status, servicer.details, servicer.metadata = status, details, metadata
        connections = Connections()
        try:
            with pytest.raises(errors.MillpondError) as caught:
                await call(connections.admin(address).ListTopics, admin_pb2.ListTopicsRequest(), 5)
        finally:
            await connections.close()
    return caught.value


CASES = [
    # (status, metadata, expected class)
    (grpc.StatusCode.FAILED_PRECONDITION, (("millpond-error-reason", "NOT_LEADER"),
                                           ("millpond-leader", "2@127.0.0.1:9092")), errors.NotLeader),
    (grpc.StatusCode.FAILED_PRECONDITION, (("millpond-error-reason", "NOT_CONTROLLER"),),
     errors.NotController),
    (grpc.StatusCode.NOT_FOUND, (("millpond-error-reason", "UNKNOWN_TOPIC"),), errors.UnknownTopic),
    (grpc.StatusCode.NOT_FOUND, (("millpond-error-reason", "UNKNOWN_PARTITION"),), errors.UnknownPartition),
    (grpc.StatusCode.ALREADY_EXISTS, (("millpond-error-reason", "TOPIC_EXISTS"),), errors.TopicExists),
    (grpc.StatusCode.INVALID_ARGUMENT, (("millpond-error-reason", "INVALID_TOPIC_NAME"),),
     errors.InvalidTopicName),
    (grpc.StatusCode.INVALID_ARGUMENT, (("millpond-error-reason", "PARTITION_COUNT_DECREASE"),),
     errors.PartitionCountDecrease),
    (grpc.StatusCode.INVALID_ARGUMENT, (("millpond-error-reason", "BATCH_TOO_LARGE"),), errors.BatchTooLarge),
    (grpc.StatusCode.FAILED_PRECONDITION, (("millpond-error-reason", "REPLICATION_FACTOR_TOO_LARGE"),),
     errors.ReplicationFactorTooLarge),
    (grpc.StatusCode.OUT_OF_RANGE, (("millpond-error-reason", "OFFSET_OUT_OF_RANGE"),
                                    ("millpond-log-start-offset", "5"), ("millpond-high-watermark", "9")),
     errors.OffsetOutOfRange),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, (("millpond-error-reason", "RESOURCE_EXHAUSTED"),
                                          ("millpond-retry-after-ms", "250")), errors.ResourceExhausted),
    # Without millpond metadata: the status code decides.
    (grpc.StatusCode.UNAVAILABLE, (), errors.Unavailable),
    (grpc.StatusCode.INVALID_ARGUMENT, (), errors.InvalidRequest),
    (grpc.StatusCode.INTERNAL, (), errors.InternalError),
    (grpc.StatusCode.UNIMPLEMENTED, (), errors.InternalError),
]


@pytest.mark.parametrize(("status", "metadata", "expected"), CASES,
                         ids=[f"{c[0].name}-{c[2].__name__}" for c in CASES])
def test_a_status_with_trailing_metadata_becomes_the_most_specific_error(
    status: grpc.StatusCode, metadata: tuple[tuple[str, str], ...], expected: type[errors.MillpondError]
) -> None:
    async def test() -> None:
        error = await _list_topics_error(status, "it went wrong", metadata)
        assert type(error) is expected
        assert error.message == "it went wrong"
        assert isinstance(error.__cause__, grpc.RpcError)  # translated once, from the gRPC error
        assert error.__cause__.code() == status

    _run(test)


def test_error_fields_come_from_trailing_metadata() -> None:
    async def test() -> None:
        not_leader = await _list_topics_error(grpc.StatusCode.FAILED_PRECONDITION, "moved", CASES[0][1])
        assert isinstance(not_leader, errors.NotLeader)
        assert (not_leader.leader_id, not_leader.leader_address) == (2, "127.0.0.1:9092")
        assert not_leader.retriable
        out_of_range = await _list_topics_error(grpc.StatusCode.OUT_OF_RANGE, "gone", CASES[9][1])
        assert isinstance(out_of_range, errors.OffsetOutOfRange)
        assert (out_of_range.log_start_offset, out_of_range.high_watermark) == (5, 9)
        exhausted = await _list_topics_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", CASES[10][1])
        assert isinstance(exhausted, errors.ResourceExhausted) and exhausted.retry_after_ms == 250

    _run(test)


def test_a_server_side_error_round_trips_through_to_status() -> None:
    async def test() -> None:
        original = errors.NotLeader("not me", 3, "10.0.0.3:9093")
        status, message, metadata = errors.to_status(original)
        error = await _list_topics_error(status, message, tuple(metadata))
        assert isinstance(error, errors.NotLeader)
        assert (error.leader_id, error.leader_address, error.code) == (3, "10.0.0.3:9093", original.code)

    _run(test)


def test_a_deadline_becomes_request_timeout() -> None:
    async def test() -> None:
        async with _server() as (_, address):
            connections = Connections()
            try:
                with pytest.raises(errors.RequestTimeout) as caught:
                    await call(connections.admin(address).DescribeTopic,
                               admin_pb2.DescribeTopicRequest(name="t"), 0.2)
                assert caught.value.retriable
            finally:
                await connections.close()

    _run(test)


def test_nothing_listening_becomes_unavailable() -> None:
    async def test() -> None:
        async with _server() as (_, address):
            pass  # the server is gone: its port refuses connections
        connections = Connections()
        try:
            with pytest.raises(errors.Unavailable):
                await call(connections.admin(address).ListTopics, admin_pb2.ListTopicsRequest(), 5)
        finally:
            await connections.close()

    _run(test)


def test_every_call_needs_a_positive_deadline() -> None:
    async def test() -> None:
        connections = Connections()
        try:
            with pytest.raises(ValueError, match="deadline"):
                await call(connections.admin("127.0.0.1:1").ListTopics, admin_pb2.ListTopicsRequest(), 0)
        finally:
            await connections.close()

    _run(test)


def test_channels_set_message_limits_keepalive_and_no_grpc_retries() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.max_send_message_length"] > 2 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] >= 32 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] > options["grpc.keepalive_timeout_ms"] > 0
    assert options["grpc.enable_retries"] == 0
    assert options["grpc.max_reconnect_backoff_ms"] <= 5000
