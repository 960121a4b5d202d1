"""Record batches: the binary unit that clients, brokers and consumers share.

A producer encodes many records into one batch (:func:`encode_batch`). The
broker never looks at individual records: it checks the header and the CRC
(:func:`validate_batch`), writes the batch's base offset and leader epoch into
the header (:func:`stamp`, no CRC recomputation), and stores and serves the
bytes unchanged. Consumers split a fetch response into batches
(:func:`iter_batches`) and decode them (:func:`decode_batch`). The one
exception is log compaction, which reads keys (:func:`scan_keys`) and writes
a stored batch back with fewer records, same offsets (:func:`retain_records`).

The byte layout is specified in ``docs/record-format.md``; this module is the
reference implementation. In short (all integers big-endian):

* a 64-byte header: magic ``b"MPB"``, version, length, base offset, leader
  epoch, CRC-32C (Castagnoli) of everything from ``attributes`` to the end,
  attributes, producer epoch, last offset delta, first/max timestamp,
  producer id, base sequence, record count;
* the records as *columns*: five fixed-width arrays with one entry per record
  (timestamp delta, offset delta, key length, value length, header count), two
  arrays with one entry per header (key length, value length), then the bytes
  of all keys, all values, all header keys, all header values.

Fixed-width fields, not Kafka's zigzag varints: in CPython a varint costs a
loop iteration per byte, so a varint codec takes 3-5x longer (best seen for a
100-byte record: 1.1 µs to encode and 1.7 µs to decode, against 0.35 µs and
0.55 µs here; ``bench/record_batch.py --alternatives``). Columns rather than
one struct per record: about the same speed, but the broker's checks and any
scan of keys or timestamps become a few whole-column C calls.

Errors. Bytes that are not an acceptable batch raise :class:`InvalidBatch`
(a ``ValueError``) with a stable :attr:`InvalidBatch.reason`; a CRC mismatch
raises its subclass :class:`CorruptBatch`. Records that cannot be encoded
raise :class:`InvalidRecords` (a ``ValueError``) before any byte is produced.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import accumulate, islice, pairwise, repeat
from typing import Final, NamedTuple, cast

from crc32c import crc32c

from millpond.limits import (
    batch_bytes_max,
    batch_records_max,
    header_key_bytes_max,
    record_headers_max,
    timestamp_ms_max,
)

__all__ = [
    "ATTRIBUTE_COMPACTED",
    "ATTRIBUTE_COMPRESSION_MASK",
    "ATTRIBUTE_CONTROL",
    "ATTRIBUTE_LOG_APPEND_TIME",
    "ATTRIBUTE_TRANSACTIONAL",
    "BATCH_HEADER_BYTES",
    "BATCH_VERSION",
    "CRC_START",
    "HEADER_OVERHEAD_BYTES",
    "MAGIC",
    "RECORD_OVERHEAD_BYTES",
    "BatchHeader",
    "CorruptBatch",
    "InvalidBatch",
    "InvalidRecords",
    "KeyScan",
    "Record",
    "batch_bytes_max",
    "batch_records_max",
    "batch_size_bytes",
    "compute_crc",
    "decode_batch",
    "encode_batch",
    "header_key_bytes_max",
    "iter_batches",
    "null_key_index",
    "parse_header",
    "record_headers_max",
    "record_size_bytes",
    "retain_records",
    "scan_keys",
    "stamp",
    "stamp_into",
    "timestamp_ms_max",
    "validate_batch",
    "verify_crc",
]

# --- Format constants -------------------------------------------------------
MAGIC: Final = b"MPB"
BATCH_VERSION: Final = 1
#: Size of the fixed batch header; the record columns start here.
BATCH_HEADER_BYTES: Final = 64
#: First byte covered by the CRC (``attributes``); the bytes before it are
#: framing (magic, version, length), the broker-stamped fields and the CRC itself.
CRC_START: Final = 24
#: Fixed bytes per record: timestamp delta (8), offset delta, key length,
#: value length, header count (4 each).
RECORD_OVERHEAD_BYTES: Final = 24
#: Fixed bytes per header: key length, value length (4 each).
HEADER_OVERHEAD_BYTES: Final = 8

#: Attribute bits 0-2: compression codec. Only 0 (none) exists today.
ATTRIBUTE_COMPRESSION_MASK: Final = 0x0007
#: Attribute bit 3: timestamps are the broker's log-append time (``max_timestamp_ms``).
ATTRIBUTE_LOG_APPEND_TIME: Final = 0x0008
#: Attribute bit 4: the batch belongs to a transaction.
ATTRIBUTE_TRANSACTIONAL: Final = 0x0010
#: Attribute bit 5: the batch carries control records (transaction markers).
ATTRIBUTE_CONTROL: Final = 0x0020
#: Attribute bit 6: the broker rewrote this batch when it compacted the partition (:func:`retain_records`):
#: some records are gone, so the record count may be below last offset delta + 1 and the offset deltas
#: may have gaps. Only the broker sets it; a produced batch carrying it is refused (an unknown bit there).
ATTRIBUTE_COMPACTED: Final = 0x0040
_ATTRIBUTES_KNOWN: Final = (
    ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_LOG_APPEND_TIME | ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL
)

# magic, version, length, base offset, leader epoch, crc | attributes, producer
# epoch, last offset delta, first timestamp, max timestamp, producer id, base
# sequence, record count. Every field sits at a multiple of its own size.
_HEADER: Final = struct.Struct(">3sBiqiIHhiqqqii")
_CRC_COVERED: Final = struct.Struct(">Hhiqqqii")  # the header from CRC_START on
_FRAME: Final = struct.Struct(">3sBi")  # magic, version, length
_STAMPED: Final = struct.Struct(">qi")  # base offset, leader epoch
_STAMPED_AT: Final = 8
_CRC: Final = struct.Struct(">I")
_CRC_AT: Final = 20
_TIMESTAMP: Final = struct.Struct(">q")
_MAX_TIMESTAMP_AT: Final = 40
_ATTRIBUTES: Final = struct.Struct(">H")
_ATTRIBUTES_AT: Final = 24
assert _HEADER.size == BATCH_HEADER_BYTES  # format constants, not runtime data
assert _HEADER.size - _CRC_COVERED.size == CRC_START

_INT32_MAX: Final = 2**31 - 1
_INT16_MAX: Final = 2**15 - 1
_INT64_MAX: Final = 2**63 - 1

Header = tuple[str, bytes | None]
"""A record header: a UTF-8 text key and a nullable bytes value."""


# --- Errors -----------------------------------------------------------------
class InvalidBatch(ValueError):
    """Bytes that are not an acceptable record batch.

    :attr:`reason` is a stable short code for the boundary that maps errors to
    status codes: ``too_short``, ``magic``, ``version``, ``length``,
    ``too_large``, ``count``, ``attributes``, ``producer``, ``timestamps``,
    ``records`` (the record columns do not add up), ``crc``
    (:class:`CorruptBatch`). Not retriable, except ``crc`` (see there).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CorruptBatch(InvalidBatch):
    """The CRC-32C of a batch does not match its contents: bytes changed in transit or at rest.

    A producer may retry (the copy it holds is intact); a reader must not use
    the batch. :attr:`expected` is the CRC stored in the header, :attr:`actual`
    the one computed over the bytes.
    """

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            "crc", f"corrupt batch: CRC-32C stored in header 0x{expected:08x}, computed 0x{actual:08x}"
        )
        self.expected = expected
        self.actual = actual


class InvalidRecords(ValueError):
    """Records that :func:`encode_batch` cannot encode (the message names the record and the limit)."""


# --- Data -------------------------------------------------------------------
@dataclass(slots=True)
class Record:
    """One record. Treat as immutable (not frozen only because frozen dataclasses build 4x slower).

    ``key``: partitioning and compaction key, or ``None``.
    ``value``: payload, or ``None`` (a tombstone: compaction deletes the key).
    ``headers``: ``(text key, nullable bytes value)`` pairs, in order; keys may repeat.
    ``timestamp_ms``: creation time in ms since the Unix epoch; ``None`` asks
    :func:`encode_batch` to use its ``timestamp_ms`` argument.
    ``offset``: ``-1`` before the broker assigned one; after :func:`decode_batch`,
    the absolute offset (base offset + offset delta). Ignored by the encoder,
    which gives the i-th record offset delta i.
    """

    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] = ()
    timestamp_ms: int | None = None
    offset: int = -1


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 64-byte header of a batch, as read by :func:`parse_header`."""

    version: int
    length: int
    """Total bytes of the batch, header included."""
    base_offset: int
    leader_epoch: int
    crc: int
    attributes: int
    producer_epoch: int
    last_offset_delta: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record (valid once the broker stamped the base offset)."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """The offset just after this batch: where the next batch starts."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        """Compression codec id (0 = none; the only one implemented)."""
        return self.attributes & ATTRIBUTE_COMPRESSION_MASK

    @property
    def log_append_time(self) -> bool:
        """True if record timestamps are the broker's append time (``max_timestamp_ms``)."""
        return bool(self.attributes & ATTRIBUTE_LOG_APPEND_TIME)

    @property
    def transactional(self) -> bool:
        return bool(self.attributes & ATTRIBUTE_TRANSACTIONAL)

    @property
    def control(self) -> bool:
        return bool(self.attributes & ATTRIBUTE_CONTROL)

    @property
    def compacted(self) -> bool:
        """True if compaction rewrote the batch (records may be missing; see :func:`retain_records`)."""
        return bool(self.attributes & ATTRIBUTE_COMPACTED)


# --- Sizes (for producers capping batches) ----------------------------------
def record_size_bytes(key: bytes | None, value: bytes | None, headers: Sequence[Header] = ()) -> int:
    """Exact number of bytes a record with these fields adds to an encoded batch.

    A producer keeps ``size = BATCH_HEADER_BYTES`` per open batch, adds this
    for each record, and closes the batch before ``size`` would pass its
    ``batch_bytes`` (at most :data:`batch_bytes_max`). Header keys are counted
    in UTF-8. Raises ``AttributeError`` if a header key is not a ``str``.
    """
    size = RECORD_OVERHEAD_BYTES
    if key is not None:
        size += len(key)
    if value is not None:
        size += len(value)
    for header_key, header_value in headers:
        size += HEADER_OVERHEAD_BYTES + len(header_key.encode())
        if header_value is not None:
            size += len(header_value)
    return size


def batch_size_bytes(records: Sequence[Record]) -> int:
    """Exact length of ``encode_batch(records)``: the header plus :func:`record_size_bytes` of each."""
    return BATCH_HEADER_BYTES + sum(record_size_bytes(r.key, r.value, r.headers) for r in records)


# --- Encoding ---------------------------------------------------------------
def encode_batch(
    records: Sequence[Record],
    *,
    timestamp_ms: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    """Encode ``records`` into one batch, ready to produce.

    The i-th record gets offset delta i; ``Record.offset`` is ignored. The base
    offset is written as 0 and the leader epoch as -1: the broker stamps both.
    The first record's timestamp becomes the batch's first timestamp; records
    with ``timestamp_ms=None`` take ``timestamp_ms`` (the producer's "now").
    Idempotent producers pass their ``producer_id``, ``producer_epoch`` and the
    partition's next ``base_sequence``; -1 means none.

    Raises :class:`InvalidRecords` (nothing is encoded) if: ``records`` is
    empty or longer than :data:`batch_records_max`; a record's timestamp is
    ``None`` and so is ``timestamp_ms``, or a timestamp is outside
    ``[0, timestamp_ms_max]``; a record has more than
    :data:`record_headers_max` headers, a header key is not a ``str`` or
    longer than :data:`header_key_bytes_max` UTF-8 bytes; producer fields are
    out of range or inconsistent (a sequence or a transaction without a
    producer id); the batch would exceed :data:`batch_bytes_max`.
    Raises ``TypeError`` if a key, value or header value is neither ``None``
    nor ``bytes``/``bytearray``, or a timestamp or producer field is not an ``int``.
    """
    count = len(records)
    if not 0 < count <= batch_records_max:
        raise InvalidRecords(f"a batch holds 1 to {batch_records_max} records, got {count}")
    _check_producer_fields(producer_id, producer_epoch, base_sequence, transactional, InvalidRecords)

    given = [r.timestamp_ms for r in records]
    if None in given:
        if timestamp_ms is None:
            raise InvalidRecords(f"record {given.index(None)} has no timestamp_ms and encode_batch got none")
        given = [timestamp_ms if t is None else t for t in given]
    timestamps = cast(list[int], given)
    earliest = min(timestamps)
    latest = max(timestamps)
    if earliest < 0 or latest > timestamp_ms_max:
        bad = earliest if earliest < 0 else latest
        raise InvalidRecords(
            f"record {timestamps.index(bad)} has timestamp_ms {bad}, outside [0, {timestamp_ms_max}]"
        )
    first_timestamp = timestamps[0]

    keys = [r.key for r in records]
    values = [r.value for r in records]
    key_lengths = [-1 if k is None else len(k) for k in keys]
    value_lengths = [-1 if v is None else len(v) for v in values]
    headers = [r.headers for r in records]
    header_counts = list(map(len, headers))
    header_total = sum(header_counts)
    header_key_lengths: list[int] = []
    header_value_lengths: list[int] = []
    header_bytes: list[bytes] = []
    if header_total:
        header_key_lengths, header_value_lengths, header_bytes = _encode_headers(headers, header_counts)

    length = (
        BATCH_HEADER_BYTES
        + RECORD_OVERHEAD_BYTES * count
        + HEADER_OVERHEAD_BYTES * header_total
        + sum(key_lengths)
        + key_lengths.count(-1)
        + sum(value_lengths)
        + value_lengths.count(-1)
        + sum(map(len, header_bytes))
    )
    if length > batch_bytes_max:
        raise InvalidRecords(
            f"the batch would be {length} bytes, more than batch_bytes_max={batch_bytes_max}"
        )

    attributes = (ATTRIBUTE_TRANSACTIONAL if transactional else 0) | (ATTRIBUTE_CONTROL if control else 0)
    try:
        columns = struct.pack(
            f">{count}q{4 * count + 2 * header_total}i",
            *[t - first_timestamp for t in timestamps],
            *range(count),
            *key_lengths,
            *value_lengths,
            *header_counts,
            *header_key_lengths,
            *header_value_lengths,
        )
        covered_header = _CRC_COVERED.pack(
            attributes, producer_epoch, count - 1, first_timestamp, latest, producer_id, base_sequence, count
        )
    except struct.error as exc:  # a timestamp or producer field that is not an int
        raise TypeError(f"timestamps and producer fields must be int: {exc}") from exc
    body = b"".join([covered_header, columns, *filter(None, keys), *filter(None, values), *header_bytes])
    if len(body) + CRC_START != length:  # a bytes-like key whose len() is not its byte count
        raise TypeError("record keys, values and header values must be bytes, bytearray or None")
    return _FRAME.pack(MAGIC, BATCH_VERSION, length) + _STAMPED.pack(0, -1) + _CRC.pack(crc32c(body)) + body


def _encode_headers(
    headers: list[Sequence[Header]], header_counts: list[int]
) -> tuple[list[int], list[int], list[bytes]]:
    """Header columns and bytes (all keys, then all non-null values); raises :class:`InvalidRecords`."""
    if max(header_counts) > record_headers_max:
        index = next(i for i, n in enumerate(header_counts) if n > record_headers_max)
        raise InvalidRecords(
            f"record {index} has {header_counts[index]} headers, "
            f"more than record_headers_max={record_headers_max}"
        )
    try:
        header_keys = [key for record_headers in headers for key, _ in record_headers]
        header_values = [value for record_headers in headers for _, value in record_headers]
        encoded = {key: key.encode() for key in set(header_keys)}  # few distinct names: encode each once
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidRecords(f"headers must be (str key, bytes or None value) pairs: {exc}") from exc
    key_bytes = list(map(encoded.__getitem__, header_keys))
    key_lengths = list(map(len, key_bytes))
    if max(key_lengths) > header_key_bytes_max:
        position = next(i for i, n in enumerate(key_lengths) if n > header_key_bytes_max)
        index = bisect_right(list(accumulate(header_counts)), position)
        raise InvalidRecords(
            f"record {index}: header key of {key_lengths[position]} UTF-8 bytes, "
            f"more than header_key_bytes_max={header_key_bytes_max}"
        )
    value_lengths = [-1 if value is None else len(value) for value in header_values]
    return key_lengths, value_lengths, key_bytes + [value for value in header_values if value]


def _check_producer_fields(
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool,
    error: type[InvalidRecords] | None,
) -> str | None:
    """Return what is wrong with the producer fields, or raise ``error`` with it if given."""
    problem = None
    if not -1 <= producer_id <= _INT64_MAX:
        problem = f"producer_id {producer_id} outside [-1, 2**63-1]"
    elif not -1 <= producer_epoch <= _INT16_MAX:
        problem = f"producer_epoch {producer_epoch} outside [-1, {_INT16_MAX}]"
    elif not -1 <= base_sequence <= _INT32_MAX:
        problem = f"base_sequence {base_sequence} outside [-1, {_INT32_MAX}]"
    elif producer_id == -1 and (producer_epoch != -1 or base_sequence != -1 or transactional):
        problem = "producer_epoch, base_sequence and transactional need a producer_id"
    if problem is not None and error is not None:
        raise error(problem)
    return problem


# --- Header parsing and broker-side checks ---------------------------------
def parse_header(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Parse and structurally check the header of ``buf``, which must hold exactly one batch.

    Checks the size, magic, version, that the length field equals ``len(buf)``
    and that the record count is one the length can hold. Does not check the
    CRC (:func:`verify_crc`) or the broker's rules (:func:`validate_batch`).

    Raises :class:`InvalidBatch` with reason ``too_short`` (fewer than
    :data:`BATCH_HEADER_BYTES` bytes), ``magic``, ``version``, ``length`` (the
    length field differs from ``len(buf)``) or ``count`` (negative, or more
    records than the bytes can hold).
    """
    header = _parse_framing(buf)
    _check_count_fits(header)
    return header


def _parse_framing(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Unpack the header after checking the framing outside the CRC: size, magic, version, length."""
    size = len(buf)
    if size < BATCH_HEADER_BYTES:
        raise InvalidBatch(
            "too_short", f"batch too short: {size} bytes, the header alone is {BATCH_HEADER_BYTES}"
        )
    fields = _HEADER.unpack_from(buf, 0)
    magic, version, length = fields[0], fields[1], fields[2]
    if magic != MAGIC:
        raise InvalidBatch("magic", f"wrong magic {magic!r}, expected {MAGIC!r}: not a millpond record batch")
    if version != BATCH_VERSION:
        raise InvalidBatch(
            "version", f"unsupported batch version {version}, this reader knows {BATCH_VERSION}"
        )
    if length != size:
        raise InvalidBatch("length", f"length mismatch: header says {length} bytes, buffer holds {size}")
    return BatchHeader(*fields[1:])


def _check_count_fits(header: BatchHeader) -> None:
    count = header.record_count
    if count < 0 or count * RECORD_OVERHEAD_BYTES > header.length - BATCH_HEADER_BYTES:
        raise InvalidBatch("count", f"record count {count} out of range for a {header.length}-byte batch")


def compute_crc(buf: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``buf`` from :data:`CRC_START` to its end (what the header's CRC field must hold)."""
    with memoryview(buf) as view:
        return crc32c(view[CRC_START:])


def verify_crc(buf: bytes | bytearray | memoryview) -> None:
    """Check the CRC-32C of one whole batch (``buf`` is exactly the batch).

    Raises :class:`InvalidBatch` (``too_short``) if ``buf`` cannot hold a
    header, :class:`CorruptBatch` (with ``expected``/``actual``) on mismatch.
    """
    if len(buf) < BATCH_HEADER_BYTES:
        raise InvalidBatch(
            "too_short", f"batch too short: {len(buf)} bytes, the header alone is {BATCH_HEADER_BYTES}"
        )
    (expected,) = _CRC.unpack_from(buf, _CRC_AT)
    actual = compute_crc(buf)
    if actual != expected:
        raise CorruptBatch(expected, actual)


def validate_batch(
    buf: bytes | bytearray | memoryview,
    *,
    max_bytes: int = batch_bytes_max,
    max_records: int = batch_records_max,
    check_records: bool = True,
) -> BatchHeader:
    """The checks a partition leader runs on a produced batch before appending it.

    In order: the framing (size, magic, version, length); the size against
    ``max_bytes``; the CRC (before any CRC-covered field is judged, so damaged
    bytes are reported as corruption, which a producer may retry); then the
    header's fields; then, if ``check_records``, that the record columns add
    up to the length and agree with the header (no copies, no ``Record``
    objects: ~0.2 µs per record, ~0.5 µs with two headers each), so a batch
    the broker accepted decodes in every client; without them what remains
    is the CRC pass (~10 µs for 134 KB). The base offset and leader epoch are
    not checked (the broker stamps them next).

    Raises :class:`InvalidBatch` with reason: ``too_short``, ``magic``,
    ``version``, ``length``, ``count`` (see :func:`parse_header`);
    ``too_large`` (more than ``max_bytes``); ``crc`` (:class:`CorruptBatch`);
    ``count`` (not in ``[1, max_records]``, or last offset delta is not
    count - 1); ``attributes`` (a compression codec, or unknown bits);
    ``producer`` (fields out of range or a sequence/transaction without a
    producer id); ``timestamps`` (outside ``[0, timestamp_ms_max]``, max
    before first, or, with ``check_records``, a max timestamp that is not the
    records' maximum); ``records`` (columns that do not add up, offset
    deltas not ``0..count-1``, a header key that is too long or not UTF-8,
    too many headers).
    """
    header = _parse_framing(buf)
    if header.length > max_bytes:
        raise InvalidBatch("too_large", f"batch of {header.length} bytes exceeds max_bytes={max_bytes}")
    verify_crc(buf)
    _check_count_fits(header)
    count = header.record_count
    if not 1 <= count <= max_records:
        raise InvalidBatch("count", f"record count {count} out of range [1, {max_records}]")
    if header.last_offset_delta != count - 1:
        raise InvalidBatch(
            "count",
            f"count mismatch: last offset delta {header.last_offset_delta} with {count} records "
            f"(expected {count - 1})",
        )
    if header.attributes & ~_ATTRIBUTES_KNOWN:
        raise InvalidBatch(
            "attributes", f"unknown attribute bits 0x{header.attributes & ~_ATTRIBUTES_KNOWN:04x}"
        )
    if header.compression:
        raise InvalidBatch(
            "attributes", f"compression codec {header.compression} is not supported (only 0, none)"
        )
    problem = _check_producer_fields(
        header.producer_id, header.producer_epoch, header.base_sequence, header.transactional, None
    )
    if problem is not None:
        raise InvalidBatch("producer", problem)
    first, latest = header.first_timestamp_ms, header.max_timestamp_ms
    if first < 0 or latest < first:
        raise InvalidBatch(
            "timestamps",
            f"timestamps inconsistent: first {first} ms, max {latest} ms (need 0 <= first <= max)",
        )
    if check_records:
        columns = _read_columns(buf, header)
        if not header.log_append_time:
            deltas = columns.timestamp_deltas
            if deltas[0] != 0 or first + max(deltas) != latest or first + min(deltas) < 0:
                raise InvalidBatch(
                    "timestamps",
                    f"timestamps inconsistent: records span {first + min(deltas)}..{first + max(deltas)} ms "
                    f"(the first at {first + deltas[0]}), header says first {first} max {latest}",
                )
        if columns.offset_deltas is not None:
            raise InvalidBatch("records", "offset deltas of a produced batch must be 0, 1, ..., count-1")
        if columns.header_key_lengths:
            _check_header_keys_utf8(buf, columns)
    return header


def stamp(
    buf: bytes | bytearray | memoryview,
    base_offset: int,
    leader_epoch: int,
    *,
    log_append_time_ms: int | None = None,
) -> bytes:
    """A copy of the batch ``buf`` with its base offset and leader epoch set.

    Those two fields lie outside the CRC, so the CRC is not recomputed and
    stays valid; the only cost is one copy. With ``log_append_time_ms`` (a
    topic whose timestamps are the broker's), also sets the log-append-time
    attribute and the max timestamp, and then recomputes the CRC (one more
    pass over the bytes). Call it only on a batch :func:`validate_batch`
    accepted. Raises ``struct.error`` if a value does not fit its field
    (base offset i64, leader epoch i32, timestamp i64).
    """
    if log_append_time_ms is not None:
        copy = bytearray(buf)
        stamp_into(copy, base_offset, leader_epoch, log_append_time_ms=log_append_time_ms)
        return bytes(copy)
    with memoryview(buf) as view:
        return b"".join(
            (
                view[:_STAMPED_AT],
                _STAMPED.pack(base_offset, leader_epoch),
                view[_STAMPED_AT + _STAMPED.size :],
            )
        )


def stamp_into(
    buf: bytearray | memoryview,
    base_offset: int,
    leader_epoch: int,
    *,
    log_append_time_ms: int | None = None,
) -> None:
    """Like :func:`stamp`, but in place in a writable buffer holding one batch."""
    _STAMPED.pack_into(buf, _STAMPED_AT, base_offset, leader_epoch)
    if log_append_time_ms is not None:
        (attributes,) = _ATTRIBUTES.unpack_from(buf, _ATTRIBUTES_AT)
        _ATTRIBUTES.pack_into(buf, _ATTRIBUTES_AT, attributes | ATTRIBUTE_LOG_APPEND_TIME)
        _TIMESTAMP.pack_into(buf, _MAX_TIMESTAMP_AT, log_append_time_ms)
        _CRC.pack_into(buf, _CRC_AT, compute_crc(buf))


# --- Reading ----------------------------------------------------------------
def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a concatenation of whole batches (a fetch response) into one view per batch.

    Zero-copy: each item is a ``memoryview`` slice of ``buf``; pass it to
    :func:`decode_batch` or :func:`parse_header`. Only the framing (magic,
    version, length) is checked here. Raises :class:`InvalidBatch` when the
    next batch is reached: ``magic``/``version`` (misframed bytes),
    ``length`` (a length below the header size) or ``too_short`` (a batch cut
    off by the end of ``buf``). Batches before the bad one have been yielded.
    """
    view = memoryview(buf)
    end = len(view)
    position = 0
    while position < end:
        if end - position < _FRAME.size:
            raise InvalidBatch(
                "too_short", f"truncated batch at byte {position}: {end - position} bytes left, need a header"
            )
        magic, version, length = _FRAME.unpack_from(view, position)
        if magic != MAGIC:
            raise InvalidBatch("magic", f"wrong magic {magic!r} at byte {position}, expected {MAGIC!r}")
        if version != BATCH_VERSION:
            raise InvalidBatch("version", f"unsupported batch version {version} at byte {position}")
        if length < BATCH_HEADER_BYTES:
            raise InvalidBatch(
                "length", f"batch at byte {position} claims {length} bytes, less than a header"
            )
        if length > end - position:
            raise InvalidBatch(
                "too_short",
                f"truncated batch at byte {position}: {length} bytes claimed, {end - position} left",
            )
        yield view[position : position + length]
        position += length


class _Columns(NamedTuple):
    """The record columns of one batch, checked to add up to its length."""

    timestamp_deltas: tuple[int, ...]
    offset_deltas: tuple[int, ...] | None
    """``None`` when they are 0, 1, ..., count - 1 (every produced batch)."""
    key_lengths: tuple[int, ...]
    value_lengths: tuple[int, ...]
    header_counts: tuple[int, ...]
    header_key_lengths: tuple[int, ...]
    header_value_lengths: tuple[int, ...]
    keys_at: int
    """Where the key bytes start (values, header keys, header values follow)."""
    header_keys_at: int


_SEQUENTIAL_COUNT: Final = 65_536


@cache
def _sequential_offset_deltas() -> bytes:
    """The offset-delta column of a produced batch of ``_SEQUENTIAL_COUNT`` records (256 KiB).

    A produced batch of ``n`` records has the first ``4 * n`` of these bytes.
    """
    return struct.pack(f">{_SEQUENTIAL_COUNT}i", *range(_SEQUENTIAL_COUNT))


def _payload_bytes(lengths: tuple[int, ...]) -> int:
    """Bytes taken by strings of ``lengths``, where -1 (null) takes none. Assumes all >= -1."""
    return sum(lengths) + lengths.count(-1)


def _read_columns(buf: bytes | bytearray | memoryview, header: BatchHeader) -> _Columns:
    """Unpack the record columns and check that they add up to the batch length; raise InvalidBatch."""
    count = header.record_count
    length = header.length
    position = BATCH_HEADER_BYTES + RECORD_OVERHEAD_BYTES * count
    if count == 0:  # an empty batch is never produced, but may be parsed (left by compaction)
        if position != length:
            raise InvalidBatch("records", f"an empty batch must be {position} bytes, not {length}")
        return _Columns((), None, (), (), (), (), (), position, position)
    deltas = struct.unpack_from(f">{count}q", buf, BATCH_HEADER_BYTES)
    offsets_at = BATCH_HEADER_BYTES + 8 * count
    offset_deltas: tuple[int, ...] | None = None
    # Compare bytes with bytes (a memoryview's == unpacks item by item: 20x slower).
    column = bytes(buf[offsets_at : offsets_at + 4 * count])
    if count > _SEQUENTIAL_COUNT or column != _sequential_offset_deltas()[: 4 * count]:
        offset_deltas = struct.unpack_from(f">{count}i", buf, offsets_at)
        if offset_deltas == tuple(range(count)):
            offset_deltas = None
        elif (
            offset_deltas[0] < 0
            or offset_deltas[-1] > header.last_offset_delta
            or any(a >= b for a, b in pairwise(offset_deltas))
        ):
            raise InvalidBatch(
                "records",
                f"offset deltas must increase within [0, last offset delta {header.last_offset_delta}]",
            )
    ints = struct.unpack_from(f">{3 * count}i", buf, offsets_at + 4 * count)
    if min(ints) < -1:
        raise InvalidBatch("records", "a key length, value length or header count is below -1")
    key_lengths = ints[:count]
    value_lengths = ints[count : 2 * count]
    header_counts = ints[2 * count :]
    header_total = 0
    if header_counts.count(0) != count:
        if min(header_counts) < 0 or max(header_counts) > record_headers_max:
            raise InvalidBatch("records", f"a header count is outside [0, {record_headers_max}]")
        header_total = sum(header_counts)
    if position + HEADER_OVERHEAD_BYTES * header_total > length:
        raise InvalidBatch("records", f"{header_total} headers do not fit in a {length}-byte batch")
    header_key_lengths: tuple[int, ...] = ()
    header_value_lengths: tuple[int, ...] = ()
    header_payload = 0
    if header_total:
        header_ints = struct.unpack_from(f">{2 * header_total}i", buf, position)
        position += HEADER_OVERHEAD_BYTES * header_total
        header_key_lengths = header_ints[:header_total]
        header_value_lengths = header_ints[header_total:]
        if min(header_key_lengths) < 0 or max(header_key_lengths) > header_key_bytes_max:
            raise InvalidBatch("records", f"a header key length is outside [0, {header_key_bytes_max}]")
        if min(header_value_lengths) < -1:
            raise InvalidBatch("records", "a header value length is below -1")
        header_payload = sum(header_key_lengths) + _payload_bytes(header_value_lengths)
    keys_at = position
    header_keys_at = keys_at + _payload_bytes(key_lengths) + _payload_bytes(value_lengths)
    if header_keys_at + header_payload != length:
        raise InvalidBatch(
            "records",
            f"record columns describe {header_keys_at + header_payload} bytes, the batch has {length}",
        )
    return _Columns(
        deltas,
        offset_deltas,
        key_lengths,
        value_lengths,
        header_counts,
        header_key_lengths,
        header_value_lengths,
        keys_at,
        header_keys_at,
    )


def _slices(data: bytes, lengths: tuple[int, ...], position: int) -> tuple[list[bytes | None], int]:
    """Cut consecutive byte strings of ``lengths`` (-1 = None) from ``data`` at ``position``.

    Returns them and the position after the last one.
    """
    count = len(lengths)
    nulls = lengths.count(-1)
    if nulls == count:
        return [None] * count, position
    out: list[bytes | None] = []
    append = out.append
    if nulls == 0:
        for length in lengths:
            end = position + length
            append(data[position:end])
            position = end
        return out, position
    for length in lengths:
        if length < 0:
            append(None)
        else:
            end = position + length
            append(data[position:end])
            position = end
    return out, position


def _decode_header_keys(data: bytes, columns: _Columns) -> tuple[list[str], int]:
    """Header keys as text, and the position after them; raises InvalidBatch if one is not UTF-8."""
    slices, position = _slices(data, columns.header_key_lengths, columns.header_keys_at)
    raw = cast(list[bytes], slices)  # header key lengths are >= 0: no None
    try:
        text = {key: key.decode() for key in set(raw)}  # few distinct names: decode each once
    except UnicodeDecodeError as exc:
        raise InvalidBatch("records", f"a header key is not UTF-8: {exc}") from exc
    return list(map(text.__getitem__, raw)), position


_CONTINUATION_BYTE: Final = re.compile(rb"[\x80-\xbf]")


def _check_header_keys_utf8(buf: bytes | bytearray | memoryview, columns: _Columns) -> None:
    """Raise InvalidBatch unless every header key is UTF-8, without building a ``str`` per key.

    The keys are contiguous: if their concatenation is valid UTF-8 and no key
    starts on a continuation byte (``0b10xxxxxx``), each key is valid UTF-8.
    """
    lengths = columns.header_key_lengths
    start = columns.header_keys_at
    region = bytes(buf[start : start + sum(lengths)])
    if region.isascii():  # the common case: no character can be split
        return
    try:
        region.decode()
    except UnicodeDecodeError as exc:
        raise InvalidBatch("records", f"a header key is not UTF-8: {exc}") from exc
    # The byte at each key's end (the next key's start); a 0 stands for the end of the region.
    next_starts = bytes(map((region + b"\x00").__getitem__, accumulate(lengths)))
    if _CONTINUATION_BYTE.search(next_starts):
        raise InvalidBatch("records", "a header key is not UTF-8: it splits a character with its neighbour")


def _record_headers(data: bytes, columns: _Columns) -> Iterator[tuple[Header, ...]]:
    """Each record's headers, in record order."""
    keys, position = _decode_header_keys(data, columns)
    values, _ = _slices(data, columns.header_value_lengths, position)
    pairs = iter(zip(keys, values, strict=True))
    counts = columns.header_counts
    same = counts[0]
    if counts.count(same) == len(counts):  # every record has the same number: group in C
        return zip(*[pairs] * same, strict=True)
    return (tuple(islice(pairs, count)) if count else () for count in counts)


def decode_batch(
    buf: bytes | bytearray | memoryview, *, verify: bool = True
) -> tuple[BatchHeader, list[Record]]:
    """Decode one whole batch into its header and records.

    Each record's ``offset`` is the header's base offset plus its offset
    delta; its ``timestamp_ms`` is the first timestamp plus its delta, or the
    max timestamp for a log-append-time batch. Keys and values are ``bytes``
    (a ``memoryview`` or ``bytearray`` input is copied once); headers are
    tuples of ``(str, bytes | None)`` pairs.

    ``verify=False`` skips the CRC check (for bytes just checked by
    :func:`validate_batch`); with it, the CRC is checked before any field it
    covers. Unknown attribute bits are ignored (the broker
    rejects them on produce). Raises what :func:`parse_header` raises,
    :class:`CorruptBatch` on a CRC mismatch, and :class:`InvalidBatch` with
    reason ``attributes`` (a compression codec this reader lacks) or
    ``records`` (the record columns do not add up, offset deltas do not
    increase, a header key is not UTF-8).
    """
    data = buf if type(buf) is bytes else bytes(buf)
    header = _parse_framing(data)
    if verify:
        verify_crc(data)
    _check_count_fits(header)
    if header.compression:
        raise InvalidBatch(
            "attributes", f"compression codec {header.compression} is not supported by this reader"
        )
    columns = _read_columns(data, header)
    count = header.record_count
    keys, position = _slices(data, columns.key_lengths, columns.keys_at)
    values, _ = _slices(data, columns.value_lengths, position)

    if header.log_append_time:
        timestamps: list[int] = [header.max_timestamp_ms] * count
    else:
        timestamps = list(map(header.first_timestamp_ms.__add__, columns.timestamp_deltas))
    base = header.base_offset
    offsets: Sequence[int]
    if columns.offset_deltas is None:
        offsets = range(base, base + count)
    else:
        offsets = [base + delta for delta in columns.offset_deltas]

    headers: Iterator[tuple[Header, ...]] = (
        _record_headers(data, columns) if columns.header_key_lengths else repeat(())
    )
    return header, list(map(Record, keys, values, headers, timestamps, offsets))


# --- Compaction: reading keys, rewriting a batch with fewer records ------------
class KeyScan(NamedTuple):
    """What compaction needs of a batch's records, read without copying any value."""

    header: BatchHeader
    offsets: Sequence[int]
    """Absolute offset of each record (base offset + offset delta)."""
    timestamps: Sequence[int]
    """Each record's timestamp (the max timestamp for a log-append-time batch)."""
    keys: list[bytes | None]
    tombstones: list[bool]
    """True where the value is null (a tombstone)."""


def null_key_index(buf: bytes | bytearray | memoryview, record_count: int) -> int:
    """Index of the first record with a null key in a batch :func:`validate_batch` accepted, or -1.

    Reads only the key-length column (one C-level unpack, no record is decoded): what a
    compacted topic checks on produce, where every record needs a key.
    """
    if record_count <= 0:
        return -1
    lengths = struct.unpack_from(f">{record_count}i", buf, BATCH_HEADER_BYTES + 12 * record_count)
    return lengths.index(-1) if -1 in lengths else -1


def scan_keys(buf: bytes | bytearray | memoryview, *, verify: bool = True) -> KeyScan:
    """The offsets, timestamps, keys and tombstone flags of one whole batch; values are not copied.

    Raises what :func:`decode_batch` raises.
    """
    data = buf if type(buf) is bytes else bytes(buf)
    header = _parse_framing(data)
    if verify:
        verify_crc(data)
    _check_count_fits(header)
    if header.compression:
        raise InvalidBatch(
            "attributes", f"compression codec {header.compression} is not supported by this reader"
        )
    columns = _read_columns(data, header)
    count = header.record_count
    keys, _ = _slices(data, columns.key_lengths, columns.keys_at)
    timestamps: Sequence[int]
    if header.log_append_time:
        timestamps = [header.max_timestamp_ms] * count
    else:
        timestamps = list(map(header.first_timestamp_ms.__add__, columns.timestamp_deltas))
    base = header.base_offset
    offsets: Sequence[int]
    if columns.offset_deltas is None:
        offsets = range(base, base + count)
    else:
        offsets = [base + delta for delta in columns.offset_deltas]
    tombstones = [length == -1 for length in columns.value_lengths]
    return KeyScan(header, offsets, timestamps, keys, tombstones)


def retain_records(buf: bytes | bytearray | memoryview, keep: Sequence[bool]) -> bytes:
    """A stamped batch rewritten to hold only the records whose ``keep`` flag is true.

    What compaction writes in place of a stored batch. Every header field stays
    as it was (base offset, leader epoch, last offset delta, first and max
    timestamps, producer id, epoch and sequence) except the record count, the
    length and the CRC (recomputed), and the attributes, which gain
    :data:`ATTRIBUTE_COMPACTED`. Kept records keep their absolute offsets (the
    offset-delta column is explicit and may now have gaps) and their timestamp
    deltas (still relative to the unchanged first timestamp), so the batch still
    ends at the same offset, and a reader positioned past its last record still
    fetches from the next batch. Keeping no record gives an empty, header-only batch.

    Deterministic and composable: rewriting a rewritten batch with ``keep2`` gives
    the same bytes as rewriting the original with ``keep1 and keep2`` — which is
    why replicas that compact the same records in different orders, or receive
    batches already compacted by the leader, end with identical bytes.

    Raises what :func:`decode_batch` raises if ``buf`` is not a whole, intact batch,
    and ``ValueError`` if ``keep`` does not have one flag per record.
    """
    data = buf if type(buf) is bytes else bytes(buf)
    header = _parse_framing(data)
    verify_crc(data)
    _check_count_fits(header)
    if header.compression:
        raise InvalidBatch(
            "attributes", f"compression codec {header.compression} is not supported by this reader"
        )
    columns = _read_columns(data, header)
    count = header.record_count
    if len(keep) != count:
        raise ValueError(f"keep has {len(keep)} flags for a batch of {count} records")
    kept = [i for i, flag in enumerate(keep) if flag]
    # Where each record's strings start and end: string i spans ends[i]..ends[i + 1].
    key_ends = list(accumulate((max(n, 0) for n in columns.key_lengths), initial=columns.keys_at))
    value_ends = list(accumulate((max(n, 0) for n in columns.value_lengths), initial=key_ends[-1]))
    first_header = list(accumulate(columns.header_counts, initial=0))
    header_key_ends = list(accumulate(columns.header_key_lengths, initial=columns.header_keys_at))
    header_value_ends = list(
        accumulate((max(n, 0) for n in columns.header_value_lengths), initial=header_key_ends[-1])
    )
    offset_deltas = range(count) if columns.offset_deltas is None else columns.offset_deltas
    header_key_lengths = [
        n for i in kept for n in columns.header_key_lengths[first_header[i] : first_header[i + 1]]
    ]
    header_value_lengths = [
        n for i in kept for n in columns.header_value_lengths[first_header[i] : first_header[i + 1]]
    ]
    kept_count = len(kept)
    header_total = len(header_key_lengths)
    packed = struct.pack(
        f">{kept_count}q{4 * kept_count + 2 * header_total}i",
        *[columns.timestamp_deltas[i] for i in kept],
        *[offset_deltas[i] for i in kept],
        *[columns.key_lengths[i] for i in kept],
        *[columns.value_lengths[i] for i in kept],
        *[columns.header_counts[i] for i in kept],
        *header_key_lengths,
        *header_value_lengths,
    )
    covered_header = _CRC_COVERED.pack(
        header.attributes | ATTRIBUTE_COMPACTED, header.producer_epoch, header.last_offset_delta,
        header.first_timestamp_ms, header.max_timestamp_ms, header.producer_id, header.base_sequence,
        kept_count,
    )
    body = b"".join([
        covered_header,
        packed,
        *[data[key_ends[i] : key_ends[i + 1]] for i in kept],
        *[data[value_ends[i] : value_ends[i + 1]] for i in kept],
        *[data[header_key_ends[first_header[i]] : header_key_ends[first_header[i + 1]]] for i in kept],
        *[data[header_value_ends[first_header[i]] : header_value_ends[first_header[i + 1]]] for i in kept],
    ])
    return b"".join((
        _FRAME.pack(MAGIC, BATCH_VERSION, CRC_START + len(body)),
        _STAMPED.pack(header.base_offset, header.leader_epoch),
        _CRC.pack(crc32c(body)),
        body,
    ))
