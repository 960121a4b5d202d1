"""Blocking facades over the asynchronous clients: same behaviour, same errors, no second implementation.

Every facade runs its asynchronous client on one background thread per
process (an asyncio event loop, started on first use, a daemon thread) and
submits each call to it with ``asyncio.run_coroutine_threadsafe``. Methods
block the calling thread until the coroutine finishes and raise exactly what
the asynchronous method raises. Call them from any thread except the
background loop's own (a callback of a producer future, for instance):
that raises ``RuntimeError`` instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from millpond.client import _limits
from millpond.client._config import ClientConfig, ConsumerConfig, ProducerConfig
from millpond.client._types import (
    ClusterDescription,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    Header,
    OffsetAndMetadata,
    OffsetChange,
    RecordMetadata,
    ReplicaDescription,
    TopicDescription,
    TopicPartition,
)
from millpond.client.admin import AsyncAdmin
from millpond.client.consumer import AsyncConsumer, ConsumerStatistics, RebalanceCallback
from millpond.client.producer import AsyncProducer, ProducerStatistics

__all__ = ["Admin", "Consumer", "Producer"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="millpond-client", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (raising its exception)."""
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("a blocking millpond client method was called on the client's loop thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: stop the coroutine too
            raise

    def call(self, function: Any, *args: Any) -> Any:
        """Call a plain function on the loop thread (state is only touched there) and return its result."""

        async def run() -> Any:
            return function(*args)

        return self.run(run())


_shared: _LoopThread | None = None
_shared_lock = threading.Lock()


def _loop_thread() -> _LoopThread:
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.thread.is_alive():
            _shared = _LoopThread()
        return _shared


async def _build(factory: Any, *args: Any, **kwargs: Any) -> Any:
    return factory(*args, **kwargs)  # inside the loop: gRPC's asyncio objects bind to it


def _chain(source: asyncio.Future[T]) -> concurrent.futures.Future[T]:
    """A thread-safe future that completes with ``source`` (call on the loop)."""
    target: concurrent.futures.Future[T] = concurrent.futures.Future()

    def copy(done: asyncio.Future[T]) -> None:
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())
        else:
            target.set_result(done.result())

    target.set_running_or_notify_cancel()
    source.add_done_callback(copy)
    return target


class Producer:
    """Blocking facade of :class:`~millpond.client.producer.AsyncProducer` (see it for every error).

    :meth:`send` returns a ``concurrent.futures.Future``. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self, bootstrap: str | Sequence[str], config: ProducerConfig | None = None,
        *, rng: random.Random | None = None,
    ) -> None:
        self._runner = _loop_thread()
        self._producer: AsyncProducer = self._runner.run(_build(AsyncProducer, bootstrap, config, rng=rng))

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[Header] = (),
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue one record (as :meth:`AsyncProducer.send`); the future resolves once it is acknowledged."""

        async def send() -> concurrent.futures.Future[RecordMetadata]:
            return _chain(await self._producer.send(topic, value, key, headers, timestamp_ms, partition))

        return self._runner.run(send())

    def flush(self, timeout_s: float | None = None) -> None:
        """As :meth:`AsyncProducer.flush`."""
        self._runner.run(self._producer.flush(timeout_s))

    def close(self, timeout_s: float | None = None) -> None:
        """As :meth:`AsyncProducer.close`."""
        self._runner.run(self._producer.close(timeout_s))

    def statistics(self) -> ProducerStatistics:
        return self._runner.call(self._producer.statistics)  # type: ignore[no-any-return]


class Consumer:
    """Blocking facade of :class:`~millpond.client.consumer.AsyncConsumer` (see it for every error).

    Rebalance callbacks given to :meth:`subscribe` run on the client's loop
    thread, inside :meth:`poll` (``on_lost``: in the heartbeat task): they must
    not call this facade's blocking methods (that raises ``RuntimeError``). To
    commit before partitions move, keep ``enable_auto_commit`` (positions are
    committed before ``on_revoke`` runs) or :meth:`commit` after each poll.
    """

    def __init__(
        self, bootstrap: str | Sequence[str], config: ConsumerConfig | None = None,
        *, rng: random.Random | None = None,
    ) -> None:
        self._runner = _loop_thread()
        self._consumer: AsyncConsumer = self._runner.run(_build(AsyncConsumer, bootstrap, config, rng=rng))

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        self._runner.call(self._consumer.assign, list(partitions))

    def assignment(self) -> list[tuple[str, int]]:
        return list(self._runner.call(self._consumer.assignment))

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self._runner.call(self._consumer.seek, tp, offset)

    def seek_to_beginning(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        self._runner.run(self._consumer.seek_to_beginning(None if partitions is None else list(partitions)))

    def seek_to_end(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        self._runner.run(self._consumer.seek_to_end(None if partitions is None else list(partitions)))

    def seek_to_timestamp(self, tp: tuple[str, int], timestamp_ms: int) -> int:
        return self._runner.run(self._consumer.seek_to_timestamp(tp, timestamp_ms))

    def position(self, tp: tuple[str, int]) -> int:
        return self._runner.run(self._consumer.position(tp))

    def offset_for(self, tp: tuple[str, int], spec: str | int) -> int:
        return self._runner.run(self._consumer.offset_for(tp, spec))

    def poll(
        self, timeout_ms: int = 0, max_records: int = _limits.poll_records_max_default
    ) -> list[ConsumerRecord]:
        return self._runner.run(self._consumer.poll(timeout_ms, max_records))

    def subscribe(
        self, topics: Iterable[str] | None = None, *, pattern: str | None = None,
        on_assign: RebalanceCallback | None = None, on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """As :meth:`AsyncConsumer.subscribe` (the callbacks run on the client's loop thread)."""
        names = None if topics is None else list(topics)
        self._runner.call(lambda: self._consumer.subscribe(names, pattern=pattern, on_assign=on_assign,
                                                           on_revoke=on_revoke, on_lost=on_lost))

    def commit(self, offsets: Mapping[tuple[str, int], int | OffsetAndMetadata] | None = None) -> None:
        """As :meth:`AsyncConsumer.commit`."""
        self._runner.run(self._consumer.commit(None if offsets is None else dict(offsets)))

    def committed(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """As :meth:`AsyncConsumer.committed`."""
        return self._runner.run(self._consumer.committed(list(partitions)))

    @property
    def member_id(self) -> str:
        return self._runner.call(lambda: self._consumer.member_id)  # type: ignore[no-any-return]

    @property
    def member_epoch(self) -> int:
        return self._runner.call(lambda: self._consumer.member_epoch)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._runner.run(self._consumer.close())

    def statistics(self) -> ConsumerStatistics:
        return self._runner.call(self._consumer.statistics)  # type: ignore[no-any-return]


class Admin:
    """Blocking facade of :class:`~millpond.client.admin.AsyncAdmin` (see it for every error)."""

    def __init__(
        self, bootstrap: str | Sequence[str], config: ClientConfig | None = None,
        *, rng: random.Random | None = None,
    ) -> None:
        self._runner = _loop_thread()
        self._admin: AsyncAdmin = self._runner.run(_build(AsyncAdmin, bootstrap, config, rng=rng))

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def describe_cluster(self, include_topics: bool = False) -> ClusterDescription:
        return self._runner.run(self._admin.describe_cluster(include_topics))

    def list_topics(self) -> list[str]:
        return self._runner.run(self._admin.list_topics())

    def describe_topic(self, name: str) -> TopicDescription:
        return self._runner.run(self._admin.describe_topic(name))

    def create_topic(
        self, name: str, partitions: int, replication_factor: int, config: Mapping[str, str] | None = None
    ) -> TopicDescription:
        return self._runner.run(self._admin.create_topic(name, partitions, replication_factor, config))

    def delete_topic(self, name: str) -> None:
        self._runner.run(self._admin.delete_topic(name))

    def alter_partitions(self, name: str, partitions: int) -> TopicDescription:
        return self._runner.run(self._admin.alter_partitions(name, partitions))

    def reassign_partition(self, topic: str, partition: int, replicas: Sequence[int]) -> TopicDescription:
        return self._runner.run(self._admin.reassign_partition(topic, partition, replicas))

    def transfer_leadership(self, topic: str, partition: int, node_id: int) -> tuple[int, int]:
        return self._runner.run(self._admin.transfer_leadership(topic, partition, node_id))

    def describe_replica(self, address: str, topic: str, partition: int,
                         upto_offset: int = -1) -> ReplicaDescription:
        return self._runner.run(self._admin.describe_replica(address, topic, partition, upto_offset))

    def list_groups(self) -> list[GroupListing]:
        return self._runner.run(self._admin.list_groups())

    def describe_group(self, group_id: str) -> GroupDescription:
        return self._runner.run(self._admin.describe_group(group_id))

    def delete_group(self, group_id: str) -> None:
        self._runner.run(self._admin.delete_group(group_id))

    def reset_offsets(self, group_id: str, topics: Mapping[str, Sequence[int] | None] | Sequence[str],
                      **target: Any) -> list[OffsetChange]:
        """As :meth:`AsyncAdmin.reset_offsets` (``to_earliest=True``, ``shift_by=-10``,
        ``dry_run=False``, ...)."""
        return self._runner.run(self._admin.reset_offsets(group_id, topics, **target))

    def close(self) -> None:
        self._runner.run(self._admin.close())
