"""Group commit: one writer thread turns many queued writes into one durable commit.

A :class:`GroupCommit` owns a bounded FIFO queue and a thread. Any thread (or
any asyncio event loop) submits writes; the thread repeatedly takes every
queued write up to the batch limits and hands the batch to a ``commit``
callback, which must make the whole batch durable before it returns (the LMDB
store runs one write transaction and one fsync). Then every write of the batch
is acknowledged at once. While a commit runs the queue fills with the next
batch, so the cost of one fsync is shared by everything that arrived during
the previous one ("run at your own pace").

Contracts:

* **Order.** Writes are committed in submission order, and batches in order:
  when write ``n`` is durable, so is every write submitted before it. Each
  write gets a sequence number; :meth:`GroupCommit.wait_durable` waits for one.
* **Validation happens at submission.** ``submit`` calls the caller's
  ``prepare(seq)`` under the queue lock, once the queue has room. ``prepare``
  validates the write and builds the job; if it raises, nothing is queued.
  Because ``prepare`` runs under the lock, submissions are totally ordered
  with their queue positions.
* **Bounded.** At most ``queue_writes_max`` writes and ``queue_bytes_max``
  bytes wait (a single write larger than that is admitted into an empty queue,
  so it cannot wait forever). A full queue blocks threads and makes
  coroutines await, without blocking their event loop.
* **Fail-stop.** If ``commit`` raises, the writer stops: that batch and every
  queued write fail with :class:`WriterFailedError`, and later submissions
  raise it at once. The owner must stop (a node exits and restarts; reopening
  the store shows exactly the writes that were acknowledged, and maybe some
  that were not yet).
* **Cancellation and timeouts.** A write whose waiter was cancelled or timed
  out stays queued: it may or may not become durable.

The thread is a daemon so a forgotten store cannot hang interpreter exit, but
its owner is expected to :meth:`GroupCommit.close` it (which drains the queue).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from millpond.limits import (
    writer_batch_bytes_max,
    writer_batch_writes_max,
    writer_queue_bytes_max,
    writer_queue_writes_max,
)
from millpond.raft.errors import StorageError

J = TypeVar("J")


class WriterFailedError(StorageError):
    """A batch failed to commit (full disk, full map, invariant): the writer has stopped.

    Writes queued at that moment were not committed; the owner must stop and
    restart. ``__cause__`` is the original error.
    """


class WriterClosedError(StorageError):
    """The writer was closed (or the process forked since it started): nothing was queued."""


@dataclass(frozen=True, slots=True)
class GroupCommitStatistics:
    """An immutable snapshot of a writer's counters."""

    writes_submitted: int
    writes_committed: int
    bytes_committed: int
    batches: int
    batch_writes_max: int
    queue_writes: int
    queue_bytes: int
    queue_writes_peak: int
    failed: bool
    closed: bool


@dataclass(slots=True)
class _Queued(Generic[J]):
    job: J
    seq: int
    nbytes: int


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Resolve ``futures`` (in their own loop) unless their owners gave up on them."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            failure = WriterFailedError(f"the log writer failed: {error!r}")
            failure.__cause__ = error
            future.set_exception(failure)


def _notify_loops(waiters: list[_Waiter], error: BaseException | None) -> None:
    """Hand each loop its futures in one ``call_soon_threadsafe`` (one wake-up per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


class GroupCommit(Generic[J]):
    """A bounded queue of jobs of type ``J`` and the thread that commits them in batches.

    ``commit(jobs)`` runs on the writer thread and must make every job durable
    before returning, or raise. ``background()`` (writer thread, under the queue
    lock) says whether ``commit([])`` has housekeeping to do while no job waits;
    ``commit`` is then called with an empty list until it returns False.
    """

    def __init__(
        self,
        commit: Callable[[list[J]], None],
        *,
        name: str = "group-commit",
        background: Callable[[], bool] | None = None,
        queue_writes_max: int = writer_queue_writes_max,
        queue_bytes_max: int = writer_queue_bytes_max,
        batch_writes_max: int = writer_batch_writes_max,
        batch_bytes_max: int = writer_batch_bytes_max,
    ) -> None:
        if not (1 <= batch_writes_max <= queue_writes_max):
            raise ValueError("need 1 <= batch_writes_max <= queue_writes_max")
        if not (1 <= batch_bytes_max <= queue_bytes_max):
            raise ValueError("need 1 <= batch_bytes_max <= queue_bytes_max")
        self._commit = commit
        self._background = background or (lambda: False)
        self._queue_writes_max = queue_writes_max
        self._queue_bytes_max = queue_bytes_max
        self._batch_writes_max = batch_writes_max
        self._batch_bytes_max = batch_bytes_max
        self._cond = threading.Condition()
        self._queue: deque[_Queued[J]] = deque()
        self._queue_bytes = 0
        self._last_seq = 0
        self._durable_seq = 0
        self._async_waiters: deque[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            deque()
        )
        self._space_waiters: list[_Waiter] = []
        self._failure: BaseException | None = None
        self._closing = False
        self._pid = os.getpid()
        self._stats = {"writes_submitted": 0, "writes_committed": 0, "bytes_committed": 0,
                       "batches": 0, "batch_writes_max": 0, "queue_writes_peak": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- submission ----------------------------------------------------------
    def submit(
        self, prepare: Callable[[int], J | None], nbytes: int, timeout_s: float | None = None
    ) -> int:
        """Queue the job built by ``prepare(seq)``; return the sequence number to wait for.

        Blocks while the queue is full. If ``prepare`` returns None nothing is
        queued and the number returned is that of the last queued write (so
        waiting on it still orders after everything submitted before).
        Raises whatever ``prepare`` raises (nothing queued), :class:`TimeoutError`
        if the queue stayed full for ``timeout_s`` (nothing queued),
        :class:`WriterFailedError` or :class:`WriterClosedError`.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_usable()
                if self._has_room(nbytes):
                    return self._enqueue(prepare, nbytes)
                if not self._cond.wait(_remaining(deadline)):
                    raise TimeoutError("the write queue stayed full; nothing was queued")

    async def submit_durable(self, prepare: Callable[[int], J | None], nbytes: int) -> None:
        """Queue the job built by ``prepare(seq)`` and return once it is durable.

        Awaits (without blocking the event loop) while the queue is full.
        Raises as :meth:`submit` does; :class:`WriterFailedError` if the batch
        carrying the job failed. If the awaiting task is cancelled the job may
        or may not become durable.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                self._check_usable()
                if self._has_room(nbytes):
                    seq = self._enqueue(prepare, nbytes)
                    if seq <= self._durable_seq:
                        return
                    done: asyncio.Future[None] = loop.create_future()
                    self._async_waiters.append((seq, loop, done))
                    break
                space: asyncio.Future[None] = loop.create_future()
                self._space_waiters.append((loop, space))
            await space
        await done

    def _has_room(self, nbytes: int) -> bool:
        if not self._queue:
            return True
        return (len(self._queue) < self._queue_writes_max
                and self._queue_bytes + nbytes <= self._queue_bytes_max)

    def _enqueue(self, prepare: Callable[[int], J | None], nbytes: int) -> int:
        job = prepare(self._last_seq + 1)
        if job is None:
            return self._last_seq
        self._last_seq += 1
        self._queue.append(_Queued(job, self._last_seq, nbytes))
        self._queue_bytes += nbytes
        self._stats["writes_submitted"] += 1
        self._stats["queue_writes_peak"] = max(self._stats["queue_writes_peak"], len(self._queue))
        self._cond.notify_all()
        return self._last_seq

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise WriterFailedError("the log writer failed earlier") from self._failure
        if self._closing:
            raise WriterClosedError("the log writer is closed")
        if os.getpid() != self._pid:
            raise WriterClosedError("the log writer belongs to the parent of this forked process")

    # -- waiting -------------------------------------------------------------
    def wait_durable(self, seq: int, timeout_s: float | None = None) -> None:
        """Block until write ``seq`` (and so every earlier one) is durable.

        Raises :class:`TimeoutError` (the write may still become durable) and
        :class:`WriterFailedError` if the writer stopped before committing it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._durable_seq < seq:
                if self._failure is not None:
                    raise WriterFailedError("the log writer failed") from self._failure
                if not self._cond.wait(_remaining(deadline)):
                    raise TimeoutError(f"write {seq} is not durable yet; it may still become so")

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every write submitted so far is durable (see :meth:`wait_durable`)."""
        with self._cond:
            seq = self._last_seq
        self.wait_durable(seq, timeout_s)

    def last_seq(self) -> int:
        """Sequence number of the last queued write (0: none yet)."""
        with self._cond:
            return self._last_seq

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Refuse new writes, commit the queued ones, stop the thread. Idempotent.

        Raises :class:`WriterFailedError` if the writer had failed (the queued
        writes were then lost), so an owner cannot miss the failure.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            space, self._space_waiters = self._space_waiters, []
        _notify_loops(space, None)
        if self._thread is not threading.current_thread():
            self._thread.join()
        if self._failure is not None:
            raise WriterFailedError("the log writer had failed") from self._failure

    def statistics(self) -> GroupCommitStatistics:
        """A consistent snapshot of the counters and queue depth."""
        with self._cond:
            return GroupCommitStatistics(
                queue_writes=len(self._queue), queue_bytes=self._queue_bytes,
                failed=self._failure is not None, closed=self._closing, **self._stats)

    # -- writer thread -------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._commit([queued.job for queued in batch])
            except BaseException as exc:  # fail-stop: every waiter gets it
                self._fail(batch, exc)
                return
            self._complete(batch)

    def _next_batch(self) -> list[_Queued[J]] | None:
        """Wait for work; take the next batch (empty: background work only); None: stop."""
        with self._cond:
            while not self._queue and not self._closing and not self._background():
                self._cond.wait()
            if not self._queue:
                return None if self._closing else []
            batch = [self._queue.popleft()]
            size = batch[0].nbytes
            while (self._queue and len(batch) < self._batch_writes_max
                   and size + self._queue[0].nbytes <= self._batch_bytes_max):
                batch.append(self._queue.popleft())
                size += batch[-1].nbytes
            self._queue_bytes -= size
            self._cond.notify_all()  # room for blocked submitters
            space, self._space_waiters = self._space_waiters, []
        _notify_loops(space, None)
        return batch

    def _complete(self, batch: list[_Queued[J]]) -> None:
        if not batch:
            return
        done: list[_Waiter] = []
        with self._cond:
            self._durable_seq = batch[-1].seq
            self._stats["writes_committed"] += len(batch)
            self._stats["bytes_committed"] += sum(queued.nbytes for queued in batch)
            self._stats["batches"] += 1
            self._stats["batch_writes_max"] = max(self._stats["batch_writes_max"], len(batch))
            while self._async_waiters and self._async_waiters[0][0] <= self._durable_seq:
                _, loop, future = self._async_waiters.popleft()
                done.append((loop, future))
            self._cond.notify_all()
        _notify_loops(done, None)

    def _fail(self, batch: list[_Queued[J]], error: BaseException) -> None:
        with self._cond:
            self._failure = error
            self._queue.clear()
            self._queue_bytes = 0
            failed = [(loop, future) for _, loop, future in self._async_waiters]
            self._async_waiters.clear()
            space, self._space_waiters = self._space_waiters, []
            self._cond.notify_all()
        _notify_loops(failed, error)
        _notify_loops(space, None)


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: wait forever), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
