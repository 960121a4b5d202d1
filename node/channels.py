"""gRPC channel and server options shared by every millpond connection.

Both ends set the same message-size limits and keepalive settings (gRPC
requires them to agree, or the server closes connections with GOAWAY);
``grpc.so_reuseport=0`` makes a port clash fail loudly instead of two servers
sharing a port; short reconnect backoffs let a restarted peer be reached
within a second rather than after gRPC's default of up to two minutes.
"""

from __future__ import annotations

from millpond import limits


def _common() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
        ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
        ("grpc.keepalive_time_ms", limits.grpc_keepalive_ms),
        ("grpc.keepalive_timeout_ms", limits.grpc_keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options() -> list[tuple[str, int]]:
    """Options for every client channel (node-to-node and clients)."""
    return [
        *_common(),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def server_options() -> list[tuple[str, int]]:
    """Options for the node's gRPC server."""
    return [
        *_common(),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", limits.grpc_keepalive_ms // 2),
    ]
