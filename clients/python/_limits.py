"""Defaults and limits of the Python client, in one place, each with its unit last.

These are client-side settings; the limits both ends must agree on (message
sizes, keepalive, fetch caps) are taken from :mod:`millpond.limits`.
:func:`check_relations` runs at import and verifies that the limits which
depend on each other agree; the configuration classes
(:mod:`millpond.client._config`) check user overrides against the same bounds.
"""

from __future__ import annotations

from typing import Final

from millpond import limits, record_batch

KiB: Final = 1024
MiB: Final = 1024 * KiB

# --- gRPC channels (both ends agree: the values come from millpond.limits) ----------
#: Largest gRPC message the client sends or accepts: a Produce carries one batch
#: of at most ``batch_bytes_max``; a Fetch returns up to its ``max_bytes`` and
#: always at least one whole batch, however large.
grpc_send_message_bytes_max: Final = limits.grpc_message_bytes_max
grpc_receive_message_bytes_max: Final = limits.grpc_message_bytes_max
#: Ping a connection this often to detect a dead peer (the node's server
#: accepts pings at this interval).
keepalive_time_ms: Final = limits.grpc_keepalive_ms
#: Declare the connection dead when a ping is not answered within this.
keepalive_timeout_ms: Final = limits.grpc_keepalive_timeout_ms
#: Reconnect backoff of a channel whose node went away: short, so that a
#: restarted node is used again within seconds (gRPC's default reaches 120 s).
reconnect_backoff_initial_ms: Final = 100
reconnect_backoff_max_ms: Final = 1_000

# --- every client ----------------------------------------------------------------
#: Deadline of one RPC (a Fetch adds its ``max_wait_ms``).
request_timeout_ms_default: Final = 10_000
request_timeout_ms_max: Final = 600_000
#: First retry delay after a retriable error; doubles per attempt, with jitter.
retry_backoff_ms_default: Final = 50
#: Longest retry delay.
retry_backoff_ms_max_default: Final = 2_000
#: Most addresses in a bootstrap list.
bootstrap_addresses_max: Final = 64

# --- producer ------------------------------------------------------------------------
#: How long a batch waits for more records before it may be sent.
linger_ms_default: Final = 5
linger_ms_max: Final = 60_000
#: Target size of a batch, header included (a single larger record still goes
#: alone, up to ``record_batch.batch_bytes_max``).
batch_bytes_default: Final = 512 * KiB
#: Produce RPCs in flight per partition.
inflight_batches_max_default: Final = 5
inflight_batches_max: Final = 64
#: Time from ``send`` until a record is acknowledged or failed, retries included.
delivery_timeout_ms_default: Final = 120_000
#: Record bytes buffered (not yet acknowledged) before ``send`` waits.
buffer_bytes_default: Final = 32 * MiB
#: How long ``send`` may wait for buffer space.
block_ms_max_default: Final = 10_000
#: Refresh metadata in the background when it is older than this (partitions
#: added to a topic are used from then on).
metadata_max_age_ms_default: Final = 60_000
#: How long ``send`` waits for a topic it does not know to appear in metadata
#: (a topic just created reaches every node within moments).
topic_wait_ms_max_default: Final = 2_000

# --- consumer ------------------------------------------------------------------------
#: Soft cap on the bytes of one Fetch (at least one batch is returned).
fetch_bytes_max_default: Final = 1 * MiB
fetch_bytes_max: Final = limits.fetch_bytes_max
#: How long a Fetch waits at the broker for data (the broker caps it too).
fetch_wait_ms_max_default: Final = 500
fetch_wait_ms_max: Final = limits.fetch_wait_ms_max
#: Records returned by one ``poll`` unless asked otherwise.
poll_records_max_default: Final = 500

# --- consumer groups ---------------------------------------------------------------
#: A member that sends no heartbeat for this long is removed from its group (and, on its side,
#: stops consuming its partitions); the server bounds it (millpond.limits.group_session_timeout_ms_*).
session_timeout_ms_default: Final = 45_000
session_timeout_ms_min: Final = limits.group_session_timeout_ms_min
session_timeout_ms_max: Final = limits.group_session_timeout_ms_max
#: Longest rebalance timeout a member may ask for.
rebalance_timeout_ms_max: Final = limits.group_rebalance_timeout_ms_max
#: How often a consumer with ``enable_auto_commit`` commits its positions (during ``poll``).
auto_commit_interval_ms_default: Final = 5_000
auto_commit_interval_ms_max: Final = 3_600_000
#: Longest group id and instance id, in UTF-8 bytes.
group_id_bytes_max: Final = limits.group_id_bytes_max
group_instance_id_bytes_max: Final = limits.group_member_id_bytes_max
#: Pause before rejoining after the group fenced or forgot this member (then backoff on errors).
rejoin_backoff_ms: Final = 50


def check_relations() -> None:
    """Raise ``ValueError`` if the limits above contradict each other."""
    problems: list[str] = []
    if grpc_send_message_bytes_max < record_batch.batch_bytes_max:
        problems.append("grpc_send_message_bytes_max must hold a batch of batch_bytes_max")
    if grpc_receive_message_bytes_max < fetch_bytes_max + record_batch.batch_bytes_max:
        problems.append("grpc_receive_message_bytes_max must hold fetch_bytes_max plus one whole batch")
    if not record_batch.BATCH_HEADER_BYTES < batch_bytes_default <= record_batch.batch_bytes_max:
        problems.append("batch_bytes_default must lie in (BATCH_HEADER_BYTES, batch_bytes_max]")
    if fetch_bytes_max_default > fetch_bytes_max or fetch_wait_ms_max_default > fetch_wait_ms_max:
        problems.append("fetch defaults must not exceed their maxima")
    if inflight_batches_max_default > inflight_batches_max:
        problems.append("inflight_batches_max_default must be <= inflight_batches_max")
    if retry_backoff_ms_default > retry_backoff_ms_max_default:
        problems.append("retry_backoff_ms_default must be <= retry_backoff_ms_max_default")
    if not session_timeout_ms_min <= session_timeout_ms_default <= session_timeout_ms_max:
        problems.append("session_timeout_ms_default must lie within the server's session timeout bounds")
    if keepalive_timeout_ms >= keepalive_time_ms:
        problems.append("keepalive_timeout_ms must be < keepalive_time_ms")
    if problems:
        raise ValueError("; ".join(problems))


check_relations()
