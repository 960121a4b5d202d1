"""Turning a Fetch response into consumer records. Pure: no I/O.

A Fetch returns whole batches, concatenated as stored, so the first batch
may start before the offset asked for: records below it are skipped. Control
batches (transaction markers) are never handed to users but move the
position past them. The next fetch starts after the last batch returned.
"""

from __future__ import annotations

from millpond import record_batch
from millpond.client._types import ConsumerRecord
from millpond.errors import InvalidRecordBatch


def decode_fetch(
    topic: str, partition: int, data: bytes, fetch_offset: int
) -> tuple[list[ConsumerRecord], int]:
    """The records at or after ``fetch_offset`` in ``data``, and the offset to fetch next.

    The next offset is the end of the last batch in ``data`` (or
    ``fetch_offset`` if ``data`` holds nothing past it). Raises
    :class:`~millpond.errors.InvalidRecordBatch` if the bytes do not split into
    batches or a batch does not decode (a CRC mismatch included): the broker
    only ever returns whole, checked batches, so this is corruption in transit
    or a bug, and no record of the response is returned.
    """
    records: list[ConsumerRecord] = []
    next_offset = fetch_offset
    try:
        for view in record_batch.iter_batches(data):
            header = record_batch.parse_header(view)
            if header.next_offset <= fetch_offset:
                continue
            next_offset = max(next_offset, header.next_offset)
            if header.control:
                continue
            _, decoded = record_batch.decode_batch(view)
            records.extend(
                ConsumerRecord(
                    topic, partition, r.offset, r.timestamp_ms or 0, r.key, r.value, tuple(r.headers)
                )
                for r in decoded
                if r.offset >= fetch_offset
            )
    except record_batch.InvalidBatch as exc:
        raise InvalidRecordBatch(
            f"fetched data of {topic}/{partition} from offset {fetch_offset} does not decode: {exc}"
        ) from exc
    return records, next_offset
