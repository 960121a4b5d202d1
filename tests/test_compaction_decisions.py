"""Log compaction, pure parts: the batch rewrite, the step planner, and replicas that end identical.

The last group of tests simulates what happens on real nodes: a leader runs
compaction passes (index the dirty keys, plan bounded steps, apply each),
while replicas receive each batch as the leader stored it at some random
moment (original, partly or fully compacted — the mixes a lagging follower
sees) and then apply every step themselves. Every replica must end with the
leader's bytes, and a read from the beginning must give the latest value of
every key. Random workloads are seeded; the seed is in the test id.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from millpond import record_batch as rb
from millpond.node.compaction import (
    KeyIndex,
    compaction_point,
    dirty_enough,
    drop_records,
    plan_step,
    to_ranges,
)
from millpond.node.partition_control import Compact, decode_control, encode_control
from millpond.record_batch import Record, decode_batch, encode_batch, retain_records, scan_keys, stamp

T0 = 1_700_000_000_000


def batch(base: int, records: Sequence[Record], epoch: int = 3) -> bytes:
    return stamp(encode_batch(records), base, epoch)


def plain(data: bytes) -> list[tuple[int, bytes | None, bytes | None, int | None, tuple[object, ...]]]:
    _, records = decode_batch(data)
    return [(r.offset, r.key, r.value, r.timestamp_ms, tuple(r.headers)) for r in records]


# --- the codec: retain_records, scan_keys, null_key_index ------------------------------------------
def test_retain_keeps_offsets_header_fields_and_a_valid_crc() -> None:
    records = [Record(b"k%d" % i, None if i == 2 else b"v" * i, (("h", b"x"), ("g", None)) if i % 2 else (),
                      T0 + 7 * i) for i in range(6)]
    original = stamp(encode_batch(records, producer_id=7, producer_epoch=2, base_sequence=40), 100, 5)
    rewritten = retain_records(original, [True, False, True, False, False, True])
    rb.verify_crc(rewritten)
    header = rb.parse_header(rewritten)
    before = rb.parse_header(original)
    assert header.compacted and not before.compacted
    assert header.record_count == 3
    assert (header.base_offset, header.leader_epoch, header.last_offset_delta, header.next_offset) == \
        (100, 5, 5, 106)
    assert (header.first_timestamp_ms, header.max_timestamp_ms, header.producer_id, header.producer_epoch,
            header.base_sequence) == (T0, T0 + 35, 7, 2, 40)
    assert plain(rewritten) == [row for row in plain(original) if row[0] in (100, 102, 105)]


def test_retain_nothing_leaves_an_empty_header_only_batch_that_still_ends_where_it_did() -> None:
    original = batch(10, [Record(b"a", b"1", (), T0), Record(b"b", b"2", (), T0)])
    empty = retain_records(original, [False, False])
    assert len(empty) == rb.BATCH_HEADER_BYTES
    header, records = decode_batch(empty)
    assert records == [] and header.record_count == 0 and header.next_offset == 12 and header.compacted


def test_retain_composes_whatever_the_order() -> None:
    rng = random.Random(5)
    records = [Record(bytes([rng.randrange(4)]), rng.choice([None, b"x" * rng.randrange(9)]),
                      tuple((f"h{j}", b"y") for j in range(rng.randrange(3))), T0 + rng.randrange(50))
               for _ in range(40)]
    original = batch(1000, records)
    for _ in range(50):
        first = [rng.random() < 0.7 for _ in records]
        second = [rng.random() < 0.7 for _ in records]
        both = [a and b for a, b in zip(first, second, strict=True)]
        pairs = list(zip(first, second, strict=True))
        once = retain_records(retain_records(original, first), [b for a, b in pairs if a])
        other = retain_records(retain_records(original, second), [a for a, b in pairs if b])
        assert once == other == retain_records(original, both)
    compacted = retain_records(original, [True] * 40)
    assert retain_records(compacted, [True] * 40) == compacted  # a no-op on a compacted batch


def test_retain_refuses_a_wrong_mask_and_a_damaged_batch() -> None:
    original = batch(0, [Record(b"a", b"1", (), T0)])
    with pytest.raises(ValueError, match="1 records"):
        retain_records(original, [True, False])
    damaged = bytearray(original)
    damaged[-1] ^= 1
    with pytest.raises(rb.CorruptBatch):
        retain_records(bytes(damaged), [False])


def test_scan_keys_reads_offsets_keys_tombstones_and_timestamps() -> None:
    data = batch(50, [Record(b"a", b"1", (), T0), Record(None, b"2", (), T0 + 3),
                      Record(b"c", None, (), T0 + 1)])
    scan = scan_keys(retain_records(data, [True, False, True]))
    assert list(scan.offsets) == [50, 52]
    assert scan.keys == [b"a", b"c"] and scan.tombstones == [False, True]
    assert list(scan.timestamps) == [T0, T0 + 1]


def test_null_key_index_reads_only_the_key_length_column() -> None:
    keyed = encode_batch([Record(b"a", None, (), T0), Record(b"", b"v", (), T0)])
    assert rb.null_key_index(keyed, 2) == -1  # an empty key is a key
    keyless = encode_batch([Record(b"a", b"1", (), T0), Record(None, b"2", (), T0)])
    assert rb.null_key_index(keyless, 2) == 1


def test_a_producer_cannot_set_the_compacted_attribute() -> None:
    data = bytearray(encode_batch([Record(b"a", b"1", (), T0)]))
    data[25] |= rb.ATTRIBUTE_COMPACTED
    data[20:24] = rb.compute_crc(data).to_bytes(4, "big")
    with pytest.raises(rb.InvalidBatch, match="attribute"):
        rb.validate_batch(bytes(data))


# --- decisions ------------------------------------------------------------------------------------
def test_compaction_point_stops_at_the_first_young_batch() -> None:
    bases, stamps = [0, 10, 20, 30], [T0, T0 + 100, T0 + 5000, T0]
    assert compaction_point(bases, stamps, 40, 0, T0 + 6000, 1000) == 40
    assert compaction_point(bases, stamps, 40, 0, T0 + 5500, 1000) == 20
    assert compaction_point(bases, stamps, 40, 0, T0 + 5500, 0) == 40
    assert compaction_point(bases, stamps, 40, 3, T0 + 5500, 1000) == 40  # resumes past known-old batches


def test_dirty_enough() -> None:
    assert dirty_enough(50, 100, 50) and not dirty_enough(49, 100, 50)
    assert not dirty_enough(0, 0, 0)


def test_to_ranges() -> None:
    assert to_ranges([1, 2, 3, 7, 9, 10]) == ((1, 3), (7, 1), (9, 2))
    assert to_ranges([]) == ()


def test_key_index_keeps_latest_and_refuses_to_grow_past_its_limit() -> None:
    index = KeyIndex(keys_max=2)
    assert index.add(scan_keys(batch(0, [Record(b"a", b"1", (), T0), Record(b"a", b"2", (), T0)])))
    assert index.latest == {b"a": 1}
    assert index.add(scan_keys(batch(2, [Record(b"b", b"1", (), T0), Record(None, b"x", (), T0)])))
    assert not index.add(scan_keys(batch(4, [Record(b"c", b"1", (), T0)])))
    assert index.latest == {b"a": 1, b"b": 2}
    two_keys = batch(0, [Record(b"x", b"", (), T0), Record(b"y", b"", (), T0)])
    assert KeyIndex(keys_max=1).add(scan_keys(two_keys))  # an empty index always takes one batch


def test_plan_step_drops_superseded_records_and_expired_tombstones_only() -> None:
    scans = [scan_keys(batch(0, [
        Record(b"a", b"1", (), T0),          # 0: superseded by 3
        Record(b"b", None, (), T0),          # 1: latest, expired tombstone
        Record(None, b"keyless", (), T0),    # 2: keyless: kept
        Record(b"a", b"2", (), T0),          # 3: latest of a
        Record(b"c", None, (), T0 + 900),    # 4: latest, tombstone not yet expired
        Record(b"d", b"1", (), T0),          # 5: clean section key, not indexed: latest
    ]))]
    latest = {b"a": 3, b"b": 1, b"c": 4}
    plan = plan_step(scans, latest, dirty_start=0, time_ms=T0 + 1000, delete_retention_ms=500)
    assert plan.drops == ((0, 2),)  # 0 and 1
    assert plan.dropped == 2 and plan.tombstone_due_ms == T0 + 900 + 500 + 1
    # clean section: d at offset 5 below dirty_start is its key's latest; e tombstone expires
    clean = [scan_keys(batch(0, [Record(b"d", b"1", (), T0), Record(b"e", None, (), T0)]))]
    assert plan_step(clean, {}, dirty_start=10, time_ms=T0 + 1000, delete_retention_ms=0).drops == ((1, 1),)


def test_drop_records_is_idempotent_and_ignores_batches_it_does_not_touch() -> None:
    data = batch(20, [Record(b"k", b"%d" % i, (), T0) for i in range(5)])
    drops = ((10, 10), (21, 2), (40, 1))  # 10..19 lie before the batch
    once = drop_records(data, drops)
    assert once is not None and [row[0] for row in plain(once)] == [20, 23, 24]
    assert drop_records(once, drops) is None
    assert drop_records(data, ((0, 20),)) is None and drop_records(data, ((25, 3),)) is None
    assert drop_records(data, ()) is None


# --- replicas end identical, and reading gives the latest value per key ----------------------------
def workload(rng: random.Random, batches: int) -> list[bytes]:
    keys = [b"key-%d" % i for i in range(rng.randint(2, 12))]
    out: list[bytes] = []
    offset = 0
    clock = T0
    for _ in range(batches):
        records = []
        for _ in range(rng.randint(1, 8)):
            clock += rng.randint(0, 40)
            key = None if rng.random() < 0.03 else rng.choice(keys)
            value = None if rng.random() < 0.2 else b"v%d" % rng.randrange(10**6)
            records.append(Record(key, value, (), clock))
        out.append(batch(offset, records, epoch=rng.randint(1, 4)))
        offset += len(records)
    return out


def materialise(batches: Sequence[bytes]) -> dict[bytes, bytes]:
    """What a consumer reading from the beginning ends up with (tombstones delete)."""
    state: dict[bytes, bytes] = {}
    for data in batches:
        for _, key, value, _, _ in plain(data):
            if key is None:
                continue
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


def run_leader(rng: random.Random, original: list[bytes], delete_retention_ms: int
               ) -> tuple[list[list[bytes]], list[Compact]]:
    """Compaction passes as the log cleaner runs them; returns every state of the leader's store
    (after each step) and the steps. Planning reads batches as they were at a random earlier state:
    a pending rewrite of the store must not change the outcome."""
    history = [list(original)]
    steps: list[Compact] = []
    ends = [scan_keys(b).header.next_offset for b in original]
    clean = 0
    for pass_number in range(rng.randint(1, 4)):
        upto = ends[rng.randrange(len(ends))] if pass_number < 3 else ends[-1]
        upto = max(upto, clean)
        time_ms = T0 + 200 * (pass_number + 1) * rng.randint(1, 20)
        index = KeyIndex(keys_max=10**6)
        for data in history[-1]:
            scan = scan_keys(data)
            if clean <= scan.header.base_offset and scan.header.next_offset <= upto:
                index.add(scan)
        position = 0
        while position < len(original) and ends[position] <= upto:
            chunk = rng.randint(1, 4)
            members = [i for i in range(position, min(position + chunk, len(original))) if ends[i] <= upto]
            scans = [scan_keys(history[rng.randrange(len(history))][i]) for i in members]
            plan = plan_step(scans, index.latest, clean, time_ms, delete_retention_ms)
            start, end = scan_keys(original[members[0]]).header.base_offset, ends[members[-1]]
            position = members[-1] + 1
            if not plan.drops:
                continue
            step = decode_control(encode_control(Compact(upto, time_ms, start, end, plan.drops)))
            steps.append(step)
            history.append(apply_step(history[-1], step))
        clean = upto
    return history, steps


def apply_step(batches: list[bytes], step: Compact) -> list[bytes]:
    """What PartitionMachine._compact and the store's rewrite do to a replica's batches."""
    out = []
    for data in batches:
        header = rb.parse_header(data)
        inside = step.start_offset <= header.base_offset and header.next_offset <= step.end_offset
        new = drop_records(data, step.drops) if inside else None
        out.append(data if new is None else new)
    return out


@pytest.mark.parametrize("seed", range(60))
def test_replicas_that_receive_any_mix_of_compacted_batches_end_identical(seed: int) -> None:
    rng = random.Random(seed)
    original = workload(rng, rng.randint(3, 30))
    history, steps = run_leader(rng, original, delete_retention_ms=rng.choice([0, 300, 2000, 10**9]))
    final = history[-1]
    for _ in range(4):
        # A follower got batch i when the leader had applied some number of steps; a lagging one
        # gets late batches in compacted form and early ones as produced.
        received = [history[rng.randrange(len(history))][i] for i in range(len(original))]
        for step in steps:
            received = apply_step(received, step)
        assert received == final, f"seed={seed}"
    again = final
    for step in steps:  # applying everything twice (a restart replays the log) changes nothing
        again = apply_step(again, step)
    assert again == final
    assert materialise(final) == materialise(original), f"seed={seed}: compaction changed what readers see"
    for before, after in zip(original, final, strict=True):
        assert rb.parse_header(before).next_offset == rb.parse_header(after).next_offset


@pytest.mark.parametrize("seed", range(20))
def test_a_complete_pass_leaves_one_record_per_key_and_expires_old_tombstones(seed: int) -> None:
    rng = random.Random(1000 + seed)
    original = workload(rng, 20)
    end = scan_keys(original[-1]).header.next_offset
    index = KeyIndex(keys_max=10**6)
    scans = [scan_keys(data) for data in original]
    for scan in scans:
        index.add(scan)
    time_ms = T0 + 10**7
    plan = plan_step(scans, index.latest, 0, time_ms, delete_retention_ms=0)
    final = apply_step(original, Compact(end, time_ms, 0, end, plan.drops))
    keys = [row[1] for data in final for row in plain(data) if row[1] is not None]
    assert len(keys) == len(set(keys))
    assert all(row[2] is not None for data in final for row in plain(data) if row[1] is not None)
    assert materialise(final) == materialise(original)
