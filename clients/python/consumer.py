"""The asynchronous consumer, with manual assignment (consumer groups come later).

Per assigned partition the consumer keeps a *position* (the offset of the
next record :meth:`AsyncConsumer.poll` returns), a buffer of records already
fetched, and at most one Fetch in flight. ``poll`` returns buffered records
and starts a Fetch for every partition whose buffer ran dry, so the next
records are on their way while the caller works (one fetch of prefetch per
partition, so memory stays bounded by partitions x (``fetch_bytes_max`` + one
batch)). A Fetch that found no data waits at the broker up to
``fetch_wait_ms_max`` (long poll).

A partition without a position, or whose position left the log
(``OFFSET_OUT_OF_RANGE``), is reset by ``auto_offset_reset``. Retriable errors
(``NOT_LEADER``, ``UNAVAILABLE``, timeouts) re-discover the leader and retry
that partition after a backoff, silently; other errors are raised by the next
``poll`` (once) and the partition is fetched again by the poll after that.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from millpond.client import _limits
from millpond.client._backoff import Backoff
from millpond.client._config import ConsumerConfig, parse_bootstrap
from millpond.client._connection import Connections, call
from millpond.client._fetch import decode_fetch
from millpond.client._metadata import MetadataCache
from millpond.client._types import ConsumerRecord, TopicPartition
from millpond.errors import (
    MillpondError,
    NotLeader,
    OffsetOutOfRange,
    RequestTimeout,
    ResourceExhausted,
    Unavailable,
    UnknownPartition,
    UnknownTopic,
)
from millpond.v1 import broker_pb2

__all__ = ["AsyncConsumer", "ConsumerStatistics", "PartitionStatistics"]


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    tp: TopicPartition
    position: int | None
    high_watermark: int
    """As of the last Fetch, -1 before the first."""
    lag: int | None
    """``high_watermark - position`` when both are known."""
    buffered_records: int


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    """A snapshot of the consumer's partitions."""

    partitions: tuple[PartitionStatistics, ...]
    fetches: int
    metadata_refreshes: int


class _Partition:
    """State of one assigned partition."""

    __slots__ = (
        "attempts", "backoff_until_s", "epoch", "error", "fetch_offset", "fetching", "high_watermark",
        "position", "read_index", "records", "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None
        self.fetch_offset: int | None = None
        """Where the next Fetch starts: the end of the buffered data."""
        self.records: list[ConsumerRecord] = []
        self.read_index = 0
        """Records before this index were returned already."""
        self.fetching: asyncio.Task[None] | None = None
        self.epoch = 0
        """Bumped by every seek: a Fetch started before it is discarded."""
        self.high_watermark = -1
        self.error: MillpondError | None = None
        self.backoff_until_s = 0.0
        self.attempts = 0

    @property
    def buffered(self) -> int:
        return len(self.records) - self.read_index

    def move_to(self, offset: int, *, cancel_fetch: bool = True) -> None:
        """Set the position, dropping buffered records; cancel a Fetch in flight unless asked not to."""
        self.position = self.fetch_offset = offset
        self.records = []
        self.read_index = 0
        self.epoch += 1
        self.error = None
        self.attempts = 0
        self.backoff_until_s = 0.0
        if cancel_fetch and self.fetching is not None:
            self.fetching.cancel()


class AsyncConsumer:
    """Reads records from partitions assigned by hand. Use on one event loop; ``async with`` closes it.

    ``bootstrap`` is ``"host:port[,host:port...]"`` or a list of addresses.
    Construction does no I/O.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        config: ConsumerConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or ConsumerConfig()
        self._connections = Connections()
        self._metadata = MetadataCache(
            parse_bootstrap(bootstrap if isinstance(bootstrap, str) else tuple(bootstrap)),
            self._connections,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        self._backoff = Backoff(self._config.retry_backoff_ms, self._config.retry_backoff_ms_max)
        self._rng = rng or random.Random()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._wakeup = asyncio.Event()
        self._next_first = 0
        self._fetches = 0
        self._closed = False

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- assignment and positions ---------------------------------------------------
    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions from now on (replacing the previous assignment).

        Partitions kept keep their positions; new ones start per
        ``auto_offset_reset`` unless :meth:`seek` is called. No I/O: an unknown
        topic or partition is reported by :meth:`poll`. Raises ``TypeError`` /
        ``ValueError`` for a malformed ``(topic, partition)``, ``RuntimeError``
        after :meth:`close`.
        """
        self._check_open()
        wanted: dict[TopicPartition, None] = {}
        for item in partitions:
            topic, partition = item
            if not isinstance(topic, str) or not topic:
                raise TypeError(f"a topic is a non-empty str, got {topic!r}")
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise ValueError(f"a partition is an int >= 0, got {partition!r}")
            wanted[TopicPartition(topic, partition)] = None
        for tp in [tp for tp in self._partitions if tp not in wanted]:
            state = self._partitions.pop(tp)
            if state.fetching is not None:
                state.fetching.cancel()
        for tp in wanted:
            self._partitions.setdefault(tp, _Partition(tp))

    def assignment(self) -> list[TopicPartition]:
        """The assigned partitions, in assignment order."""
        return list(self._partitions)

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        """Make ``offset`` the next offset :meth:`poll` returns for ``tp`` (buffered records are dropped).

        No I/O: an offset outside the log is handled by ``auto_offset_reset``
        at the next fetch. Raises ``ValueError`` if ``tp`` is not assigned or
        ``offset`` is negative.
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"an offset is an int >= 0, got {offset!r}")
        self._state(tp).move_to(offset)

    async def seek_to_beginning(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        """Seek the partitions (default: all assigned) to the log start; raises as :meth:`offset_for`."""
        for tp in self._targets(partitions):
            self.seek(tp, await self.offset_for(tp, "earliest"))

    async def seek_to_end(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        """Seek each partition (default: all assigned) to its high watermark. Raises as :meth:`offset_for`."""
        for tp in self._targets(partitions):
            self.seek(tp, await self.offset_for(tp, "latest"))

    async def seek_to_timestamp(self, tp: tuple[str, int], timestamp_ms: int) -> int:
        """Seek ``tp`` to its first record with timestamp >= ``timestamp_ms`` and return that offset.

        The high watermark if there is none. Raises as :meth:`offset_for`.
        """
        offset = await self.offset_for(tp, timestamp_ms)
        self.seek(tp, offset)
        return offset

    async def position(self, tp: tuple[str, int]) -> int:
        """The offset of the next record :meth:`poll` returns for ``tp``.

        A partition without a position gets one per ``auto_offset_reset``
        first. Raises ``ValueError`` if ``tp`` is not assigned,
        :class:`~millpond.errors.OffsetOutOfRange` if it has no position and the
        policy is ``"none"``, and what :meth:`offset_for` raises.
        """
        state = self._state(tp)
        if state.position is not None:
            return state.position
        offset = await self._reset_offset(state.tp, None)
        state.move_to(offset)
        return offset

    async def offset_for(self, tp: tuple[str, int], spec: str | int) -> int:
        """Ask the partition's leader for an offset: ``"earliest"`` (log start), ``"latest"`` (high
        watermark), or an int timestamp (first offset whose record timestamp is >= it; the high
        watermark if none).

        Retries retriable errors (re-discovering the leader) until
        ``request_timeout_ms`` passed, then raises the last one
        (:class:`~millpond.errors.Unavailable`, :class:`~millpond.errors.NotLeader`,
        :class:`~millpond.errors.RequestTimeout`). Raises
        :class:`~millpond.errors.UnknownTopic` / :class:`~millpond.errors.UnknownPartition`
        if the cluster does not know the partition, ``ValueError`` for a bad ``spec``.
        Does not need ``tp`` to be assigned.
        """
        topic, partition = tp
        request = broker_pb2.ListOffsetsRequest(topic=topic, partition=partition)
        if spec == "earliest":
            request.earliest = True
        elif spec == "latest":
            request.latest = True
        elif isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
            request.timestamp_ms = spec
        else:
            raise ValueError(f"spec must be 'earliest', 'latest' or a timestamp in ms >= 0, got {spec!r}")
        key = TopicPartition(topic, partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.request_timeout_ms / 1000
        attempt = 0
        while True:
            address = await self._leader(key)  # raises UnknownTopic / UnknownPartition per fresh metadata
            try:
                response = await call(
                    self._connections.broker(address).ListOffsets, request,
                    max(0.001, min(self._config.request_timeout_ms / 1000, deadline - loop.time())),
                )
                return int(response.offset)
            except MillpondError as exc:
                # A leader that does not know the topic yet lags behind the metadata: refresh, retry.
                lagging = isinstance(exc, UnknownTopic | UnknownPartition)
                if not (exc.retriable or lagging) or loop.time() >= deadline:
                    raise
                if lagging:
                    self._metadata.invalidate(key)
                self._note_failure(key, exc)
                await asyncio.sleep(min(self._backoff.delay_ms(attempt, self._rng, exc) / 1000,
                                        max(0.0, deadline - loop.time())))
                attempt += 1

    # --- polling --------------------------------------------------------------------------
    async def poll(
        self, timeout_ms: int = 0, max_records: int = _limits.poll_records_max_default
    ) -> list[ConsumerRecord]:
        """Return up to ``max_records`` records, waiting up to ``timeout_ms`` for the first.

        Records of one partition come in offset order; an empty list means none
        arrived in time. Raises (once per occurrence; the next poll retries the
        partition): :class:`~millpond.errors.OffsetOutOfRange` when a position
        left the log and ``auto_offset_reset`` is ``"none"`` (or a partition has
        no position under ``"none"``); :class:`~millpond.errors.UnknownTopic` /
        :class:`~millpond.errors.UnknownPartition` for an assignment the cluster
        does not know; :class:`~millpond.errors.InvalidRecordBatch` for fetched
        data that does not decode; any other non-retriable error a broker
        answered. Retriable errors are retried silently. ``RuntimeError``
        after :meth:`close`; ``ValueError`` for a negative timeout or
        ``max_records`` < 1.
        """
        self._check_open()
        if timeout_ms < 0 or max_records < 1:
            raise ValueError("poll needs timeout_ms >= 0 and max_records >= 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            self._raise_pending_error()
            records = self._take(max_records)
            self._start_fetches(loop)
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return records
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass

    def _raise_pending_error(self) -> None:
        for state in self._partitions.values():
            if state.error is not None:
                error, state.error = state.error, None
                raise error

    def _take(self, max_records: int) -> list[ConsumerRecord]:
        taken: list[ConsumerRecord] = []
        states = list(self._partitions.values())
        if not states:
            return taken
        first = self._next_first % len(states)
        self._next_first += 1
        for state in states[first:] + states[:first]:
            if not state.buffered:
                continue
            start = state.read_index
            chunk = state.records[start : start + max_records - len(taken)]
            taken.extend(chunk)
            state.read_index += len(chunk)
            state.position = chunk[-1].offset + 1
            if not state.buffered:
                state.records = []
                state.read_index = 0
                state.position = state.fetch_offset
            if len(taken) >= max_records:
                break
        return taken

    def _start_fetches(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for state in self._partitions.values():
            if (state.fetching is None and state.error is None and not state.buffered
                    and now >= state.backoff_until_s):
                state.fetching = loop.create_task(self._fetch(state, state.epoch))

    async def _fetch(self, state: _Partition, epoch: int) -> None:
        task = asyncio.current_task()
        try:
            await self._fetch_once(state, epoch)
        except MillpondError as exc:
            if state.epoch == epoch:
                if exc.retriable:
                    self._retry_later(state, exc)
                else:
                    state.error = exc
        finally:
            if state.fetching is task:
                state.fetching = None
            self._wakeup.set()

    async def _fetch_once(self, state: _Partition, epoch: int) -> None:
        tp = state.tp
        address = await self._leader(tp)  # an unknown topic or partition is reported before anything else
        if state.fetch_offset is None:
            offset = await self._reset_offset(tp, None)
            if state.epoch == epoch:
                state.move_to(offset, cancel_fetch=False)  # the next poll fetches from there
            return
        offset = state.fetch_offset
        request = broker_pb2.FetchRequest(
            topic=tp.topic, partition=tp.partition, offset=offset,
            max_bytes=self._config.fetch_bytes_max, max_wait_ms=self._config.fetch_wait_ms_max,
        )
        self._fetches += 1
        try:
            response = await call(
                self._connections.broker(address).Fetch, request,
                (self._config.fetch_wait_ms_max + self._config.request_timeout_ms) / 1000,
            )
        except OffsetOutOfRange as exc:
            new_offset = await self._reset_offset(tp, exc)
            if state.epoch == epoch:
                state.move_to(new_offset, cancel_fetch=False)
            return
        except (UnknownTopic, UnknownPartition) as exc:
            # The leader may not know a partition that metadata already shows: refresh, retry.
            self._metadata.invalidate(tp)
            if state.epoch == epoch:
                self._retry_later(state, exc)
            return
        if state.epoch != epoch:
            return
        state.high_watermark = response.high_watermark
        records, next_offset = decode_fetch(tp.topic, tp.partition, response.batches, offset)
        state.attempts = 0
        state.fetch_offset = next_offset
        if records:
            state.records = records
            state.read_index = 0
        elif state.position == offset:
            state.position = next_offset

    async def _reset_offset(self, tp: TopicPartition, error: OffsetOutOfRange | None) -> int:
        policy = self._config.auto_offset_reset
        if policy == "none":
            if error is not None:
                raise error
            raise OffsetOutOfRange(
                f"{tp.topic}/{tp.partition} has no position and auto_offset_reset is 'none': seek first"
            )
        if error is not None:
            hint = error.log_start_offset if policy == "earliest" else error.high_watermark
            if hint >= 0:
                return hint
        return await self.offset_for(tp, policy)

    async def _leader(self, tp: TopicPartition) -> str:
        address = self._metadata.leader_address(tp)
        if address is not None:
            return address
        await self._metadata.refresh()
        count = self._metadata.partition_count(tp.topic)
        if count is None:
            raise UnknownTopic(f"unknown topic {tp.topic!r}")
        if tp.partition >= count:
            raise UnknownPartition(f"topic {tp.topic!r} has {count} partitions, no partition {tp.partition}")
        address = self._metadata.leader_address(tp)
        if address is None:
            raise Unavailable(f"partition {tp.topic}/{tp.partition} has no leader")
        return address

    def _note_failure(self, tp: TopicPartition, error: MillpondError) -> None:
        if isinstance(error, NotLeader):
            self._metadata.note_not_leader(tp, error)
        elif isinstance(error, Unavailable | RequestTimeout):
            self._metadata.invalidate(tp)

    def _retry_later(self, state: _Partition, error: MillpondError) -> None:
        if not isinstance(error, ResourceExhausted):
            self._note_failure(state.tp, error)
        loop = asyncio.get_running_loop()
        delay_s = self._backoff.delay_ms(state.attempts, self._rng, error) / 1000
        state.attempts += 1
        state.backoff_until_s = loop.time() + delay_s
        loop.call_at(state.backoff_until_s, self._wakeup.set)

    # --- helpers, close, statistics --------------------------------------------------------
    def _state(self, tp: tuple[str, int]) -> _Partition:
        state = self._partitions.get(TopicPartition(*tp))
        if state is None:
            raise ValueError(f"{tp[0]}/{tp[1]} is not assigned")
        return state

    def _targets(self, partitions: Iterable[tuple[str, int]] | None) -> list[TopicPartition]:
        if partitions is None:
            return list(self._partitions)
        return [self._state(tp).tp for tp in partitions]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the consumer is closed")

    async def close(self) -> None:
        """Stop fetching and close every connection. Idempotent; a later poll raises ``RuntimeError``."""
        if self._closed:
            return
        self._closed = True
        tasks = [state.fetching for state in self._partitions.values() if state.fetching is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._metadata.close()
        await self._connections.close()

    def statistics(self) -> ConsumerStatistics:
        """A snapshot of positions, high watermarks, lag and buffers."""
        partitions = tuple(
            PartitionStatistics(
                tp=state.tp,
                position=state.position,
                high_watermark=state.high_watermark,
                lag=(state.high_watermark - state.position
                     if state.position is not None and state.high_watermark >= 0 else None),
                buffered_records=state.buffered,
            )
            for state in self._partitions.values()
        )
        return ConsumerStatistics(partitions, self._fetches, self._metadata.refreshes)
