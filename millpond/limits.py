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




# --- chaos fault proxy ---
#: Proxies one fault-proxy server holds.
proxy_proxies_max = 1024
#: Toxics on one proxy (both streams together).
proxy_toxics_max = 32
#: Client connections one proxy holds open at once; more are accepted and closed at once.
proxy_connections_max = 1024
#: Longest proxy or toxic name, in UTF-8 bytes.
proxy_name_bytes_max = 256
#: Largest toxic attribute value (ms, µs, bytes or KB/s, by attribute).
proxy_toxic_attribute_max = 2**31 - 1
#: Bytes read from a socket at once: one chunk through a toxic chain (Go's io.Copy buffer).
proxy_read_chunk_bytes = 32 * KiB
#: Bytes queued between two stages of one direction of one connection before the sender waits.
proxy_channel_bytes_max = 1 * MiB
#: Connections the kernel queues for a proxy's (or the API's) listener before they are accepted.
proxy_listen_backlog = 128
#: Longest wait for the upstream to accept a proxied connection.
proxy_upstream_connect_ms_max = 10_000
#: Longest a closing proxied socket may take to send what is buffered for it before it is aborted.
proxy_close_ms_max = 10_000
#: Largest HTTP request body the API reads.
proxy_request_bytes_max = 1 * MiB
#: Largest HTTP request line plus headers the API reads.
proxy_request_head_bytes_max = 16 * KiB
#: Most header lines in one HTTP request.
proxy_request_headers_max = 100
#: HTTP connections the API serves at once; more are closed at once.
proxy_api_connections_max = 128
#: Longest the API waits for a request to arrive in full once it started (Go's ReadTimeout).
proxy_api_read_ms_max = 15_000
#: Longest an idle keep-alive API connection stays open (Go's IdleTimeout).
proxy_api_idle_ms_max = 60_000

# --- consumer groups ---
#: Consumer groups in the cluster (each lives in the metadata image of every node).
groups_max = 10_000
#: Members of one consumer group (static members that left temporarily count until they expire).
group_members_max = 1024
#: Longest group id, in UTF-8 bytes.
group_id_bytes_max = 255
#: Longest member id or group instance id, in UTF-8 bytes.
group_member_id_bytes_max = 255
#: Topic names one subscription lists.
group_subscribed_topics_max = 1024
#: Longest subscription regular expression, in UTF-8 bytes (it runs on the controller for every topic).
group_subscription_regex_bytes_max = 255
#: Longest metadata string stored with a committed offset, in UTF-8 bytes.
group_offset_metadata_bytes_max = 4096
#: Partitions one offset commit, fetch or reset names.
group_offset_request_partitions_max = 65_536
#: Bounds of a member's session timeout (no heartbeat for this long: the member is removed).
group_session_timeout_ms_min = 1_000
group_session_timeout_ms_max = 300_000
#: Longest rebalance timeout (a member asked to release partitions is removed if it takes longer).
group_rebalance_timeout_ms_max = 1_800_000

# --- retention and compaction ---
#: How often each node's log cleaner looks at the partitions it leads (retention, then compaction).
cleaner_interval_ms = 500
#: Batches one ADVANCE_LOG_START record may delete (more wait for the next round of the cleaner).
retention_step_batches_max = 4096
#: Batches one COMPACT record rewrites: bounds what every replica does when it applies one.
compaction_step_batches_max = 64
#: Bytes of the batches one COMPACT record rewrites (a single larger batch goes alone).
compaction_step_bytes_max = 8 * MiB
#: Records in the batches one COMPACT record covers, which bounds its drop ranges (one batch of
#: batch_records_max records always fits).
compaction_step_records_max = 65_536
#: Bytes of batches the cleaner reads from the store per round, over all partitions it leads.
cleaner_read_bytes_max = 16 * MiB
#: Distinct keys one compaction pass indexes (the leader's memory); a pass with more stops earlier
#: and the next one continues from there.
compaction_keys_max = 1_000_000
#: A compaction pass starts once the uncompacted part of the log holds at least this share of its
#: bytes (or a kept tombstone has expired): bounds rewrite work per byte produced (Kafka's
#: min.cleanable.dirty.ratio) ...
compaction_dirty_percent_min = 50
#: ... or once uncompacted records have waited this long, so a small tail is compacted too (Kafka's
#: max.compaction.lag.ms).
compaction_dirty_wait_ms_max = 10_000


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
    if group_session_timeout_ms_min > group_session_timeout_ms_max:
        problems.append("group_session_timeout_ms_min must be <= group_session_timeout_ms_max")
    if proxy_read_chunk_bytes > proxy_channel_bytes_max:
        problems.append("proxy_read_chunk_bytes must be <= proxy_channel_bytes_max")
    if problems:
        raise ValueError("; ".join(problems))


check_relations()
