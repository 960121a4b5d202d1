"""Client configuration: one frozen, validated dataclass per kind of client.

Every field has a safe default from :mod:`millpond.client._limits`; a value out
of range raises ``ValueError`` when the configuration is built, not later in
the middle of a send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from millpond import record_batch
from millpond.client import _limits
from millpond.v1 import broker_pb2

OffsetReset = Literal["earliest", "latest", "none"]

_ACKS: dict[str, broker_pb2.Acks] = {
    "0": broker_pb2.ACKS_NONE,
    "1": broker_pb2.ACKS_LEADER,
    "all": broker_pb2.ACKS_ALL,
    "-1": broker_pb2.ACKS_ALL,
}


def parse_acks(acks: int | str) -> broker_pb2.Acks:
    """The wire value (``Acks`` of broker.proto) for ``acks``: ``0``, ``1`` or ``"all"`` (``-1`` too).

    ``0``: the broker answers before appending; the record may be lost without
    an error, and its offset is reported as -1. ``1``: the leader appended it
    (lost if the leader fails before a majority stored it). ``"all"``: a Raft
    majority stored it with fsync. Raises ``ValueError`` for anything else.
    """
    value = _ACKS.get(str(acks).strip().lower())
    if value is None:
        raise ValueError(f"acks must be 0, 1 or 'all', got {acks!r}")
    return value


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_text(name: str, value: str | None, bytes_max: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    if not 0 < len(value.encode()) <= bytes_max:
        raise ValueError(f"{name} must be 1-{bytes_max} UTF-8 bytes, got {len(value.encode())}")


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Settings every client shares.

    ``request_timeout_ms``: the deadline of one RPC (a Fetch adds its wait).
    ``retry_backoff_ms`` / ``retry_backoff_ms_max``: first and longest delay
    between retries of a retriable error; the delay doubles per attempt, with jitter.
    """

    request_timeout_ms: int = _limits.request_timeout_ms_default
    retry_backoff_ms: int = _limits.retry_backoff_ms_default
    retry_backoff_ms_max: int = _limits.retry_backoff_ms_max_default

    def __post_init__(self) -> None:
        _check_range("request_timeout_ms", self.request_timeout_ms, 1, _limits.request_timeout_ms_max)
        _check_range("retry_backoff_ms", self.retry_backoff_ms, 0, 60_000)
        _check_range("retry_backoff_ms_max", self.retry_backoff_ms_max, self.retry_backoff_ms, 600_000)


@dataclass(frozen=True, kw_only=True)
class ProducerConfig(ClientConfig):
    """Producer settings.

    ``acks``: ``0``, ``1`` or ``"all"`` (see :func:`parse_acks`).
    ``linger_ms``: how long a batch waits for more records before it may be
    sent; while every in-flight slot of its partition is taken, a batch keeps
    growing (up to ``batch_bytes``) even after its linger.
    ``batch_bytes``: a batch (64-byte header included) is closed before a
    record would take it past this; a single larger record travels alone, up
    to ``record_batch.batch_bytes_max``.
    ``inflight_batches_max``: Produce RPCs in flight per partition. Batches of
    one partition are sent in order; with more than one in flight, a batch that
    fails with a retriable error and is retried can land after a later batch
    that succeeded (set 1 for strict order under retries).
    ``delivery_timeout_ms``: from ``send`` until the record is acknowledged or
    failed, retries included; at least ``linger_ms + request_timeout_ms``.
    ``buffer_bytes``: record bytes not yet acknowledged before ``send`` waits.
    ``block_ms_max``: how long ``send`` may wait for buffer space.
    ``topic_wait_ms_max``: how long ``send`` waits for an unknown topic to
    appear in the cluster's metadata before it raises ``UnknownTopic``.
    ``metadata_max_age_ms``: metadata older than this is refreshed in the
    background, so partitions added to a topic are used from then on.
    """

    acks: int | str = "all"
    linger_ms: int = _limits.linger_ms_default
    batch_bytes: int = _limits.batch_bytes_default
    inflight_batches_max: int = _limits.inflight_batches_max_default
    delivery_timeout_ms: int = _limits.delivery_timeout_ms_default
    buffer_bytes: int = _limits.buffer_bytes_default
    block_ms_max: int = _limits.block_ms_max_default
    topic_wait_ms_max: int = _limits.topic_wait_ms_max_default
    metadata_max_age_ms: int = _limits.metadata_max_age_ms_default

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_acks(self.acks)
        _check_range("linger_ms", self.linger_ms, 0, _limits.linger_ms_max)
        _check_range("batch_bytes", self.batch_bytes, record_batch.BATCH_HEADER_BYTES + 1,
                     record_batch.batch_bytes_max)
        _check_range("inflight_batches_max", self.inflight_batches_max, 1, _limits.inflight_batches_max)
        _check_range("delivery_timeout_ms", self.delivery_timeout_ms,
                     self.linger_ms + self.request_timeout_ms, 24 * 3600 * 1000)
        _check_range("buffer_bytes", self.buffer_bytes, record_batch.batch_bytes_max, 2**40)
        _check_range("block_ms_max", self.block_ms_max, 0, 3600 * 1000)
        _check_range("topic_wait_ms_max", self.topic_wait_ms_max, 0, 3600 * 1000)
        _check_range("metadata_max_age_ms", self.metadata_max_age_ms, 100, 24 * 3600 * 1000)

    @property
    def acks_value(self) -> broker_pb2.Acks:
        """``acks`` as the wire enum."""
        return parse_acks(self.acks)


@dataclass(frozen=True, kw_only=True)
class ConsumerConfig(ClientConfig):
    """Consumer settings.

    ``auto_offset_reset``: where to start when a partition has no position or
    its position left the log: ``"earliest"`` (the log start offset),
    ``"latest"`` (the high watermark: only new records), or ``"none"`` (raise
    :class:`~millpond.errors.OffsetOutOfRange` from ``poll``).
    ``fetch_bytes_max``: soft cap per Fetch (at least one whole batch is returned).
    ``fetch_wait_ms_max``: how long the broker may hold a Fetch waiting for data.

    Consumer groups (:meth:`~millpond.client.AsyncConsumer.subscribe`):
    ``group_id``: the group to join (also where :meth:`~millpond.client.AsyncConsumer.commit`
    commits). ``group_instance_id``: a stable name of this consumer process
    (static membership): a restart with the same id takes back the same
    partitions without a rebalance, if it returns within the session timeout.
    ``session_timeout_ms``: without a successful heartbeat for this long the
    group removes the member (and the member, on its side, stops consuming its
    partitions: another member may own them by then). ``rebalance_timeout_ms``:
    how long the member may take to release partitions (``None``: the
    server's default); a consumer releases partitions during :meth:`poll`, so a
    consumer that does not poll for longer is removed. ``server_assignor``:
    ``"uniform"`` or ``"range"`` (``None``: no preference). The heartbeat
    interval comes from the server. ``enable_auto_commit``: commit the
    positions (records returned by ``poll``) every ``auto_commit_interval_ms``
    during ``poll``, when partitions are revoked, and on close. A poll's records
    are counted as processed when the next ``poll`` starts: at least once
    provided they are processed before that.
    """

    auto_offset_reset: OffsetReset = "latest"
    fetch_bytes_max: int = _limits.fetch_bytes_max_default
    fetch_wait_ms_max: int = _limits.fetch_wait_ms_max_default
    group_id: str | None = None
    group_instance_id: str | None = None
    session_timeout_ms: int = _limits.session_timeout_ms_default
    rebalance_timeout_ms: int | None = None
    server_assignor: str | None = None
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = _limits.auto_commit_interval_ms_default

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(
                f"auto_offset_reset must be 'earliest', 'latest' or 'none', got {self.auto_offset_reset!r}"
            )
        _check_range("fetch_bytes_max", self.fetch_bytes_max, 1, _limits.fetch_bytes_max)
        _check_range("fetch_wait_ms_max", self.fetch_wait_ms_max, 0, _limits.fetch_wait_ms_max)
        _check_text("group_id", self.group_id, _limits.group_id_bytes_max)
        _check_text("group_instance_id", self.group_instance_id, _limits.group_instance_id_bytes_max)
        _check_range("session_timeout_ms", self.session_timeout_ms, _limits.session_timeout_ms_min,
                     _limits.session_timeout_ms_max)
        if self.rebalance_timeout_ms is not None:
            _check_range("rebalance_timeout_ms", self.rebalance_timeout_ms, 1,
                         _limits.rebalance_timeout_ms_max)
        if self.server_assignor is not None and self.server_assignor not in ("uniform", "range"):
            raise ValueError(f"server_assignor must be 'uniform', 'range' or None, "
                             f"got {self.server_assignor!r}")
        if not isinstance(self.enable_auto_commit, bool):
            raise TypeError(f"enable_auto_commit must be a bool, "
                            f"got {type(self.enable_auto_commit).__name__}")
        _check_range("auto_commit_interval_ms", self.auto_commit_interval_ms, 1,
                     _limits.auto_commit_interval_ms_max)


def parse_bootstrap(bootstrap: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Split ``"host:port,host:port"`` (or a list of such strings) into addresses.

    Raises ``ValueError`` if the list is empty, too long, or an entry is not
    ``host:port`` with a port in 1..65535.
    """
    parts = [bootstrap] if isinstance(bootstrap, str) else list(bootstrap)
    addresses: list[str] = []
    for part in parts:
        for address in part.split(","):
            address = address.strip()
            if not address:
                continue
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap address must be host:port, got {address!r}")
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise ValueError("bootstrap needs at least one host:port")
    if len(addresses) > _limits.bootstrap_addresses_max:
        raise ValueError(f"at most {_limits.bootstrap_addresses_max} bootstrap addresses")
    return tuple(addresses)
