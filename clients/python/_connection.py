"""gRPC channels, one per node address, and the one place where gRPC errors become millpond errors.

Every channel is created with explicit options (message size limits that
match the broker's batch and fetch limits, keepalive, a short reconnect
backoff so a restarted node is used again quickly, no gRPC-level retries: the
clients retry themselves, knowing which errors are safe to retry). Every call
goes through :func:`call`, which always sets a deadline and translates a
failed call exactly once with :func:`millpond.errors.from_rpc_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from millpond.client import _limits
from millpond.errors import from_rpc_error
from millpond.v1 import admin_pb2_grpc, broker_pb2_grpc, groups_pb2_grpc

Response = TypeVar("Response")

#: Options of every client channel. A node's server should accept the same
#: keepalive pings (``grpc.http2.min_recv_ping_interval_without_data_ms`` at
#: most ``keepalive_time_ms``, ``grpc.keepalive_permit_without_calls`` = 1)
#: and the same message sizes.
CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.max_send_message_length", _limits.grpc_send_message_bytes_max),
    ("grpc.max_receive_message_length", _limits.grpc_receive_message_bytes_max),
    ("grpc.keepalive_time_ms", _limits.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _limits.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", _limits.reconnect_backoff_initial_ms),
    ("grpc.min_reconnect_backoff_ms", _limits.reconnect_backoff_initial_ms),
    ("grpc.max_reconnect_backoff_ms", _limits.reconnect_backoff_max_ms),
    ("grpc.enable_retries", 0),
)


async def call(
    method: Callable[..., Awaitable[Response]], request: Any, timeout_s: float
) -> Response:
    """Run one unary RPC with a deadline of ``timeout_s`` seconds.

    Raises the most specific :class:`~millpond.errors.MillpondError` for a
    failed call (``from`` the ``grpc.RpcError``): among them
    :class:`~millpond.errors.Unavailable` when the node cannot be reached and
    :class:`~millpond.errors.RequestTimeout` when the deadline passed, in which
    case the request may or may not have taken effect. Cancelling the caller
    cancels the RPC.
    """
    if timeout_s <= 0:
        raise ValueError(f"an RPC needs a positive deadline, got {timeout_s} s")
    try:
        return await method(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


class Connections:
    """The channels of one client, one per node address, created on first use.

    Create and use it on one event loop (gRPC's asyncio channels belong to the
    loop they were created on). :meth:`close` closes every channel; a closed
    pool creates no new channels (``RuntimeError``).
    """

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._admin: dict[str, admin_pb2_grpc.AdminStub] = {}
        self._broker: dict[str, broker_pb2_grpc.BrokerStub] = {}
        self._groups: dict[str, groups_pb2_grpc.ConsumerGroupsStub] = {}
        self._closed = False

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._closed:
                raise RuntimeError("the client is closed")
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    def admin(self, address: str) -> admin_pb2_grpc.AdminStub:
        """The Admin service of the node at ``address``."""
        stub = self._admin.get(address)
        if stub is None:
            stub = self._admin[address] = admin_pb2_grpc.AdminStub(self._channel(address))  # type: ignore[no-untyped-call]
        return stub

    def broker(self, address: str) -> broker_pb2_grpc.BrokerStub:
        """The Broker service of the node at ``address``."""
        stub = self._broker.get(address)
        if stub is None:
            stub = self._broker[address] = broker_pb2_grpc.BrokerStub(self._channel(address))  # type: ignore[no-untyped-call]
        return stub

    def groups(self, address: str) -> groups_pb2_grpc.ConsumerGroupsStub:
        """The ConsumerGroups service of the node at ``address``."""
        stub = self._groups.get(address)
        if stub is None:
            stub = self._groups[address] = groups_pb2_grpc.ConsumerGroupsStub(self._channel(address))  # type: ignore[no-untyped-call]
        return stub

    @property
    def addresses(self) -> tuple[str, ...]:
        """Addresses with an open channel."""
        return tuple(self._channels)

    async def close(self) -> None:
        """Close every channel, cancelling RPCs still running on them. Idempotent."""
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._admin.clear()
        self._broker.clear()
        self._groups.clear()
        for channel in channels:
            await channel.close()
