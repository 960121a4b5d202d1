"""The asynchronous producer: records in, per-partition batches out, pipelined Produce RPCs.

How a record travels::

    send(topic, value, key, ...)          choose the partition: murmur2(key) % partitions, or the
      │                                   topic's sticky partition for keyless records
      ▼
    Accumulator: open batch of (topic, p) closed when the next record would pass batch_bytes,
      │          or after linger_ms once an in-flight slot is free (until then it keeps growing)
      ▼
    sender: up to inflight_batches_max Produce RPCs per partition, sent in batch order
      │     to the partition's leader (from the metadata cache)
      ├── success: each record's future gets RecordMetadata(topic, partition, offset, timestamp)
      ├── retriable error (NOT_LEADER, UNAVAILABLE, TIMEOUT, RESOURCE_EXHAUSTED, a topic or
      │   partition the leader does not know yet): back to the queue at its place, leader
      │   re-discovered, partition paused for an exponential backoff with jitter
      └── other error, or delivery_timeout_ms passed: the records' futures fail

Delivery is at least once: a Produce that timed out or lost its connection
may have been appended, and its retry appends the records again. Order:
batches of one partition are sent in order and, on success, land in order;
with ``inflight_batches_max > 1`` a batch that is retried can land after a
later batch that succeeded meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from millpond import record_batch
from millpond.client._accumulator import Accumulator, ProducerBatch
from millpond.client._backoff import Backoff
from millpond.client._config import ProducerConfig, parse_bootstrap
from millpond.client._connection import Connections, call
from millpond.client._metadata import MetadataCache
from millpond.client._types import Header, RecordMetadata, TopicPartition
from millpond.errors import (
    BatchTooLarge,
    InternalError,
    InvalidRecordBatch,
    InvalidRequest,
    MillpondError,
    NotLeader,
    RequestTimeout,
    ResourceExhausted,
    Unavailable,
    UnknownPartition,
    UnknownTopic,
)
from millpond.partitioner import StickyPartitioner, partition_for_key
from millpond.v1 import broker_pb2

__all__ = ["AsyncProducer", "ProducerStatistics", "check_record"]

_Batch = ProducerBatch["asyncio.Future[RecordMetadata]"]


@dataclass(frozen=True, slots=True)
class ProducerStatistics:
    """A snapshot of a producer's counters and queues."""

    records_acknowledged: int
    records_failed: int
    batches_sent: int
    """Produce RPCs started, retries included."""
    retries: int
    buffered_bytes: int
    """Record bytes sent to the producer and not yet acknowledged or failed."""
    batches_queued: int
    batches_in_flight: int
    metadata_refreshes: int


def check_record(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """Check one record's fields and return its encoded size in bytes (``record_size_bytes``).

    Raises ``TypeError`` if the key, value or a header value is neither
    ``bytes`` nor ``None``, or a header is not a ``(str, bytes | None)`` pair;
    :class:`~millpond.errors.InvalidRequest` if it has more than
    ``record_headers_max`` headers or a header key longer than
    ``header_key_bytes_max`` UTF-8 bytes; :class:`~millpond.errors.BatchTooLarge`
    if it could not fit a batch of ``batch_bytes_max``.
    """
    if key is not None and not isinstance(key, bytes):
        raise TypeError(f"key must be bytes or None, got {type(key).__name__}")
    if value is not None and not isinstance(value, bytes):
        raise TypeError(f"value must be bytes or None, got {type(value).__name__}")
    if headers:
        if len(headers) > record_batch.record_headers_max:
            raise InvalidRequest(
                f"a record has at most {record_batch.record_headers_max} headers, got {len(headers)}"
            )
        for header in headers:
            if not isinstance(header, tuple) or len(header) != 2:
                raise TypeError(f"a header is a (str, bytes | None) pair, got {header!r}")
            header_key, header_value = header
            if not isinstance(header_key, str):
                raise TypeError(f"a header key must be str, got {type(header_key).__name__}")
            if header_value is not None and not isinstance(header_value, bytes):
                raise TypeError(f"a header value must be bytes or None, got {type(header_value).__name__}")
            if len(header_key.encode()) > record_batch.header_key_bytes_max:
                raise InvalidRequest(
                    f"header key {header_key[:40]!r}... is longer than "
                    f"{record_batch.header_key_bytes_max} UTF-8 bytes"
                )
    size = record_batch.record_size_bytes(key, value, headers)
    if size + record_batch.BATCH_HEADER_BYTES > record_batch.batch_bytes_max:
        raise BatchTooLarge(
            f"a record of {size} bytes does not fit a batch of batch_bytes_max="
            f"{record_batch.batch_bytes_max} bytes"
        )
    return size


class AsyncProducer:
    """Sends records to topics; one instance serves any number of topics and tasks.

    ``bootstrap`` is ``"host:port[,host:port...]"`` or a list of addresses; the
    producer asks them, in order, for the cluster's metadata until one answers.
    Construction does no I/O. Use it on one event loop; ``async with`` closes it.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        config: ProducerConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or ProducerConfig()
        self._acks = self._config.acks_value
        self._connections = Connections()
        self._metadata = MetadataCache(
            parse_bootstrap(bootstrap if isinstance(bootstrap, str) else tuple(bootstrap)),
            self._connections,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        self._backoff = Backoff(self._config.retry_backoff_ms, self._config.retry_backoff_ms_max)
        self._rng = rng or random.Random()
        self._accumulator: Accumulator[asyncio.Future[RecordMetadata]] = Accumulator(
            self._config.batch_bytes, on_close=self._batch_closed
        )
        self._sticky: dict[str, StickyPartitioner] = {}
        self._unfinished: dict[_Batch, asyncio.Future[None]] = {}
        self._in_flight: set[_Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffered_bytes = 0
        self._space_freed = asyncio.Event()
        self._closed = False
        self._stopping = False
        self._broken: BaseException | None = None
        self._records_acknowledged = 0
        self._records_failed = 0
        self._batches_sent = 0
        self._retries = 0

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- sending ------------------------------------------------------------------
    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; return a future that resolves once it is acknowledged.

        ``partition`` defaults to ``murmur2(key) % partitions`` for a keyed
        record (Kafka's partitioner) and to the topic's sticky partition for a
        keyless one. ``timestamp_ms`` defaults to now (create time).

        Returns quickly unless the buffer is full (then it waits up to
        ``block_ms_max``) or the topic is not known yet (then it waits up to
        ``topic_wait_ms_max`` for it to appear in metadata). Raises, with
        nothing queued: ``TypeError`` or :class:`~millpond.errors.InvalidRequest`
        for a malformed record (see :func:`check_record`) or a timestamp outside
        ``[0, 2**63 - 1]``; :class:`~millpond.errors.BatchTooLarge`;
        :class:`~millpond.errors.UnknownTopic` if the topic did not appear
        within ``topic_wait_ms_max``; :class:`~millpond.errors.UnknownPartition` for
        an explicit partition the topic lacks; :class:`~millpond.errors.Unavailable`
        if no node answered for metadata; :class:`~millpond.errors.ResourceExhausted`
        if the buffer stayed full for ``block_ms_max``; ``RuntimeError`` after
        :meth:`close` or after an internal failure of the producer.

        The future resolves to :class:`RecordMetadata` (offset -1 for
        ``acks=0``) or fails with :class:`~millpond.errors.RequestTimeout` when
        ``delivery_timeout_ms`` passed (the record may or may not have been
        appended, even more than once), or with the non-retriable error the
        broker answered (:class:`~millpond.errors.InvalidRecordBatch`,
        :class:`~millpond.errors.BatchTooLarge`, :class:`~millpond.errors.UnknownTopic`
        for a deleted topic, :class:`~millpond.errors.UnknownPartition`,
        :class:`~millpond.errors.InternalError`, ...).
        """
        self._check_usable()
        size = check_record(key, value, headers)
        loop = asyncio.get_running_loop()
        refreshed = self._metadata.refreshed_at_s
        if refreshed is not None and loop.time() - refreshed > self._config.metadata_max_age_ms / 1000:
            self._metadata.refresh_in_background()
        count = self._metadata.partition_count(topic)
        if count is None:
            count = await self._metadata.wait_for_topic(
                topic, self._config.topic_wait_ms_max / 1000, self._backoff, self._rng
            )
        if partition is None:
            partition = partition_for_key(key, count) if key is not None else self._sticky_for(topic, count)
        elif isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < count:
            raise UnknownPartition(f"topic {topic!r} has {count} partitions, no partition {partition!r}")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif not 0 <= timestamp_ms <= record_batch.timestamp_ms_max:
            raise InvalidRequest(f"timestamp_ms must be in [0, 2**63 - 1], got {timestamp_ms}")
        if self._buffered_bytes + size > self._config.buffer_bytes and self._buffered_bytes:
            await self._wait_for_space(size)
            self._check_usable()
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        tp = TopicPartition(topic, partition)
        now = loop.time()
        result = self._accumulator.append(
            tp, record_batch.Record(key, value, tuple(headers), timestamp_ms), size, future,
            now, now + self._config.delivery_timeout_ms / 1000,
        )
        self._buffered_bytes += size
        if result.opened:
            self._unfinished[result.batch] = loop.create_future()
            loop.call_at(now + self._config.linger_ms / 1000, self._linger_passed, result.batch)
        if result.closed:
            self._dispatch(tp)
            await asyncio.sleep(0)  # a batch is ready: let the sender run even if the caller never yields
        return future

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise RuntimeError(f"the producer failed: {self._broken!r}") from self._broken
        if self._closed:
            raise RuntimeError("the producer is closed")

    def _sticky_for(self, topic: str, count: int) -> int:
        sticky = self._sticky.get(topic)
        if sticky is None or count < sticky.partitions:  # a topic re-created with fewer partitions
            sticky = self._sticky[topic] = StickyPartitioner(count, start=self._rng.randrange(count))
        elif count > sticky.partitions:
            sticky.set_partitions(count)
        return sticky.partition()

    def _batch_closed(self, batch: _Batch) -> None:
        sticky = self._sticky.get(batch.tp.topic)
        if sticky is not None and batch.tp.partition < sticky.partitions:
            sticky.batch_completed(batch.tp.partition)

    async def _wait_for_space(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.block_ms_max / 1000
        while self._buffered_bytes + size > self._config.buffer_bytes and self._buffered_bytes:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ResourceExhausted(
                    f"producer buffer full ({self._buffered_bytes} of {self._config.buffer_bytes} bytes) "
                    f"for block_ms_max={self._config.block_ms_max}",
                    retry_after_ms=self._config.retry_backoff_ms_max,
                )
            self._space_freed.clear()
            try:
                await asyncio.wait_for(self._space_freed.wait(), remaining)
            except TimeoutError:
                continue

    # --- the sender -----------------------------------------------------------------
    def _linger_passed(self, batch: _Batch) -> None:
        batch.sendable = True
        self._dispatch(batch.tp)

    def _dispatch(self, tp: TopicPartition) -> None:
        """Start Produce RPCs for ``tp`` while it has sendable batches and free in-flight slots."""
        if self._stopping:
            return
        queue = self._accumulator.queue(tp)
        if queue.waiting_metadata:
            return
        now = asyncio.get_running_loop().time()
        if queue.muted_until_s > now:
            return
        while queue.in_flight < self._config.inflight_batches_max:
            batch = self._accumulator.next_batch(tp)
            if batch is None:
                return
            if now >= batch.deadline_s:
                self._fail(batch, self._delivery_timeout(batch))
                continue
            address = self._metadata.leader_address(tp)
            if address is None:
                self._accumulator.requeue(batch)
                queue.waiting_metadata = True
                self._spawn(self._rediscover(tp))
                return
            queue.in_flight += 1
            self._in_flight.add(batch)
            self._spawn(self._produce(batch, address))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A bug in the producer: stop, and make every caller see it.
        self._broken = task.exception()
        self._stopping = True
        error = InternalError(f"the producer failed: {self._broken!r}")
        error.__cause__ = self._broken
        self._fail_everything(error)

    async def _produce(self, batch: _Batch, address: str) -> None:
        loop = asyncio.get_running_loop()
        queue = self._accumulator.queue(batch.tp)
        finished = False
        try:
            if batch.encoded is None:
                try:
                    batch.encoded = record_batch.encode_batch(batch.records)
                except (record_batch.InvalidRecords, TypeError) as exc:
                    self._fail(batch, InvalidRecordBatch(f"cannot encode the batch: {exc}"))
                    finished = True
                    return
            request = broker_pb2.ProduceRequest(
                topic=batch.tp.topic, partition=batch.tp.partition, acks=self._acks, batch=batch.encoded
            )
            timeout_s = min(self._config.request_timeout_ms / 1000, batch.deadline_s - loop.time())
            self._batches_sent += 1
            try:
                if timeout_s <= 0:
                    raise RequestTimeout("delivery timeout reached before the batch could be sent")
                response = await call(self._connections.broker(address).Produce, request, timeout_s)
            except MillpondError as exc:
                finished = self._failed_attempt(batch, address, exc)
            else:
                self._acknowledge(batch, response.base_offset)
                finished = True
        except asyncio.CancelledError:
            if not finished:
                self._fail(batch, RequestTimeout(
                    "the producer was closed while the batch was being sent: "
                    "its records may or may not have been appended"))
                finished = True
            raise
        finally:
            queue.in_flight -= 1
            self._in_flight.discard(batch)
            if not self._stopping:
                self._dispatch(batch.tp)

    def _failed_attempt(self, batch: _Batch, address: str, error: MillpondError) -> bool:
        """Handle a failed Produce: requeue the batch for a retry, or fail it. True if it failed."""
        batch.attempts += 1
        batch.last_error = error
        tp = batch.tp
        refreshable = isinstance(error, UnknownTopic | UnknownPartition)  # the leader may lag behind
        if not (error.retriable or refreshable):
            self._fail(batch, error)
            return True
        if isinstance(error, NotLeader) and error.leader_address != address:
            self._metadata.note_not_leader(tp, error)
        elif not isinstance(error, ResourceExhausted):
            self._metadata.invalidate(tp)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= batch.deadline_s:
            self._fail(batch, self._delivery_timeout(batch))
            return True
        self._retries += 1
        self._accumulator.requeue(batch)
        queue = self._accumulator.queue(tp)
        delay_s = self._backoff.delay_ms(batch.attempts - 1, self._rng, error) / 1000
        queue.muted_until_s = max(queue.muted_until_s, now + delay_s)
        loop.call_at(queue.muted_until_s, self._dispatch, tp)
        return False

    async def _rediscover(self, tp: TopicPartition) -> None:
        """Refresh metadata (with backoff) until ``tp`` has a leader; fail its batches if it is gone."""
        queue = self._accumulator.queue(tp)
        loop = asyncio.get_running_loop()
        attempt = 0
        try:
            while True:
                error: MillpondError
                try:
                    await self._metadata.refresh()
                except MillpondError as exc:
                    error = exc
                else:
                    count = self._metadata.partition_count(tp.topic)
                    if count is None:
                        self._fail_partition(tp, UnknownTopic(f"unknown topic {tp.topic!r} (deleted?)"))
                        return
                    if tp.partition >= count:
                        self._fail_partition(tp, UnknownPartition(
                            f"topic {tp.topic!r} has {count} partitions, no partition {tp.partition}"))
                        return
                    if self._metadata.leader_address(tp) is not None:
                        return
                    error = Unavailable(f"partition {tp.topic}/{tp.partition} has no leader")
                now = loop.time()
                for batch in self._accumulator.take_all(tp):
                    if now >= batch.deadline_s:
                        batch.last_error = batch.last_error or error
                        self._fail(batch, self._delivery_timeout(batch))
                    else:
                        self._accumulator.requeue(batch)
                if not len(queue):
                    return
                await asyncio.sleep(self._backoff.delay_ms(attempt, self._rng, error) / 1000)
                attempt += 1
        finally:
            queue.waiting_metadata = False
            if not self._stopping:
                self._dispatch(tp)

    # --- completing batches ------------------------------------------------------------
    def _acknowledge(self, batch: _Batch, base_offset: int) -> None:
        topic, partition = batch.tp
        for index, (record, future) in enumerate(zip(batch.records, batch.handles, strict=True)):
            if not future.done():
                offset = base_offset + index if base_offset >= 0 else -1
                future.set_result(RecordMetadata(topic, partition, offset, record.timestamp_ms or 0))
        self._records_acknowledged += len(batch.records)
        self._finish(batch)

    def _fail(self, batch: _Batch, error: MillpondError) -> None:
        for future in batch.handles:
            if not future.done():
                future.set_exception(error)
        self._records_failed += len(batch.records)
        self._finish(batch)

    def _fail_partition(self, tp: TopicPartition, error: MillpondError) -> None:
        for batch in self._accumulator.take_all(tp):
            self._fail(batch, error)

    def _finish(self, batch: _Batch) -> None:
        self._buffered_bytes -= batch.size_bytes - record_batch.BATCH_HEADER_BYTES
        self._space_freed.set()
        done = self._unfinished.pop(batch, None)
        if done is not None and not done.done():
            done.set_result(None)

    def _delivery_timeout(self, batch: _Batch) -> RequestTimeout:
        error = RequestTimeout(
            f"delivery_timeout_ms={self._config.delivery_timeout_ms} passed for "
            f"{len(batch.records)} records to {batch.tp.topic}/{batch.tp.partition} after "
            f"{batch.attempts} attempts (last error: {batch.last_error}); they may or may not have "
            f"been appended"
        )
        error.__cause__ = batch.last_error
        return error

    def _fail_everything(self, error: MillpondError) -> None:
        for queue in self._accumulator.queues():
            for batch in self._accumulator.take_all(queue.tp):
                self._fail(batch, error)
        for batch in list(self._in_flight):
            self._fail(batch, error)

    # --- flush, close, statistics ----------------------------------------------------------
    async def flush(self, timeout_s: float | None = None) -> None:
        """Send every queued record now (ignoring linger) and wait until each is acknowledged or failed.

        Records sent after the call started are not waited for. Does not raise
        for failed records (their futures carry the errors). Raises
        :class:`~millpond.errors.RequestTimeout` if ``timeout_s`` passed first
        (the records keep going; their futures resolve later).
        """
        pending = list(self._unfinished.values())
        for queue in self._accumulator.queues():
            self._accumulator.mark_sendable(queue.tp)
            self._dispatch(queue.tp)
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=timeout_s)
        if still:
            raise RequestTimeout(f"flush: {len(still)} batches not acknowledged within {timeout_s} s")

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush (up to ``timeout_s``), then stop and close every connection. Idempotent.

        Records not acknowledged by then fail with
        :class:`~millpond.errors.RequestTimeout`; those whose Produce was in
        flight may or may not have been appended. Does not raise for failed
        records. Later calls of :meth:`send` raise ``RuntimeError``.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush(timeout_s)
        except RequestTimeout:
            pass
        finally:
            self._stopping = True
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._fail_everything(RequestTimeout("the producer was closed before the record was sent"))
            await self._metadata.close()
            await self._connections.close()

    def statistics(self) -> ProducerStatistics:
        """A snapshot of counters and queue depths."""
        return ProducerStatistics(
            records_acknowledged=self._records_acknowledged,
            records_failed=self._records_failed,
            batches_sent=self._batches_sent,
            retries=self._retries,
            buffered_bytes=self._buffered_bytes,
            batches_queued=sum(len(queue) for queue in self._accumulator.queues()),
            batches_in_flight=len(self._in_flight),
            metadata_refreshes=self._metadata.refreshes,
        )
