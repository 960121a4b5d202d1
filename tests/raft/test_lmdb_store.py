"""The LMDB log store: same answers as MemoryStorage, group commit, layout, failures.

Every test uses real LMDB files under ``tmp_path``. Workloads are seeded; a
failing seed is in the test id.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import struct
import sys
import threading
import zlib
from pathlib import Path
from types import ModuleType

import lmdb
import pytest

from millpond.invariant import InvariantViolation
from millpond.raft import lmdb_store
from millpond.raft.errors import CompactedError, UnavailableError
from millpond.raft.lmdb_store import (
    GroupExistsError,
    GroupLog,
    LogStore,
    StoreLayoutError,
    UnknownGroupError,
    WriterFailedError,
)
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from millpond.raft.storage import MemoryStorage


def _load_workload() -> ModuleType:
    """The helper module next to this file (loaded by path: tests are not a package)."""
    name = "lmdb_crash_writer"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("lmdb_crash_writer.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


workload = _load_workload()
MEMBERSHIP = workload.MEMBERSHIP


def _outcome(call: object, *args: int) -> object:
    """The result of ``call(*args)``, or the type of the storage error it raised."""
    try:
        return call(*args)  # type: ignore[operator]
    except (CompactedError, UnavailableError) as exc:
        return type(exc)


def assert_same(model: MemoryStorage, log: GroupLog, rng: random.Random) -> None:
    """Every read method of ``log`` answers as ``model``'s does (values and errors)."""
    assert workload.dump(log) == workload.dump(model)
    first, last = model.first_index(), model.last_index()
    for index in range(first - 2, last + 3):
        assert _outcome(log.term, index) == _outcome(model.term, index), index
    for _ in range(8):
        lo = rng.randint(first - 2, last + 2)
        hi = rng.randint(lo, last + 3)  # hi < lo is outside the contract (MemoryStorage
        # then slices with a negative end)
        max_bytes = rng.choice((0, 1, 100, 5000, 2**40))
        assert (_outcome(log.entries, lo, hi, max_bytes)
                == _outcome(model.entries, lo, hi, max_bytes)), (lo, hi, max_bytes)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_memory_storage_across_groups_and_reopens(tmp_path: Path, seed: int) -> None:
    """Interleaved writes of several groups in one environment, synced at random points and
    across close/reopen, leave every group reading exactly like its MemoryStorage model."""
    rng = random.Random(seed)
    groups = [0, 1, 7, 2**40, lmdb_store.group_id_max]
    loads = {group: workload.Workload(seed, group) for group in groups}
    store = LogStore(tmp_path / "env")
    try:
        logs = {group: store.bootstrap(group, MEMBERSHIP) for group in groups}
        pending: set[int] = set()
        for step in range(400):
            group = rng.choice(groups)
            loads[group].next_op().apply(logs[group])
            pending.add(group)
            if rng.random() < 0.6:
                for synced in pending:
                    logs[synced].sync()
                    assert_same(loads[synced].model, logs[synced], rng)
                pending.clear()
            if step % 100 == 99:
                store.close()  # drains the queue: unsynced writes are committed
                store = LogStore(tmp_path / "env")
                assert store.group_ids() == sorted(groups)
                logs = {group: store.group(group) for group in groups}
                for group in groups:
                    assert_same(loads[group].model, logs[group], rng)
                pending.clear()
        store.flush()
        for group in groups:
            assert_same(loads[group].model, logs[group], rng)
    finally:
        store.close()


def test_bounds_during_a_commit_show_only_entries_unchanged_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer's transaction is open (after the view narrowed, before the commit),
    every entry the view shows is the same before and after that transaction."""
    checked: list[int] = []
    failures: list[str] = []
    before: dict[int, dict[int, Entry]] = {}
    after: dict[int, dict[int, Entry]] = {}
    real = lmdb_store._Committer._collect_garbage

    def check_then_collect(self: lmdb_store._Committer, txn: lmdb_store._WriteTxn) -> None:
        for group, log in logs.items():
            shown = log.entries(log.first_index(), log.last_index() + 1, 2**62)
            for entry in shown:
                if before[group].get(entry.index) != entry or after[group].get(entry.index) != entry:
                    failures.append(f"group {group} shows {entry} mid-commit")
            checked.append(len(shown))
        real(self, txn)

    monkeypatch.setattr(lmdb_store._Committer, "_collect_garbage", check_then_collect)
    loads = {group: workload.Workload(11, group) for group in (1, 2)}
    logs: dict[int, GroupLog] = {}
    with LogStore(tmp_path / "env") as store:
        for group in loads:
            before[group] = after[group] = {}
            logs[group] = store.bootstrap(group, MEMBERSHIP)
        rng = random.Random(11)
        for _ in range(300):
            group = rng.choice(list(loads))
            for g, load in loads.items():
                before[g] = _entries_by_index(load.model)
            op = loads[group].next_op()
            after[group] = _entries_by_index(loads[group].model)
            after.update({g: before[g] for g in loads if g != group})
            op.apply(logs[group])
            logs[group].sync()
            assert_same(loads[group].model, logs[group], rng)
    assert not failures, failures[:5]
    assert sum(checked) > 0


def _entries_by_index(model: MemoryStorage) -> dict[int, Entry]:
    first, last = model.first_index(), model.last_index()
    entries = model.entries(first, last + 1, 2**62) if last >= first else []
    return {entry.index: entry for entry in entries}


def _entry(term: int, index: int, size: int = 100) -> Entry:
    return Entry(term, index, EntryKind.DATA, bytes([index % 251]) * size)


def test_concurrent_async_writes_share_transactions(tmp_path: Path) -> None:
    """Many groups awaiting durable writes at once are committed in fewer transactions than
    writes, and every acknowledged write is readable afterwards."""
    groups, writes_per_group = 32, 20

    async def run_group(log: GroupLog) -> None:
        for index in range(1, writes_per_group + 1):
            await log.write(HardState(1, 1, index - 1), [_entry(1, index)], None)
            assert log.last_index() == index  # durable, hence visible

    with LogStore(tmp_path / "env") as store:
        logs = [store.bootstrap(group, MEMBERSHIP) for group in range(groups)]
        start = store.statistics()

        async def main() -> None:
            async with asyncio.TaskGroup() as tasks:
                for log in logs:
                    tasks.create_task(run_group(log))

        asyncio.run(main())
        stats = store.statistics()
        writes = stats.writes - start.writes
        transactions = stats.transactions - start.transactions
        assert writes == groups * writes_per_group == stats.writes_committed - start.writes_committed
        assert transactions < writes
        assert stats.batch_writes_max > 1
        assert stats.fsyncs == stats.transactions
        assert stats.entries_written == groups * writes_per_group
        for log in logs:
            assert [e.index for e in log.entries(1, writes_per_group + 1, 2**62)] == list(
                range(1, writes_per_group + 1))
            assert log.initial_state() == HardState(1, 1, writes_per_group - 1)


def test_threads_saving_and_syncing_concurrently(tmp_path: Path) -> None:
    """The synchronous API from plain threads: each thread's writes are durable after sync."""
    with LogStore(tmp_path / "env") as store:
        logs = [store.bootstrap(group, MEMBERSHIP) for group in range(8)]
        errors: list[BaseException] = []

        def run(log: GroupLog) -> None:
            try:
                for batch in range(10):
                    entries = [_entry(2, batch * 10 + i + 1) for i in range(10)]
                    log.save(HardState(2, 0, batch * 10), entries, None)
                    if batch % 3 == 0:
                        log.sync()
                log.sync()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(log,)) for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert all(not thread.is_alive() for thread in threads)
        for log in logs:
            assert log.last_index() == 100
            assert log.entries(1, 101, 2**62) == [_entry(2, i) for i in range(1, 101)]
        assert store.statistics().transactions < store.statistics().writes


def test_full_queue_makes_writers_wait_within_its_bound(tmp_path: Path) -> None:
    """With a tiny queue, async and thread writers wait for room; all writes complete."""
    with LogStore(tmp_path / "env", queue_writes_max=4, batch_writes_max=2) as store:
        logs = [store.bootstrap(group, MEMBERSHIP) for group in range(16)]

        async def run_group(log: GroupLog) -> None:
            for index in range(1, 11):
                await log.write(None, [_entry(1, index)], None)

        async def main() -> None:
            await asyncio.gather(*(run_group(log) for log in logs))

        asyncio.run(main())
        stats = store.statistics()
        assert stats.writes_committed == 16 * 10 + 16  # + the bootstraps
        assert stats.queue_writes_peak <= 4
        assert stats.batch_writes_max <= 2
        assert all(log.last_index() == 10 for log in logs)


def test_close_commits_queued_writes(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        log = store.bootstrap(3, MEMBERSHIP)
        for index in range(1, 51):
            log.save(HardState(1, 0, index), [_entry(1, index)], None)
    with LogStore(tmp_path / "env") as store:
        log = store.group(3)
        assert log.last_index() == 50
        assert log.initial_state() == HardState(1, 0, 50)


def test_compaction_deletes_the_prefix_in_bounded_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction records its snapshot at once and deletes at most the per-transaction
    budget of old entries in each transaction until none is left."""
    monkeypatch.setattr(lmdb_store, "writer_batch_deletes_max", 700)
    with LogStore(tmp_path / "env") as store:
        log = store.bootstrap(5, MEMBERSHIP)
        for batch in range(10):
            log.save(None, [_entry(1, batch * 500 + i + 1, 10) for i in range(500)], None)
        log.sync()
        deleted = store.statistics().entries_deleted
        log.compact(Snapshot(SnapshotMeta(4000, 1, MEMBERSHIP)))
        log.sync()
        stats = store.statistics()
        assert log.first_index() == 4001
        assert 0 < stats.entries_deleted - deleted <= 700
        for index in range(1, 10):  # each later write carries more deletions
            log.save(HardState(1, 0, index), [], None)
            log.sync()
        stats = store.statistics()
        assert stats.entries_deleted - deleted == 4000
        assert stats.groups_with_garbage == 0
        assert log.entries(4001, 5001, 2**62) == [_entry(1, i, 10) for i in range(4001, 5001)]
        with pytest.raises(CompactedError):
            log.entries(4000, 4001, 2**62)
    with lmdb.open(str(tmp_path / "env"), max_dbs=3) as env:
        with env.begin(db=env.open_db(b"log")) as txn:
            first_key = next(iter(txn.cursor().iternext(values=False)))
            assert struct.unpack(">QQ", first_key) == (5, 4001)


def test_records_follow_the_documented_layout(tmp_path: Path) -> None:
    """The raw LMDB contents are exactly what the module docstring says."""
    config = Membership.of([4, 5])
    with LogStore(tmp_path / "env") as store:
        log = store.bootstrap(9, MEMBERSHIP)
        log.save(HardState(3, 2, 1), [Entry(3, 1, EntryKind.DATA, b"abc"),
                                      Entry(3, 2, EntryKind.CONFIG, config.encode())], None)
        log.sync()
    sealed = lambda body: body + struct.pack(">I", zlib.crc32(body))  # noqa: E731
    with lmdb.open(str(tmp_path / "env"), max_dbs=3) as env:
        with env.begin() as txn:
            log_db, meta, conf = (env.open_db(name, txn=txn) for name in (b"log", b"meta", b"conf"))
            assert list(txn.cursor(db=log_db)) == [
                (struct.pack(">QQ", 9, 1), sealed(struct.pack(">QB", 3, 1) + b"abc")),
                (struct.pack(">QQ", 9, 2), sealed(struct.pack(">QB", 3, 2) + config.encode())),
            ]
            members = MEMBERSHIP.encode()
            assert list(txn.cursor(db=meta)) == [
                (struct.pack(">QQ", 9, 1), sealed(struct.pack(">QQQ", 3, 2, 1))),
                (struct.pack(">QQ", 9, 2),
                 sealed(struct.pack(">QQI", 0, 0, len(members)) + members)),
                (struct.pack(">QQ", 2**64 - 1, 0),
                 sealed(b"millpond-raft-log" + struct.pack(">I", 1))),
            ]
            assert list(txn.cursor(db=conf)) == [(struct.pack(">QQ", 9, 2), sealed(config.encode()))]


def _corrupt(path: Path, db_name: bytes, key: bytes) -> None:
    with lmdb.open(str(path), max_dbs=3) as env:
        db = env.open_db(db_name)
        with env.begin(write=True, db=db) as txn:
            value = bytearray(txn.get(key))
            value[len(value) // 2] ^= 0x40
            txn.put(key, bytes(value))


def test_damaged_records_fail_an_invariant_when_read_back(tmp_path: Path) -> None:
    path = tmp_path / "env"
    with LogStore(path) as store:
        for group in (1, 2):
            log = store.bootstrap(group, MEMBERSHIP)
            log.save(HardState(1, 0, 0), [_entry(1, i) for i in range(1, 4)], None)
            log.sync()
    _corrupt(path, b"log", struct.pack(">QQ", 1, 2))
    _corrupt(path, b"meta", struct.pack(">QQ", 2, 1))
    with LogStore(path) as store:
        log = store.group(1)
        assert log.entries(1, 2, 2**62) == [_entry(1, 1)]
        with pytest.raises(InvariantViolation, match="checksum"):
            log.entries(1, 4, 2**62)
        with pytest.raises(InvariantViolation, match="checksum"):
            store.group(2)


def test_invalid_writes_fail_in_the_caller_and_queue_nothing(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        log = store.bootstrap(1, MEMBERSHIP)
        log.save(None, [_entry(1, i) for i in range(1, 6)], None)
        log.sync()
        writes = store.statistics().writes
        bad = [
            lambda: log.save(None, [_entry(1, 7)], None),  # gap
            lambda: log.save(None, [_entry(1, 6), _entry(1, 8)], None),  # not contiguous
            lambda: log.compact(Snapshot(SnapshotMeta(9, 1, MEMBERSHIP))),  # beyond last
            lambda: log.compact(Snapshot(SnapshotMeta(3, 2, MEMBERSHIP))),  # wrong term
            lambda: log.save(None, [Entry(1, 6, EntryKind.CONFIG, b"junk")], None),
        ]
        for write in bad:
            with pytest.raises(InvariantViolation):
                write()
        log.compact(Snapshot(SnapshotMeta(3, 1, MEMBERSHIP)))
        log.sync()
        with pytest.raises(InvariantViolation, match="below the snapshot"):
            log.save(None, [_entry(1, 3)], None)
        log.compact(Snapshot(SnapshotMeta(2, 1, MEMBERSHIP)))  # at or below the base: no-op
        assert store.statistics().writes == writes + 1
        assert log.first_index() == 4 and log.last_index() == 5


def test_groups_are_created_once_and_looked_up_by_id(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        with pytest.raises(UnknownGroupError):
            store.group(4)
        log = store.bootstrap(4, MEMBERSHIP)
        assert store.group(4) is log
        with pytest.raises(GroupExistsError):
            store.bootstrap(4, MEMBERSHIP)
        for bad in (-1, 2**64 - 1):
            with pytest.raises(ValueError):
                store.group(bad)
        assert store.group_ids() == [4]
        assert (log.first_index(), log.last_index(), log.term(0)) == (1, 0, 0)
        assert log.snapshot() == Snapshot(SnapshotMeta(0, 0, MEMBERSHIP))
        assert log.statistics().last_index == 0


def test_an_environment_of_another_kind_is_refused(tmp_path: Path) -> None:
    with lmdb.open(str(tmp_path / "env"), max_dbs=3) as env:
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:
            txn.put(b"something", b"else")
    with pytest.raises(StoreLayoutError):
        LogStore(tmp_path / "env")


def test_a_failed_commit_stops_the_writer_and_keeps_acknowledged_writes(tmp_path: Path) -> None:
    """A full map fails the batch: later writes are refused, reads keep answering from the
    committed state, and a reopened (larger) store holds exactly the acknowledged writes."""
    path = tmp_path / "env"
    store = LogStore(path, map_size_bytes=2 * 1024 * 1024)
    log = store.bootstrap(1, MEMBERSHIP)
    log.save(HardState(1, 0, 1), [_entry(1, 1)], None)
    log.sync()
    log.save(None, [_entry(1, i, 4096) for i in range(2, 1000)], None)
    with pytest.raises(WriterFailedError):
        log.sync()
    with pytest.raises(WriterFailedError):
        log.save(None, [_entry(1, 2)], None)
    assert log.last_index() == 1 and log.entries(1, 2, 2**62) == [_entry(1, 1)]
    assert store.statistics().failed
    with pytest.raises(WriterFailedError):
        store.close()
    with LogStore(path) as store:
        log = store.group(1)
        assert (log.last_index(), log.initial_state()) == (1, HardState(1, 0, 1))
