"""``timeline.png``: throughput and latency over a run, with the fault windows shaded.

The point is that a person sees at a glance what the faults did: sends per
second (ok, fail, info) in the top panel, each completed send's latency in the
bottom one, and every nemesis window as a shaded band labelled with its fault
and targets. Drawn with matplotlib's non-interactive Agg backend; matplotlib is
imported only here, so a run without it still checks and reports (the report
then says the plot is missing and why).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from millpond.chaos.history import FaultWindow, Op, OpPair, pair_ops

#: Width of a throughput bucket, seconds.
BUCKET_S = 1.0
_COLORS = {"ok": "#2a7ab9", "fail": "#e8a33d", "info": "#d43d3d"}
_FAULT_COLORS = ("#f4cccc", "#d9ead3", "#cfe2f3", "#fff2cc", "#d9d2e9", "#fce5cd")


def throughput(pairs: Sequence[OpPair], f: str, end_time: float) -> dict[str, list[int]]:
    """Completions of ``f`` per :data:`BUCKET_S` bucket, by completion type (by completion time)."""
    buckets = int(end_time // BUCKET_S) + 1
    series = {kind: [0] * buckets for kind in _COLORS}
    for pair in pairs:
        if pair.f != f or pair.completion is None:
            continue
        bucket = min(buckets - 1, int(pair.completion.time // BUCKET_S))
        series[pair.type][bucket] += 1
    return series


def draw(history: Sequence[Op], windows: Sequence[FaultWindow], path: Path, title: str,
         f: str = "send") -> str | None:
    """Write the timeline of ``f`` operations to ``path``; return None, or why it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dev/chaos dependency
        return f"matplotlib is not installed ({exc}); pip install 'millpond[chaos]'"
    pairs = pair_ops(history)
    end_time = max((op.time for op in history), default=0.0)
    end_time = max([end_time, *(w.end(end_time) for w in windows)])
    series = throughput(pairs, f, end_time)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True,
                                         gridspec_kw={"height_ratios": [1, 1.2]})
    xs = [i * BUCKET_S for i in range(len(series["ok"]))]
    for kind, color in _COLORS.items():
        if any(series[kind]):
            top.step(xs, series[kind], where="post", color=color, label=f"{f} {kind}/s")
    top.set_ylabel(f"{f}s per second")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title)
    counts: Counter[str] = Counter()
    for kind, color in _COLORS.items():
        points = [(p.invoke.time, p.latency * 1000) for p in pairs
                  if p.f == f and p.type == kind and p.latency is not None]
        counts[kind] = len(points)
        if points:
            bottom.scatter([x for x, _ in points], [y for _, y in points], s=4, color=color,
                           marker="x" if kind == "info" else ".", label=f"{kind} ({len(points)})")
    bottom.set_yscale("log")
    bottom.set_ylabel(f"{f} latency (ms, log)")
    bottom.set_xlabel("seconds since start")
    if any(counts.values()):
        bottom.legend(loc="upper right", fontsize=8)
    for i, window in enumerate(windows):
        color = _FAULT_COLORS[i % len(_FAULT_COLORS)]
        stop = window.end(end_time)
        for axis in (top, bottom):
            axis.axvspan(window.start, stop, color=color, alpha=0.5, lw=0, zorder=0)
        targets = ",".join(str(t) for t in window.targets)
        top.text(window.start, 1.0, f" {window.fault} {targets}", transform=top.get_xaxis_transform(),
                 fontsize=7, va="top", rotation=0, clip_on=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
