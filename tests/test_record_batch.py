"""The record batch codec: round trips, the pinned byte layout, every rejection, stamping, framing.

Random workloads are seeded; a failing seed is in the test id.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest

from millpond import limits
from millpond import record_batch as rb
from millpond.record_batch import (
    BATCH_HEADER_BYTES,
    CorruptBatch,
    InvalidBatch,
    InvalidRecords,
    Record,
    batch_size_bytes,
    compute_crc,
    decode_batch,
    encode_batch,
    iter_batches,
    parse_header,
    record_size_bytes,
    stamp,
    stamp_into,
    validate_batch,
    verify_crc,
)

NOW_MS = 1_700_000_000_000

# Byte offsets of the header fields (docs/record-format.md, "Batch header").
MAGIC_AT, VERSION_AT, LENGTH_AT, BASE_OFFSET_AT, LEADER_EPOCH_AT, CRC_AT = 0, 3, 4, 8, 16, 20
ATTRIBUTES_AT, PRODUCER_EPOCH_AT, LAST_OFFSET_DELTA_AT = 24, 26, 28
FIRST_TIMESTAMP_AT, MAX_TIMESTAMP_AT, PRODUCER_ID_AT, BASE_SEQUENCE_AT, RECORD_COUNT_AT = 32, 40, 48, 56, 60


# --- helpers ----------------------------------------------------------------
def put(buf: bytearray, at: int, fmt: str, value: object) -> None:
    struct.pack_into(">" + fmt, buf, at, value)


def recrc(buf: bytearray) -> bytearray:
    """Make the CRC match again after a deliberate edit, so the check under test is the one that fires."""
    put(buf, CRC_AT, "I", compute_crc(buf))
    return buf


def plain(records: list[Record]) -> list[tuple[object, ...]]:
    """Records as comparable tuples (headers normalised to a tuple of tuples)."""
    return [(r.key, r.value, tuple(map(tuple, r.headers)), r.timestamp_ms) for r in records]


def random_bytes(rng: random.Random, null_chance: float = 0.15) -> bytes | None:
    roll = rng.random()
    if roll < null_chance:
        return None
    if roll < null_chance + 0.1:
        return b""
    return rng.randbytes(rng.choice((1, 7, 100, 1000)))


HEADER_NAMES = ["trace-id", "", "ключ", "名前", "emoji-🐟", "content-type"]


def random_records(rng: random.Random, count: int) -> list[Record]:
    timestamps: Callable[[], int] = rng.choice(
        [
            lambda: NOW_MS + rng.randrange(-5_000, 5_000),
            lambda: rng.choice((0, 1, rb.timestamp_ms_max, rb.timestamp_ms_max - 1)),
            lambda: rng.randrange(0, rb.timestamp_ms_max + 1),
        ]
    )
    records = []
    for _ in range(count):
        headers = [
            (rng.choice(HEADER_NAMES), random_bytes(rng, 0.3)) for _ in range(rng.choice((0, 0, 0, 1, 3)))
        ]
        records.append(Record(random_bytes(rng), random_bytes(rng), headers, timestamps()))
    return records


def batch(count: int = 3, **kwargs: object) -> bytes:
    records = [Record(b"k%d" % i, b"value-%d" % i, (), NOW_MS + i) for i in range(count)]
    return encode_batch(records, **kwargs)  # type: ignore[arg-type]


# --- round trips -----------------------------------------------------------
@pytest.mark.parametrize("seed", range(40))
def test_roundtrip_random_records(seed: int) -> None:
    rng = random.Random(seed)
    records = random_records(rng, rng.choice((1, 2, 17, 300)))
    encoded = encode_batch(records)
    assert len(encoded) == batch_size_bytes(records)
    header = validate_batch(encoded)
    assert header.record_count == len(records)
    assert header.first_timestamp_ms == records[0].timestamp_ms
    assert header.max_timestamp_ms == max(r.timestamp_ms for r in records)  # type: ignore[type-var]

    base_offset = rng.randrange(0, 2**40)
    stamped = stamp(encoded, base_offset, 5)
    decoded_header, decoded = decode_batch(stamped)
    assert plain(decoded) == plain(records)
    assert [r.offset for r in decoded] == list(range(base_offset, base_offset + len(records)))
    assert decoded_header.base_offset == base_offset
    assert decoded_header.last_offset == base_offset + len(records) - 1


def test_null_and_empty_are_different() -> None:
    records = [Record(None, None), Record(b"", b""), Record(None, b""), Record(b"", None)]
    _, decoded = decode_batch(encode_batch(records, timestamp_ms=NOW_MS))
    assert [(r.key, r.value) for r in decoded] == [(None, None), (b"", b""), (None, b""), (b"", None)]


def test_headers_keep_order_duplicates_and_null_values() -> None:
    headers = [("a", b"1"), ("a", None), ("", b""), ("ünïcødé", b"\x00\xff"), ("a", b"3")]
    records = [Record(b"k", b"v", headers), Record(b"k", b"v"), Record(None, None, headers[:1])]
    _, decoded = decode_batch(encode_batch(records, timestamp_ms=NOW_MS))
    assert [list(r.headers) for r in decoded] == [headers, [], headers[:1]]


def test_same_header_count_on_every_record() -> None:
    records = [Record(None, b"v", [("h1", b"%d" % i), ("h2", None)], NOW_MS) for i in range(50)]
    _, decoded = decode_batch(encode_batch(records))
    assert plain(decoded) == plain(records)


def test_missing_timestamps_take_the_batch_timestamp() -> None:
    records = [Record(b"a", b"1"), Record(b"b", b"2", timestamp_ms=NOW_MS - 10)]
    header, decoded = decode_batch(encode_batch(records, timestamp_ms=NOW_MS))
    assert [r.timestamp_ms for r in decoded] == [NOW_MS, NOW_MS - 10]
    assert (header.first_timestamp_ms, header.max_timestamp_ms) == (NOW_MS, NOW_MS)


def test_extreme_timestamps_in_one_batch() -> None:
    stamps = [rb.timestamp_ms_max, 0, 1, rb.timestamp_ms_max - 1, 0]
    records = [Record(None, b"x", (), t) for t in stamps]
    encoded = encode_batch(records)
    header = validate_batch(encoded)
    assert (header.first_timestamp_ms, header.max_timestamp_ms) == (rb.timestamp_ms_max, rb.timestamp_ms_max)
    assert [r.timestamp_ms for r in decode_batch(encoded)[1]] == stamps


def test_decode_accepts_bytearray_and_memoryview() -> None:
    encoded = batch(4)
    expected = plain(decode_batch(encoded)[1])
    assert plain(decode_batch(bytearray(encoded))[1]) == expected
    _, decoded = decode_batch(memoryview(b"xx" + encoded)[2:])
    assert plain(decoded) == expected
    assert all(type(r.value) is bytes for r in decoded)


def test_producer_fields_and_flags_roundtrip() -> None:
    encoded = batch(3, producer_id=2**40, producer_epoch=7, base_sequence=1_000, transactional=True)
    header = validate_batch(encoded)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (2**40, 7, 1_000)
    assert header.transactional and not header.control and not header.log_append_time
    assert header.compression == 0
    control = parse_header(batch(1, producer_id=1, producer_epoch=0, control=True))
    assert control.control and not control.transactional


def test_unstamped_batch_has_offset_zero_and_no_leader_epoch() -> None:
    header = parse_header(batch(2))
    assert (header.base_offset, header.leader_epoch, header.version) == (0, -1, 1)


# --- the byte layout, pinned (any implementation must produce these bytes) -
GOLDEN_RECORDS = [
    Record(b"k", b"v1", [("h", b"x")], 1_700_000_000_000),
    Record(None, None, (), 1_700_000_000_005),
]
GOLDEN_HEX = (
    # header: magic "MPB", version 1, length 125, base offset 100, leader epoch 3, CRC-32C
    "4d504201"
    "0000007d"
    "0000000000000064"
    "00000003"
    "a11f2875"
    # attributes 0x0000, producer epoch 1, last offset delta 1
    "0000"
    "0001"
    "00000001"
    # first timestamp, max timestamp (ms)
    "0000018bcfe56800"
    "0000018bcfe56805"
    # producer id 7, base sequence 42, record count 2
    "0000000000000007"
    "0000002a"
    "00000002"
    # timestamp deltas (i64 x 2): 0, 5
    "0000000000000000"
    "0000000000000005"
    # offset deltas, key lengths, value lengths, header counts (i32 x 2 each)
    "00000000"
    "00000001"
    "00000001"
    "ffffffff"
    "00000002"
    "ffffffff"
    "00000001"
    "00000000"
    # header key lengths, header value lengths (i32 x 1 each)
    "00000001"
    "00000001"
    # key bytes "k", value bytes "v1", header key bytes "h", header value bytes "x"
    "6b"
    "7631"
    "68"
    "78"
)


def test_golden_batch_bytes() -> None:
    encoded = encode_batch(GOLDEN_RECORDS, producer_id=7, producer_epoch=1, base_sequence=42)
    assert stamp(encoded, 100, 3).hex() == GOLDEN_HEX
    header, records = decode_batch(bytes.fromhex(GOLDEN_HEX))
    assert header.length == 125 == len(bytes.fromhex(GOLDEN_HEX))
    assert [r.offset for r in records] == [100, 101]
    assert plain(records) == plain(GOLDEN_RECORDS)


def test_header_field_offsets() -> None:
    buf = bytearray(batch(1))
    for at, fmt, value in [
        (BASE_OFFSET_AT, "q", -2),
        (LEADER_EPOCH_AT, "i", 9),
        (ATTRIBUTES_AT, "H", 0x30),
        (PRODUCER_EPOCH_AT, "h", 11),
        (LAST_OFFSET_DELTA_AT, "i", 12),
        (FIRST_TIMESTAMP_AT, "q", 13),
        (MAX_TIMESTAMP_AT, "q", 14),
        (PRODUCER_ID_AT, "q", 15),
        (BASE_SEQUENCE_AT, "i", 16),
        (RECORD_COUNT_AT, "i", 1),
    ]:
        put(buf, at, fmt, value)
    header = parse_header(buf)
    assert (header.base_offset, header.leader_epoch, header.attributes) == (-2, 9, 0x30)
    assert (header.producer_epoch, header.last_offset_delta) == (11, 12)
    assert (header.first_timestamp_ms, header.max_timestamp_ms) == (13, 14)
    assert (header.producer_id, header.base_sequence, header.record_count) == (15, 16, 1)
    assert bytes(buf[MAGIC_AT:VERSION_AT]) == b"MPB" and buf[VERSION_AT] == 1
    assert struct.unpack_from(">i", buf, LENGTH_AT)[0] == len(buf)


# --- what the CRC covers ---------------------------------------------------
def test_crc_covers_every_byte_from_attributes_on() -> None:
    encoded = encode_batch(GOLDEN_RECORDS, producer_id=7, producer_epoch=1, base_sequence=42)
    for position in range(rb.CRC_START, len(encoded)):
        damaged = bytearray(encoded)
        damaged[position] ^= 0x01
        with pytest.raises(CorruptBatch) as caught:
            validate_batch(damaged)
        assert caught.value.reason == "crc"
        assert caught.value.expected == parse_header(encoded).crc
        assert caught.value.actual == compute_crc(damaged) != caught.value.expected
        assert f"0x{caught.value.expected:08x}" in str(caught.value)
        with pytest.raises(CorruptBatch):
            decode_batch(damaged)


def test_crc_does_not_cover_the_stamped_fields() -> None:
    damaged = bytearray(batch(2))
    for position in range(BASE_OFFSET_AT, CRC_AT):
        damaged[position] ^= 0xFF
    verify_crc(damaged)  # base offset and leader epoch are the broker's to write
    validate_batch(damaged)


def test_flipped_crc_field_is_corruption() -> None:
    damaged = bytearray(batch(2))
    damaged[CRC_AT + 3] ^= 0x80
    with pytest.raises(CorruptBatch):
        verify_crc(damaged)


def test_decode_can_skip_the_crc() -> None:
    damaged = bytearray(batch(2))
    damaged[-1] ^= 0x01  # last byte of the last value
    _, records = decode_batch(damaged, verify=False)
    assert records[-1].value == b"value-0"  # "value-1" with its last bit flipped


# --- every rejection of validate_batch / parse_header -----------------------
def reason_of(buf: bytes | bytearray, **kwargs: int) -> str:
    with pytest.raises(InvalidBatch) as caught:
        validate_batch(buf, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    return caught.value.reason


def test_too_short() -> None:
    encoded = batch(2)
    for size in (0, 1, 7, BATCH_HEADER_BYTES - 1):
        assert reason_of(encoded[:size]) == "too_short"
    with pytest.raises(InvalidBatch, match="too short: 10 bytes"):
        parse_header(encoded[:10])
    with pytest.raises(InvalidBatch, match="too short"):
        verify_crc(encoded[:10])


def test_truncated_batch_is_a_length_mismatch() -> None:
    encoded = batch(2)
    with pytest.raises(
        InvalidBatch, match=f"header says {len(encoded)} bytes, buffer holds {len(encoded) - 1}"
    ):
        validate_batch(encoded[:-1])
    assert reason_of(encoded + b"\x00") == "length"


def test_length_field_mismatch() -> None:
    buf = bytearray(batch(2))
    put(buf, LENGTH_AT, "i", len(buf) + 4)
    assert reason_of(buf) == "length"
    put(buf, LENGTH_AT, "i", -1)
    assert reason_of(buf) == "length"


def test_wrong_magic() -> None:
    buf = bytearray(batch(1))
    buf[0:3] = b"\x00\x00\x00"
    with pytest.raises(InvalidBatch, match="wrong magic") as caught:
        validate_batch(buf)
    assert caught.value.reason == "magic"


def test_unsupported_version() -> None:
    buf = bytearray(batch(1))
    buf[VERSION_AT] = 2
    assert reason_of(buf) == "version"
    with pytest.raises(InvalidBatch, match="unsupported batch version 2"):
        decode_batch(buf)


def test_too_large_for_the_topic() -> None:
    encoded = batch(3)
    assert reason_of(encoded, max_bytes=len(encoded) - 1) == "too_large"
    validate_batch(encoded, max_bytes=len(encoded))


def test_record_count_out_of_range() -> None:
    encoded = batch(3)
    assert reason_of(encoded, max_records=2) == "count"
    validate_batch(encoded, max_records=3)
    buf = bytearray(encoded)
    put(buf, RECORD_COUNT_AT, "i", -1)
    assert reason_of(recrc(buf)) == "count"
    put(buf, RECORD_COUNT_AT, "i", 10_000)  # more records than the bytes could hold
    with pytest.raises(InvalidBatch, match="record count 10000 out of range"):
        parse_header(recrc(buf))


def test_empty_batch_parses_but_is_not_accepted() -> None:
    buf = bytearray(batch(1))[:BATCH_HEADER_BYTES]
    put(buf, LENGTH_AT, "i", BATCH_HEADER_BYTES)
    put(buf, RECORD_COUNT_AT, "i", 0)
    put(buf, LAST_OFFSET_DELTA_AT, "i", -1)
    recrc(buf)
    header, records = decode_batch(buf)
    assert header.record_count == 0 and records == []
    with pytest.raises(InvalidBatch, match=r"record count 0 out of range \[1, "):
        validate_batch(buf)


def test_count_mismatch_with_last_offset_delta() -> None:
    buf = bytearray(batch(3))
    put(buf, LAST_OFFSET_DELTA_AT, "i", 3)
    with pytest.raises(InvalidBatch, match="count mismatch: last offset delta 3 with 3 records"):
        validate_batch(recrc(buf))


def test_count_mismatch_with_the_records() -> None:
    buf = bytearray(batch(3))
    put(buf, RECORD_COUNT_AT, "i", 2)
    put(buf, LAST_OFFSET_DELTA_AT, "i", 1)
    recrc(buf)
    assert reason_of(buf) == "records"
    with pytest.raises(InvalidBatch) as caught:  # the columns are now read at the wrong places
        decode_batch(buf)
    assert caught.value.reason == "records"


def test_attributes() -> None:
    for bits in (0x0001, 0x0004):  # a compression codec
        buf = recrc(bytearray(batch(1)))
        put(buf, ATTRIBUTES_AT, "H", bits)
        with pytest.raises(InvalidBatch, match="compression codec"):
            validate_batch(recrc(buf))
        with pytest.raises(InvalidBatch, match="compression codec") as caught:
            decode_batch(buf)
        assert caught.value.reason == "attributes"
    buf = bytearray(batch(1))
    put(buf, ATTRIBUTES_AT, "H", 0x0040)
    with pytest.raises(InvalidBatch, match="unknown attribute bits 0x0040"):
        validate_batch(recrc(buf))
    decode_batch(buf)  # readers ignore bits they do not know


@pytest.mark.parametrize(
    ("at", "fmt", "value"),
    [
        (PRODUCER_ID_AT, "q", -2),
        (PRODUCER_EPOCH_AT, "h", -2),
        (BASE_SEQUENCE_AT, "i", -2),
        (BASE_SEQUENCE_AT, "i", 5),  # a sequence without a producer id
        (PRODUCER_EPOCH_AT, "h", 0),  # an epoch without a producer id
        (ATTRIBUTES_AT, "H", rb.ATTRIBUTE_TRANSACTIONAL),  # a transaction without a producer id
    ],
)
def test_producer_fields(at: int, fmt: str, value: int) -> None:
    buf = bytearray(batch(2))
    put(buf, at, fmt, value)
    assert reason_of(recrc(buf)) == "producer"


@pytest.mark.parametrize(
    ("first", "latest"),
    [
        (-1, NOW_MS + 2),  # before the epoch
        (NOW_MS + 3, NOW_MS + 2),  # max before first
        (NOW_MS, NOW_MS + 3),  # max is not the records' max
        (NOW_MS, NOW_MS + 1),  # max is below a record's
    ],
)
def test_timestamps_inconsistent(first: int, latest: int) -> None:
    buf = bytearray(batch(3))  # records at NOW_MS, +1, +2
    put(buf, FIRST_TIMESTAMP_AT, "q", first)
    put(buf, MAX_TIMESTAMP_AT, "q", latest)
    with pytest.raises(InvalidBatch, match="timestamps inconsistent") as caught:
        validate_batch(recrc(buf))
    assert caught.value.reason == "timestamps"


def test_first_timestamp_is_not_the_first_records() -> None:
    buf = bytearray(batch(3))  # records at NOW_MS, +1, +2
    put(buf, BATCH_HEADER_BYTES, "q", 1)  # the first record's delta
    with pytest.raises(InvalidBatch, match=r"the first at 1700000000001\), header says first 1700000000000"):
        validate_batch(recrc(buf))


def test_record_timestamp_before_the_epoch() -> None:
    buf = bytearray(batch(3))
    put(buf, BATCH_HEADER_BYTES + 8, "q", -NOW_MS - 1)  # second record's delta
    assert reason_of(recrc(buf)) == "timestamps"


def columns_at(count: int) -> dict[str, int]:
    """Where each record column starts in a batch of ``count`` records."""
    offsets = BATCH_HEADER_BYTES + 8 * count
    return {
        "offset_deltas": offsets,
        "key_lengths": offsets + 4 * count,
        "value_lengths": offsets + 8 * count,
        "header_counts": offsets + 12 * count,
    }


@pytest.mark.parametrize(
    ("column", "index", "value", "message"),
    [
        ("key_lengths", 0, 3, "record columns describe"),
        ("key_lengths", 1, -2, "below -1"),
        ("value_lengths", 2, 0, "record columns describe"),
        ("header_counts", 0, 1, "header"),
        ("header_counts", 1, -1, "header count"),
        ("header_counts", 1, rb.record_headers_max + 1, "header count"),
        ("offset_deltas", 1, 0, "offset deltas"),
        ("offset_deltas", 2, 7, "offset deltas"),
    ],
)
def test_records_that_do_not_add_up(column: str, index: int, value: int, message: str) -> None:
    buf = bytearray(batch(3))
    put(buf, columns_at(3)[column] + 4 * index, "i", value)
    with pytest.raises(InvalidBatch, match=message) as caught:
        validate_batch(recrc(buf))
    assert caught.value.reason == "records"
    with pytest.raises(InvalidBatch, match=message):
        decode_batch(buf)
    validate_batch(buf, check_records=False)  # the header alone is fine


def test_header_key_not_utf8() -> None:
    encoded = encode_batch([Record(None, b"v", [("ab", b"x")], NOW_MS)])
    buf = bytearray(encoded)
    position = buf.rindex(b"abx")
    buf[position] = 0xFF
    with pytest.raises(InvalidBatch, match="not UTF-8"):
        validate_batch(recrc(buf))
    with pytest.raises(InvalidBatch, match="not UTF-8"):
        decode_batch(buf)


def test_header_keys_that_split_a_character() -> None:
    """Two keys whose bytes are valid UTF-8 only together ("é" = c3 a9) are rejected."""
    encoded = encode_batch([Record(None, b"v", [("a", None), ("b", None)], NOW_MS)])
    buf = bytearray(encoded)
    position = buf.rindex(b"ab")
    buf[position : position + 2] = "é".encode()
    with pytest.raises(InvalidBatch, match="not UTF-8"):
        validate_batch(recrc(buf))
    with pytest.raises(InvalidBatch, match="not UTF-8"):
        decode_batch(buf)


def test_compacted_offset_deltas_decode_but_are_not_produced() -> None:
    """A batch whose offset deltas have gaps (as compaction leaves) decodes to those offsets."""
    buf = bytearray(batch(3))
    for index, delta in enumerate((0, 4, 9)):
        put(buf, columns_at(3)["offset_deltas"] + 4 * index, "i", delta)
    put(buf, LAST_OFFSET_DELTA_AT, "i", 9)
    stamp_into(recrc(buf), 1_000, 1)
    header, records = decode_batch(buf)
    assert [r.offset for r in records] == [1_000, 1_004, 1_009]
    assert header.next_offset == 1_010
    with pytest.raises(InvalidBatch, match="count mismatch"):
        validate_batch(buf)


def test_sequential_offset_deltas_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rb, "_SEQUENTIAL_COUNT", 2)  # batches of 3 take the unpacking path
    encoded = stamp(batch(3), 40, 1)
    validate_batch(encoded)
    assert [r.offset for r in decode_batch(encoded)[1]] == [40, 41, 42]


# --- encode-side limits and errors -----------------------------------------
def test_encode_rejects_empty_and_too_many() -> None:
    with pytest.raises(InvalidRecords, match="got 0"):
        encode_batch([])
    with pytest.raises(InvalidRecords, match=f"got {rb.batch_records_max + 1}"):
        encode_batch([Record(None, b"")] * (rb.batch_records_max + 1), timestamp_ms=NOW_MS)


def test_encode_at_the_record_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rb, "batch_records_max", 5)
    encode_batch([Record(None, None, (), NOW_MS)] * 5)
    with pytest.raises(InvalidRecords):
        encode_batch([Record(None, None, (), NOW_MS)] * 6)


def test_encode_rejects_a_batch_over_batch_bytes_max() -> None:
    room = rb.batch_bytes_max - BATCH_HEADER_BYTES - rb.RECORD_OVERHEAD_BYTES
    encoded = encode_batch([Record(None, bytes(room), (), NOW_MS)])
    assert len(encoded) == rb.batch_bytes_max
    validate_batch(encoded)
    with pytest.raises(InvalidRecords, match="more than batch_bytes_max"):
        encode_batch([Record(b"k", bytes(room), (), NOW_MS)])


def test_encode_rejects_bad_timestamps() -> None:
    with pytest.raises(InvalidRecords, match="record 1 has no timestamp_ms"):
        encode_batch([Record(None, b"", (), NOW_MS), Record(None, b"")])
    with pytest.raises(InvalidRecords, match="record 1 has timestamp_ms -1"):
        encode_batch([Record(None, b"", (), 0), Record(None, b"", (), -1)])
    with pytest.raises(InvalidRecords, match="outside"):
        encode_batch([Record(None, b"", (), rb.timestamp_ms_max + 1)])
    with pytest.raises(InvalidRecords, match="outside"):
        encode_batch([Record(None, b"")], timestamp_ms=-5)


def test_encode_rejects_bad_headers() -> None:
    too_many = [("h", None)] * (rb.record_headers_max + 1)
    with pytest.raises(InvalidRecords, match="record 1 has 65 headers"):
        encode_batch([Record(None, b""), Record(None, b"", too_many)], timestamp_ms=NOW_MS)
    encode_batch([Record(None, b"", too_many[1:])], timestamp_ms=NOW_MS)

    long_key = "é" * (rb.header_key_bytes_max // 2 + 1)  # 2 UTF-8 bytes each
    with pytest.raises(InvalidRecords, match=r"record 2: header key of 258 UTF-8 bytes"):
        encode_batch(
            [
                Record(None, b"", [("a", None)]),
                Record(None, b""),
                Record(None, b"", [("b", None), (long_key, None)]),
            ],
            timestamp_ms=NOW_MS,
        )
    encode_batch([Record(None, b"", [("x" * rb.header_key_bytes_max, None)])], timestamp_ms=NOW_MS)

    bad_headers: list[list[tuple[object, ...]]] = [
        [(b"bytes-key", b"v")],
        [("k", b"v", b"extra")],
        [("only-key",)],
        [([], b"v")],
    ]
    for bad in bad_headers:
        with pytest.raises(InvalidRecords, match="headers must be"):
            encode_batch([Record(None, b"", bad)], timestamp_ms=NOW_MS)  # type: ignore[arg-type]


def test_encode_rejects_bad_producer_fields() -> None:
    for kwargs in (
        {"producer_id": -2},
        {"producer_id": 1, "producer_epoch": 2**15},
        {"producer_id": 1, "producer_epoch": 0, "base_sequence": 2**31},
        {"base_sequence": 0},
        {"transactional": True},
    ):
        with pytest.raises(InvalidRecords):
            batch(1, **kwargs)


def test_encode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        encode_batch([Record("text", b"v", (), NOW_MS)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_batch([Record(None, 5, (), NOW_MS)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_batch([Record(None, b"", [("h", "text")], NOW_MS)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be int"):
        encode_batch([Record(None, b"", (), NOW_MS), Record(None, b"", (), NOW_MS + 0.5)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be int"):
        batch(1, producer_id=1.0, producer_epoch=0)


def test_limits_agree_with_the_raft_entry_limit() -> None:
    assert rb.batch_bytes_max <= limits.raft_entry_bytes_max
    assert rb.batch_records_max * rb.RECORD_OVERHEAD_BYTES >= rb.batch_bytes_max // 2  # neither limit is moot


# --- sizes -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_size_helpers_are_exact(seed: int) -> None:
    rng = random.Random(1_000 + seed)
    records = random_records(rng, rng.randrange(1, 50))
    size = BATCH_HEADER_BYTES
    for count, record in enumerate(records, start=1):
        size += record_size_bytes(record.key, record.value, record.headers)
        assert size == len(encode_batch(records[:count])) == batch_size_bytes(records[:count])


def test_record_size_bytes_counts_utf8() -> None:
    assert record_size_bytes(None, None) == rb.RECORD_OVERHEAD_BYTES
    assert record_size_bytes(b"k", b"vv", [("é", None), ("", b"abc")]) == 24 + 3 + 8 + 2 + 8 + 3


# --- stamping ------------------------------------------------------------------
def test_stamp_keeps_the_crc_and_moves_offsets() -> None:
    encoded = batch(4)
    first = stamp(encoded, 1_000, 2)
    second = stamp(first, 2**62, 2**31 - 1)
    for stamped, base, epoch in ((first, 1_000, 2), (second, 2**62, 2**31 - 1)):
        verify_crc(stamped)
        header = validate_batch(stamped)
        assert header.crc == parse_header(encoded).crc
        assert (header.base_offset, header.leader_epoch) == (base, epoch)
        assert [r.offset for r in decode_batch(stamped)[1]] == [base, base + 1, base + 2, base + 3]
        assert stamped[CRC_AT:] == encoded[CRC_AT:] and stamped[:BASE_OFFSET_AT] == encoded[:BASE_OFFSET_AT]
    assert type(first) is bytes and encoded == batch(4)  # the input is untouched


def test_stamp_into_a_bytearray_and_a_memoryview() -> None:
    buf = bytearray(batch(2))
    stamp_into(buf, 77, 4)
    assert decode_batch(buf)[0].base_offset == 77
    framed = bytearray(b"..") + buf
    stamp_into(memoryview(framed)[2:], 88, 5)
    header = validate_batch(framed[2:])
    assert (header.base_offset, header.leader_epoch) == (88, 5)


def test_stamp_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(struct.error):
        stamp(batch(1), 2**63, 0)
    with pytest.raises(struct.error):
        stamp(batch(1), 0, 2**31)


def test_stamp_log_append_time() -> None:
    encoded = batch(3)
    stamped = stamp(encoded, 10, 1, log_append_time_ms=NOW_MS + 500)
    header = validate_batch(stamped)  # the CRC was recomputed
    assert header.log_append_time and header.max_timestamp_ms == NOW_MS + 500
    assert header.first_timestamp_ms == NOW_MS
    assert [r.timestamp_ms for r in decode_batch(stamped)[1]] == [NOW_MS + 500] * 3


# --- iter_batches ----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_iter_batches_splits_a_fetch_response(seed: int) -> None:
    rng = random.Random(2_000 + seed)
    offset = 0
    stored: list[bytes] = []
    expected: list[tuple[object, ...]] = []
    for _ in range(rng.randrange(1, 8)):
        records = random_records(rng, rng.randrange(1, 20))
        stored.append(stamp(encode_batch(records), offset, 1))
        expected.extend(plain(records))
        offset += len(records)
    response = b"".join(stored)
    views = list(iter_batches(response))
    assert [bytes(v) for v in views] == stored
    decoded = [record for view in views for record in decode_batch(view)[1]]
    assert plain(decoded) == expected
    assert [r.offset for r in decoded] == list(range(offset))


def test_iter_batches_empty() -> None:
    assert list(iter_batches(b"")) == []


def test_iter_batches_truncated_tail() -> None:
    first, second = stamp(batch(2), 0, 1), stamp(batch(3), 2, 1)
    for cut in (1, 7, BATCH_HEADER_BYTES, len(second) - 1):
        seen = []
        with pytest.raises(InvalidBatch, match=f"truncated batch at byte {len(first)}") as caught:
            for view in iter_batches(first + second[:cut]):
                seen.append(bytes(view))
        assert seen == [first] and caught.value.reason == "too_short"


def test_iter_batches_misframed() -> None:
    first = stamp(batch(2), 0, 1)
    with pytest.raises(InvalidBatch, match=f"wrong magic .* at byte {len(first)}"):
        list(iter_batches(first + b"\x00" * 80))
    bad_version = bytearray(first)
    bad_version[VERSION_AT] = 9
    with pytest.raises(InvalidBatch, match="version 9 at byte 0"):
        list(iter_batches(bad_version))
    short_length = bytearray(first)
    put(short_length, LENGTH_AT, "i", 8)
    with pytest.raises(InvalidBatch, match="claims 8 bytes") as caught:
        list(iter_batches(short_length))
    assert caught.value.reason == "length"


def test_error_tree() -> None:
    assert issubclass(CorruptBatch, InvalidBatch)
    assert issubclass(InvalidBatch, ValueError)
    assert issubclass(InvalidRecords, ValueError)
    assert not issubclass(InvalidRecords, InvalidBatch)
