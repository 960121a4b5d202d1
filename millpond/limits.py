"""Every limit millpond enforces, in one place, with its unit last in its name.

A limit is a promise to operators and clients: nothing grows without bound.
Components take their defaults from here; :func:`check_relations` verifies at
start-up that limits which depend on each other agree (TigerBeetle style), and
components that accept overrides validate them against the same relations.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- Raft (per group) ------------------------------------------------------
#: Largest single log entry (one record batch) the Raft core accepts.
raft_entry_bytes_max = 4 * MiB
#: Most entries carried by one append message.
raft_msg_entries_max = 4096
#: Most entry payload bytes carried by one append message (a single entry larger
#: than this still travels alone, so it is bounded by ``raft_entry_bytes_max``).
raft_msg_bytes_max = 1 * MiB
#: Append messages sent to one follower and not yet acknowledged.
raft_inflight_msgs_max = 64
#: Entry payload bytes sent to one follower and not yet acknowledged.
raft_inflight_bytes_max = 32 * MiB
#: Bytes the leader holds appended but not committed before refusing proposals.
raft_uncommitted_bytes_max = 64 * MiB
#: Entries accepted in one ``propose`` call.
raft_propose_entries_max = 10_000
#: Read-index requests waiting for a quorum round at one leader.
raft_read_requests_max = 4096
#: Voters plus learners in one group.
raft_group_members_max = 9
#: Ticks between heartbeats from a leader.
raft_heartbeat_ticks = 1
#: Base election timeout; each node draws from [base, 2*base) after every reset.
raft_election_ticks = 10
#: Committed entries handed to the application in one Ready.
raft_ready_committed_entries_max = 8192


# --- LMDB log store and its writer thread (per node) ----------------------------
#: Address space reserved for the environment (the file grows only as pages are used).
store_map_size_bytes = 64 * GiB
#: Runs of equal terms cached per group; older terms are read from LMDB.
store_term_runs_max = 1024
#: Read-only LMDB transactions kept for reuse.
store_spare_read_txns_max = 16
#: Largest group id (``2**64 - 1`` is reserved for the format record).
group_id_max = 2**64 - 2
#: Writes waiting for the writer thread before submitters block.
writer_queue_writes_max = 4096
#: Payload bytes waiting for the writer thread before submitters block.
writer_queue_bytes_max = 64 * MiB
#: Writes committed in one transaction (one fsync).
writer_batch_writes_max = 1024
#: Payload bytes committed in one transaction; a single larger write goes alone.
writer_batch_bytes_max = 16 * MiB
#: Compacted-away entries deleted per write transaction (bounds a compaction's cost).
writer_batch_deletes_max = 4096


# --- Record batches (docs/record-format.md) --------------------------------------
#: Largest encoded batch, header included; a batch is one Raft entry, so this must stay
#: <= raft_entry_bytes_max.
batch_bytes_max = 2 * MiB
#: Most records in one batch (bounds the per-batch Python work of a consumer).
batch_records_max = 65_536
#: Most headers on one record.
record_headers_max = 64
#: Longest header key, in UTF-8 bytes.
header_key_bytes_max = 256
#: Latest timestamp a record may carry (ms since the Unix epoch; the earliest is 0).
timestamp_ms_max = 2**63 - 1

# --- Fetch ------------------------------------------------------------------------
#: Bytes a fetch returns when the request does not say (at least one batch is returned).
fetch_bytes_default = 1 * MiB
#: Most bytes a fetch returns (beyond one batch).
fetch_bytes_max = 16 * MiB
#: Longest a fetch waits for data to arrive.
fetch_wait_ms_max = 30_000

# --- gRPC (both ends) -----------------------------------------------------------
#: Largest gRPC message either end accepts (a produce of one batch_bytes_max batch, a fetch).
grpc_message_bytes_max = 64 * MiB
#: Keepalive ping interval on idle connections, and how long to wait for the answer.
grpc_keepalive_ms = 10_000
grpc_keepalive_timeout_ms = 5_000

# --- Node-to-node Raft transport ------------------------------------------------
#: Raft messages waiting for one peer before new ones are dropped.
raft_outbox_messages_max = 65_536
#: Longest wait for one batch to be accepted by a peer's stream; a stalled stream is then torn down
#: and reopened (a paused or black-holed peer must not hold the sender forever).
raft_rpc_timeout_ms = 2_000
#: Pause before reopening a broken stream to a peer, doubling up to the maximum; messages for the
#: peer are dropped meanwhile (Raft retries).
raft_reconnect_backoff_ms = 50
raft_reconnect_backoff_ms_max = 1_000
#: Milliseconds per Raft tick (election timeout = raft_election_ticks ticks).
raft_tick_ms = 100


def check_relations() -> None:
    """Raise ``ValueError`` if the limits above contradict each other."""
    problems: list[str] = []
    if raft_msg_bytes_max > raft_inflight_bytes_max:
        problems.append("raft_msg_bytes_max must be <= raft_inflight_bytes_max")
    if raft_entry_bytes_max > raft_uncommitted_bytes_max:
        problems.append("raft_entry_bytes_max must be <= raft_uncommitted_bytes_max")
    if raft_heartbeat_ticks >= raft_election_ticks:
        problems.append("raft_heartbeat_ticks must be < raft_election_ticks")
    if raft_msg_entries_max < 1 or raft_inflight_msgs_max < 1:
        problems.append("message and in-flight counts must be >= 1")
    if batch_bytes_max > raft_entry_bytes_max:
        problems.append("batch_bytes_max must be <= raft_entry_bytes_max")
    if grpc_message_bytes_max < fetch_bytes_max + batch_bytes_max:
        problems.append("grpc_message_bytes_max must be >= fetch_bytes_max + batch_bytes_max")
    if grpc_message_bytes_max < 2 * batch_bytes_max:
        problems.append("grpc_message_bytes_max must be >= 2 * batch_bytes_max")
    if writer_batch_writes_max > writer_queue_writes_max:
        problems.append("writer_batch_writes_max must be <= writer_queue_writes_max")
    if writer_batch_bytes_max > writer_queue_bytes_max:
        problems.append("writer_batch_bytes_max must be <= writer_queue_bytes_max")
    if writer_batch_bytes_max < raft_msg_bytes_max:
        problems.append("writer_batch_bytes_max must be >= raft_msg_bytes_max")
    if problems:
        raise ValueError("; ".join(problems))


check_relations()
