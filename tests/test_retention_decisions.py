"""Retention decisions (millpond.node.retention): which prefix of a partition's batches goes."""

from __future__ import annotations

from millpond.node.retention import retention_point

NOW = 1_000_000


def point(max_timestamps: list[int], sizes: list[int] | None = None, *, retention_ms: int = -1,
          retention_bytes: int = -1, batches_max: int = 1000) -> int | None:
    """Batches of 10 offsets each starting at 100, with the given max timestamps and sizes."""
    sizes = sizes or [100] * len(max_timestamps)
    bases = [100 + 10 * i for i in range(len(max_timestamps))]
    return retention_point(bases, max_timestamps, sizes, sum(sizes), 100 + 10 * len(bases), NOW,
                           retention_ms, retention_bytes, batches_max)


def test_nothing_to_do_without_limits_or_batches() -> None:
    assert point([0, 0, 0]) is None
    assert point([], retention_ms=1, retention_bytes=1) is None


def test_time_deletes_the_prefix_older_than_retention() -> None:
    young = NOW - 500
    old = NOW - 5000
    assert point([old, old, young, young], retention_ms=1000) == 120
    # exactly at the limit is kept: only "older than now - retention_ms" goes
    assert point([NOW - 1000, old], retention_ms=1000) is None


def test_time_stops_at_the_first_young_batch() -> None:
    old = NOW - 5000
    assert point([old, NOW, old, old], retention_ms=1000) == 110


def test_every_batch_can_go_leaving_the_log_empty_at_the_high_watermark() -> None:
    assert point([0, 0, 0], retention_ms=1000) == 130


def test_size_deletes_oldest_until_within_the_limit() -> None:
    assert point([NOW] * 5, [100, 200, 100, 100, 100], retention_bytes=300) == 120  # 600 - 300 fits
    assert point([NOW] * 5, [100, 200, 100, 100, 100], retention_bytes=299) == 130
    assert point([NOW] * 5, [100] * 5, retention_bytes=500) is None
    assert point([NOW] * 5, [100] * 5, retention_bytes=499) == 110


def test_time_and_size_together() -> None:
    old = NOW - 5000
    assert point([old, NOW, NOW, NOW], [10, 10, 10, 10], retention_ms=1000, retention_bytes=25) == 120
    assert point([old, old, NOW, NOW], [10, 10, 10, 10], retention_ms=1000, retention_bytes=1000) == 120


def test_one_decision_deletes_at_most_batches_max() -> None:
    assert point([0] * 10, retention_ms=1, batches_max=3) == 130
