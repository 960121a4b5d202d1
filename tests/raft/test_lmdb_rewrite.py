"""The LMDB store's in-place rewrite of entries (what log compaction uses on committed batches)."""

from __future__ import annotations

import zlib
from pathlib import Path

import lmdb
import pytest

from millpond.invariant import InvariantViolation
from millpond.raft.lmdb_store import LogStore, WriterFailedError
from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, HardState, Snapshot, SnapshotMeta

GROUP = 7
MEMBERSHIP = Membership.of([1, 2, 3])


def _filled(store: LogStore, count: int = 10) -> None:
    log = store.bootstrap(GROUP, MEMBERSHIP)
    entries = [Entry(1 + i // 4, i, EntryKind.CONTROL if i == 5 else EntryKind.DATA, b"data-%d" % i)
               for i in range(1, count + 1)]
    log.save(HardState(term=3, vote=1, commit=count), entries, None)
    log.sync()


def _data(store: LogStore, lo: int, hi: int) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in store.group(GROUP).entries(lo, hi, 1 << 30)]


def test_rewrite_replaces_data_in_place_keeping_index_and_term(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        _filled(store)
        log = store.group(GROUP)
        before = _data(store, 1, 11)
        log.rewrite([(2, lambda data: data.upper()), (3, lambda data: None), (4, lambda data: data)])
        log.sync()
        after = _data(store, 1, 11)
        assert after[1] == (2, 1, b"DATA-2")
        assert after[:1] + after[2:] == before[:1] + before[2:]
        assert log.last_index() == 10 and log.first_index() == 1
        assert store.statistics().entries_rewritten == 1
    with LogStore(tmp_path / "env") as reopened:  # durable, and its stored CRC was recomputed
        assert _data(reopened, 2, 3) == [(2, 1, b"DATA-2")]


def test_rewrites_of_one_entry_compose_in_submission_order(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        _filled(store)
        log = store.group(GROUP)
        log.rewrite([(6, lambda data: data + b"-a")])
        log.rewrite([(6, lambda data: data + b"-b")])  # sees the first rewrite's result
        log.sync()
        assert _data(store, 6, 7) == [(6, 2, b"data-6-a-b")]


def test_rewrite_skips_entries_that_are_compacted_or_gone(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        _filled(store)
        log = store.group(GROUP)
        log.compact(Snapshot(SnapshotMeta(4, 2, MEMBERSHIP), b"snap"))
        log.rewrite([(3, lambda data: b"resurrected"), (12, lambda data: b"beyond"),
                     (7, lambda data: b"seven")])
        log.sync()
        assert log.first_index() == 5
        assert _data(store, 7, 8) == [(7, 2, b"seven")]
        assert store.statistics().entries_rewritten == 1


def test_rewriting_a_control_entry_stops_the_writer(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "env")
    try:
        _filled(store)
        store.group(GROUP).rewrite([(5, lambda data: b"x")])
        with pytest.raises(WriterFailedError) as failure:
            store.flush()
        assert isinstance(failure.value.__cause__, InvariantViolation)
    finally:
        with pytest.raises(WriterFailedError):
            store.close()


def test_rewritten_values_carry_a_valid_store_crc(tmp_path: Path) -> None:
    with LogStore(tmp_path / "env") as store:
        _filled(store)
        store.group(GROUP).rewrite([(9, lambda data: b"nine" * 100)])
        store.flush()
    env = lmdb.open(str(tmp_path / "env"), max_dbs=3, readonly=True)
    try:
        with env.begin(db=env.open_db(b"log", create=False)) as txn:
            value = txn.get(GROUP.to_bytes(8, "big") + (9).to_bytes(8, "big"))
        assert value is not None
        body, crc = value[:-4], int.from_bytes(value[-4:], "big")
        assert zlib.crc32(body) == crc and body.endswith(b"nine" * 100)
    finally:
        env.close()
