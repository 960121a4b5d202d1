"""Op statistics of a history: how many of each ``f`` ended ok/fail/info, and how fast the oks were.

Workload-agnostic: it only pairs ops. Latency is invoke -> ``ok`` completion (fail and info
latencies mostly measure timeouts, so they would hide the interesting numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from millpond.chaos.history import OpPair

__all__ = ["op_stats", "percentile"]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ascending ``ordered`` (non-empty), ``fraction`` in [0, 1]."""
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def op_stats(pairs: Sequence[OpPair]) -> dict[str, Any]:
    """``{"ops": n, "by_f": {f: {"ok", "fail", "info"}}, "latency_s": {f: {"count", "p50", "p99",
    "max"}}}`` over invoke/completion pairs; an op never completed counts as info."""
    by_f: dict[str, dict[str, int]] = {}
    latencies: dict[str, list[float]] = {}
    for pair in pairs:
        counts = by_f.setdefault(pair.f, {"ok": 0, "fail": 0, "info": 0})
        counts[pair.type] += 1
        if pair.type == "ok" and pair.latency is not None:
            latencies.setdefault(pair.f, []).append(pair.latency)
    latency: dict[str, dict[str, float | int]] = {}
    for f, values in sorted(latencies.items()):
        values.sort()
        latency[f] = {
            "count": len(values),
            "p50": percentile(values, 0.50),
            "p99": percentile(values, 0.99),
            "max": values[-1],
        }
    return {"ops": len(pairs), "by_f": dict(sorted(by_f.items())), "latency_s": latency}
