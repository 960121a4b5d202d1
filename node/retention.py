"""Retention decisions: where a partition's log should start now. Pure: no I/O, no clock.

The partition leader's log cleaner (:mod:`millpond.node.log_cleaner`) calls
:func:`retention_point` with its batch index and proposes the answer as an
``ADVANCE_LOG_START`` control record; every replica applies that record at
the same log position (:mod:`millpond.node.partition`). Only whole batches
are deleted, always from the head of the log:

* by time (``retention_ms`` >= 0): a batch whose max timestamp is older than
  ``now - retention_ms`` goes — but only as part of a prefix: the first batch
  that is young enough stops the deletion even if older ones follow (record
  timestamps are the producers' and need not grow with offsets);
* by size (``retention_bytes`` >= 0): while the batches from the log start to
  the high watermark take more than ``retention_bytes``, the oldest goes.

``-1`` switches a rule off. One decision deletes at most ``batches_max``
batches, so applying it is bounded; the cleaner's next round continues.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["retention_point"]


def retention_point(
    bases: Sequence[int],
    max_timestamps: Sequence[int],
    sizes: Sequence[int],
    total_bytes: int,
    high_watermark: int,
    now_ms: int,
    retention_ms: int,
    retention_bytes: int,
    batches_max: int,
) -> int | None:
    """The new log start offset, or None if no batch is due for deletion.

    ``bases``, ``max_timestamps`` and ``sizes`` describe the committed batches
    from the log start, in offset order (batches are contiguous: each ends where
    the next begins, the last at ``high_watermark``); ``total_bytes`` is the sum
    of ``sizes``. The answer is the base offset of the first batch to keep, or
    ``high_watermark`` when every batch goes.
    """
    count = min(len(bases), batches_max)
    time_limit = now_ms - retention_ms if retention_ms >= 0 else None
    remaining = total_bytes
    deleted = 0
    while deleted < count:
        expired = time_limit is not None and max_timestamps[deleted] < time_limit
        oversized = retention_bytes >= 0 and remaining > retention_bytes
        if not (expired or oversized):
            break
        remaining -= sizes[deleted]
        deleted += 1
    if deleted == 0:
        return None
    return bases[deleted] if deleted < len(bases) else high_watermark
