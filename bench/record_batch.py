"""Record batch codec throughput: encode, decode, and the broker's validate + stamp.

Run: ``.venv/bin/python bench/record_batch.py [--records 1000] [--repeat 7] [--alternatives]``

Prints, for 1,000-record batches with 10-byte keys and 100-byte or 1 KiB
values (and once with two headers per record):

* client side: encode and decode records/s and MB/s (of encoded batch bytes,
  MB = 10**6 bytes);
* broker side: ``validate_batch`` (framing, CRC, header fields, record
  columns) followed by ``stamp``, in batches/s, and the same with
  ``check_records=False`` (header and CRC only);
* the cost of ``partition_for_key`` for a 10-byte key.

``--alternatives`` also times two per-record encodings that the format did
not adopt (Kafka v2's zigzag varints, and one fixed-width struct per record),
written here as minimal prototypes (no headers, no CRC) so the choice can be
re-measured. Each figure is the best of ``--repeat`` timed runs of ~0.2 s.
"""

from __future__ import annotations

import argparse
import random
import struct
import time
from collections.abc import Callable
from functools import partial

from millpond.partitioner import partition_for_key
from millpond.record_batch import Record, decode_batch, encode_batch, stamp, validate_batch

_RUN_SECONDS = 0.2
_NOW_MS = 1_700_000_000_000


def best_seconds_per_call(fn: Callable[[], object], repeat: int) -> float:
    """Lowest mean seconds per call over ``repeat`` runs of about ``_RUN_SECONDS`` each."""
    calls = 1
    while True:  # calibrate: double until a run takes a quarter of the target
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= _RUN_SECONDS / 4:
            break
        calls *= 2
    calls = max(1, int(calls * _RUN_SECONDS / elapsed))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def make_records(count: int, value_bytes: int, headers: int, rng: random.Random) -> list[Record]:
    header_list = [(f"header-{i}", rng.randbytes(16)) for i in range(headers)]
    return [
        Record(b"key-%06d" % i, rng.randbytes(value_bytes), header_list, _NOW_MS + i // 10)
        for i in range(count)
    ]


def bench_codec(count: int, repeat: int, rng: random.Random) -> dict[str, bytes]:
    print(f"client: {count} records per batch, 10-byte keys; best of {repeat} runs")
    print(
        f"{'case':26s} {'encode rec/s':>13s} {'MB/s':>6s} {'decode rec/s':>13s} {'MB/s':>6s}"
        f" {'µs/rec enc+dec':>15s}"
    )
    batches: dict[str, bytes] = {}
    for name, value_bytes, headers in (
        ("100 B values", 100, 0),
        ("1 KiB values", 1024, 0),
        ("100 B values, 2 headers", 100, 2),
    ):
        records = make_records(count, value_bytes, headers, rng)
        batch = encode_batch(records)
        batches[name] = batch
        encode_s = best_seconds_per_call(partial(encode_batch, records), repeat)
        decode_s = best_seconds_per_call(partial(decode_batch, batch), repeat)
        megabytes = len(batch) / 1e6
        print(
            f"{name:26s} {count / encode_s:13,.0f} {megabytes / encode_s:6.0f}"
            f" {count / decode_s:13,.0f} {megabytes / decode_s:6.0f}"
            f" {(encode_s + decode_s) / count * 1e6:15.2f}"
        )
    return batches


def broker_append(batch: bytes, check_records: bool) -> bytes:
    """What a partition leader does with a produced batch before handing it to Raft."""
    header = validate_batch(batch, check_records=check_records)
    return stamp(batch, 10**6 + header.record_count, 7)


def bench_broker(batches: dict[str, bytes], count: int, repeat: int, rng: random.Random) -> None:
    print()
    print("broker: validate_batch + stamp (full = with record columns; header = check_records=False)")
    print(
        f"{'case':26s} {'full batch/s':>13s} {'MB/s':>6s} {'records/s':>12s}"
        f" {'header batch/s':>15s} {'MB/s':>6s}"
    )
    one = encode_batch(make_records(1, 100, 0, rng))
    for name, batch, records in [*((n, b, count) for n, b in batches.items()), ("1 record, 100 B", one, 1)]:
        full_s = best_seconds_per_call(partial(broker_append, batch, True), repeat)
        header_s = best_seconds_per_call(partial(broker_append, batch, False), repeat)
        megabytes = len(batch) / 1e6
        print(
            f"{name:26s} {1 / full_s:13,.0f} {megabytes / full_s:6.0f} {records / full_s:12,.0f}"
            f" {1 / header_s:15,.0f} {megabytes / header_s:6.0f}"
        )
    key = b"key-000123"
    seconds = best_seconds_per_call(lambda: partition_for_key(key, 12), repeat)
    print(f"\npartition_for_key, 10-byte key: {seconds * 1e6:.2f} µs")


# --- encodings the format did not adopt (minimal prototypes, no headers, no CRC) ---
def _zigzag_varint(value: int, out: bytearray) -> None:
    value = (value << 1) ^ (value >> 63)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_zigzag_varint(buf: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7


def encode_varint_rows(records: list[Record], first: int) -> bytes:
    """Kafka v2 records: varint length, attributes, then zigzag varint fields and the bytes."""
    parts: list[bytes | bytearray] = []
    for index, record in enumerate(records):
        body = bytearray(b"\x00")
        _zigzag_varint(record.timestamp_ms - first, body)  # type: ignore[operator]
        _zigzag_varint(index, body)
        for field in (record.key, record.value):
            if field is None:
                _zigzag_varint(-1, body)
            else:
                _zigzag_varint(len(field), body)
                body += field
        _zigzag_varint(0, body)  # header count
        size = bytearray()
        _zigzag_varint(len(body), size)
        parts += (size, body)
    return b"".join(parts)


def decode_varint_rows(buf: bytes, first: int, base: int) -> list[Record]:
    records = []
    position = 0
    while position < len(buf):
        _, position = _read_zigzag_varint(buf, position)
        position += 1  # attributes
        timestamp_delta, position = _read_zigzag_varint(buf, position)
        offset_delta, position = _read_zigzag_varint(buf, position)
        fields: list[bytes | None] = []
        for _ in range(2):
            size, position = _read_zigzag_varint(buf, position)
            fields.append(None if size < 0 else buf[position : position + size])
            position += max(size, 0)
        _, position = _read_zigzag_varint(buf, position)
        records.append(Record(fields[0], fields[1], (), first + timestamp_delta, base + offset_delta))
    return records


_ROW = struct.Struct(">qiiii")  # timestamp delta, offset delta, key length, value length, header count


def encode_struct_rows(records: list[Record], first: int) -> bytes:
    parts: list[bytes] = []
    for index, record in enumerate(records):
        key, value = record.key, record.value
        parts.append(
            _ROW.pack(
                record.timestamp_ms - first,  # type: ignore[operator]
                index,
                -1 if key is None else len(key),
                -1 if value is None else len(value),
                0,
            )
        )
        if key:
            parts.append(key)
        if value:
            parts.append(value)
    return b"".join(parts)


def decode_struct_rows(buf: bytes, first: int, base: int) -> list[Record]:
    records: list[Record] = []
    append = records.append
    unpack_from = _ROW.unpack_from
    position = 0
    end = len(buf)
    while position < end:
        timestamp_delta, offset_delta, key_size, value_size, _ = unpack_from(buf, position)
        position += 24
        key = value = None
        if key_size >= 0:
            key = buf[position : position + key_size]
            position += key_size
        if value_size >= 0:
            value = buf[position : position + value_size]
            position += value_size
        append(Record(key, value, (), first + timestamp_delta, base + offset_delta))
    return records


def bench_alternatives(count: int, repeat: int, rng: random.Random) -> None:
    records = make_records(count, 100, 0, rng)
    first = _NOW_MS
    print()
    print(
        f"per-record encodings, {count} records, 10-byte keys, 100 B values (prototypes: no headers, no CRC)"
    )
    print(f"{'encoding':40s} {'bytes/rec':>9s} {'encode ns/rec':>14s} {'decode ns/rec':>14s}")
    varint = encode_varint_rows(records, first)
    rows = encode_struct_rows(records, first)
    columns = encode_batch(records)
    expected = [(r.key, r.value, r.timestamp_ms) for r in records]
    for decoded in (decode_varint_rows(varint, first, 0), decode_struct_rows(rows, first, 0)):
        assert [(r.key, r.value, r.timestamp_ms) for r in decoded] == expected
    for name, size, encode, decode in (
        ("zigzag varints per record (Kafka v2)", len(varint), lambda: encode_varint_rows(records, first),
         lambda: decode_varint_rows(varint, first, 0)),
        ("fixed-width struct per record", len(rows), lambda: encode_struct_rows(records, first),
         lambda: decode_struct_rows(rows, first, 0)),
        ("columns (millpond, with checks and CRC)", len(columns) - 64, lambda: encode_batch(records),
         lambda: decode_batch(columns)),
    ):  # fmt: skip
        encode_s = best_seconds_per_call(encode, repeat)
        decode_s = best_seconds_per_call(decode, repeat)
        print(f"{name:40s} {size / count:9.1f} {encode_s / count * 1e9:14.0f} {decode_s / count * 1e9:14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1000, help="records per batch")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per figure (the best is kept)")
    parser.add_argument("--alternatives", action="store_true", help="also time the encodings not adopted")
    args = parser.parse_args()
    rng = random.Random(20_260_601)
    batches = bench_codec(args.records, args.repeat, rng)
    bench_broker(batches, args.records, args.repeat, rng)
    if args.alternatives:
        bench_alternatives(args.records, args.repeat, rng)


if __name__ == "__main__":
    main()
