"""``millpond chaos run``: one chaos test from cluster start to verdict, and the files it leaves.

A run: start a :class:`~millpond.chaos.harness.ChaosCluster` (every node-to-node
link through its own fault proxy); set the workload up; run the workload and a
seeded :class:`~millpond.chaos.nemesis.schedule.NemesisSchedule` together for
``duration_s``; heal everything; let the workload read everything back; judge
the history with the workload's checkers. It writes, in its own directory
under ``out``::

    history.jsonl    every operation (invoke/ok/fail/info)      -- Jepsen's history
    nemesis.jsonl    every fault start/stop with its targets
    results.json     verdicts, error types with counts and examples, op stats, seed, config, plan
    summary.md       the same for people
    timeline.png     throughput and latency over time, fault windows shaded
    logs/            node logs and the proxy log

Exit codes (:func:`millpond.chaos.checkers.verdict.exit_code`): 0 valid and
live, 1 safety violation, 2 liveness failure, 3 unknown — and a harness error
(a cluster that never started, a workload that could not set up) is 3, never a
pass. One seed replays a run's plan exactly (the cluster's timing is real and
varies, so the same seed exercises the same faults, not the same interleaving).
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import random
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from millpond.chaos.checkers import CheckConfig, check, exit_code
from millpond.chaos.checkers.verdict import EXIT_UNKNOWN, Result
from millpond.chaos.harness import FAST_NODE_ARGS, ChaosCluster
from millpond.chaos.history import HistoryWriter, fault_windows, load_history, load_nemesis
from millpond.chaos.nemesis.log import NemesisLog
from millpond.chaos.nemesis.registry import FAULTS, expand_fault_names
from millpond.chaos.nemesis.schedule import NemesisSchedule, ScheduleConfig, plan_schedule
from millpond.chaos.timeline import draw
from millpond.chaos.workloads.base import FinalState, WorkloadContext
from millpond.chaos.workloads.registry import create_workload

log = logging.getLogger(__name__)

#: Seconds the cluster may take to be whole again after healing, and the final reads to finish.
RECOVERY_S_DEFAULT = 60.0
#: Longest run a command line may ask for (a bound on every loop of a run).
DURATION_S_MAX = 3600.0


@dataclass(frozen=True)
class RunConfig:
    """What one ``millpond chaos run`` does (see the module docstring)."""

    workload: str = "log"
    nemesis: tuple[str, ...] = ("kill-leader",)
    nodes: int = 3
    duration_s: float = 60.0
    seed: int = 0
    out: Path = Path("runs")
    options: dict[str, str] = field(default_factory=dict)
    proxy: str = "own"
    quiet_s: tuple[float, float] = (4.0, 8.0)
    fault_s: tuple[float, float] = (6.0, 12.0)
    faults_at_once: int = 1
    recovery_s: float = RECOVERY_S_DEFAULT
    progress_grace_s: float = 6.0

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting (before anything starts)."""
        if not 1 <= self.nodes <= 9:
            raise ValueError(f"nodes must be in [1, 9], got {self.nodes}")
        if not 0 < self.duration_s <= DURATION_S_MAX:
            raise ValueError(f"duration must be in (0, {DURATION_S_MAX:g}] s, got {self.duration_s}")
        if self.recovery_s <= 0:
            raise ValueError(f"recovery must be > 0 s, got {self.recovery_s}")
        fault_names(self.nemesis)
        ScheduleConfig(self.quiet_s, self.fault_s, self.faults_at_once)
        create_workload(self.workload).configure(self.options, self.nodes)


def fault_names(patterns: tuple[str, ...]) -> list[str]:
    """Expand ``--nemesis`` items: an exact fault name, a shell pattern (``kill-*``), or a family
    prefix (``partition`` = ``partition-*``). KeyError names the known faults for a bad item."""
    expanded: list[str] = []
    for item in patterns:
        item = item.strip()
        if not item:
            continue
        if item in FAULTS or any(ch in item for ch in "*?["):
            names = expand_fault_names([item])
        else:
            names = expand_fault_names([f"{item}-*"])
        expanded.extend(n for n in names if n not in expanded)
    if not expanded:
        raise KeyError("--nemesis names no fault")
    return expanded


@dataclass
class RunOutcome:
    """Where a run's files are, its verdict (None after a harness error) and its exit code."""

    directory: Path
    exit_code: int
    result: Result | None
    error: str | None = None


def run(config: RunConfig) -> RunOutcome:
    """Run one chaos test (blocking; owns its event loop). Never raises for a failure of the system
    under test or of the harness: both end in the outcome (exit code 3 for the harness)."""
    config.validate()
    directory = _run_directory(config)
    return asyncio.run(_run(config, directory))


def _run_directory(config: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = config.out / f"{stamp}-{config.workload}-seed{config.seed}"
    directory, suffix = base, 1
    while directory.exists():
        suffix += 1
        directory = base.with_name(f"{base.name}-{suffix}")
    directory.mkdir(parents=True)
    return directory


async def _run(config: RunConfig, directory: Path) -> RunOutcome:
    workload = create_workload(config.workload)
    workload.configure(config.options, config.nodes)
    faults = fault_names(config.nemesis)
    plan = plan_schedule(config.seed, config.duration_s, faults,
                         ScheduleConfig(config.quiet_s, config.fault_s, config.faults_at_once))
    # Node ports are not derived from the seed: two runs of one seed may run side by side.
    cluster = ChaosCluster(config.nodes, node_args=(*FAST_NODE_ARGS, *workload.node_args),
                           proxy=config.proxy)
    record: dict[str, Any] = {
        "config": _config_json(config), "faults": faults, "plan": plan.to_json(),
        "workload": {"name": workload.name, "allowed": sorted(workload.allowed),
                     "node_args": list(workload.node_args), "options": asdict(workload.options)},
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }
    final: FinalState | None = None
    error: str | None = None
    started = time.monotonic()
    try:
        await cluster.start()
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        with HistoryWriter(directory / "history.jsonl", now=now) as history, \
                NemesisLog(directory / "nemesis.jsonl", clock=now) as nemesis_log:
            ctx = WorkloadContext(addresses={n: cluster.address(n) for n in cluster.node_ids},
                                  history=history, rng=random.Random(config.seed), now=now,
                                  options=config.options)
            await workload.setup(ctx)
            schedule = NemesisSchedule(cluster, plan, nemesis_log, topic=workload.topic)
            final = await _drive(config, workload, ctx, schedule, cluster)
            record["fault_runs"] = [
                {"period": r.period, "fault": r.planned.fault, "id": r.fault_id,
                 "targets": r.record.targets if r.record else None, "skipped": r.skipped,
                 "stop": r.stop_detail} for r in schedule.runs]
    except Exception as exc:  # a harness error: reported, never a pass
        error = f"{type(exc).__name__}: {exc}"
        log.error("chaos run failed: %s", error)
        record["harness_traceback"] = traceback.format_exc()
    finally:
        _copy_logs(cluster, directory / "logs")
        await cluster.stop()
    record["wall_s"] = round(time.monotonic() - started, 1)
    if error is not None:
        record["harness_error"] = error
        _write_results(directory, record, None)
        _write_summary(directory, config, record, None)
        return RunOutcome(directory, EXIT_UNKNOWN, None, error)
    return _judge(config, workload.allowed, directory, record, final)


async def _drive(config: RunConfig, workload: Any, ctx: WorkloadContext, schedule: NemesisSchedule,
                 cluster: ChaosCluster) -> FinalState:
    """The faulty period, healing, and the final reads."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        driving = tasks.create_task(workload.run(ctx, stop))
        faults = tasks.create_task(schedule.run())
        # The run's length is the schedule's: its last period ends by duration_s, then it heals.
        await asyncio.sleep(config.duration_s)
        await faults
        stop.set()
        await driving
    await cluster.wait_ready(config.recovery_s)
    return await workload.final(ctx, config.recovery_s)  # type: ignore[no-any-return]


def _judge(config: RunConfig, allowed: frozenset[str], directory: Path, record: dict[str, Any],
           final: FinalState | None) -> RunOutcome:
    history = load_history(directory / "history.jsonl")
    windows = fault_windows(load_nemesis(directory / "nemesis.jsonl"))
    replicas = final.replicas if final is not None else None
    result = check(history, windows, replicas, allowed,
                   CheckConfig(workload=_checker_of(config.workload),
                               progress_grace_s=config.progress_grace_s))
    record["replicas"] = replicas
    record["windows"] = [asdict(w) for w in windows]
    code = exit_code(result)
    record["exit_code"] = code
    problem = draw(history, windows, directory / "timeline.png",
                   f"{config.workload} / {','.join(config.nemesis)} / seed {config.seed}: "
                   f"{_verdict_word(code)}")
    if problem:
        record["timeline"] = problem
    _write_results(directory, record, result)
    _write_summary(directory, config, record, result)
    return RunOutcome(directory, code, result)


def _checker_of(workload: str) -> str:
    return create_workload(workload).checker


def _verdict_word(code: int) -> str:
    return {0: "valid", 1: "SAFETY VIOLATION", 2: "LIVENESS FAILURE"}.get(code, "unknown")


def _config_json(config: RunConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    return data


def _copy_logs(cluster: ChaosCluster, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        sources = {f"node-{n}.log": path for n, path in cluster.node_logs.items()}
    except Exception:  # the cluster never got far enough to have nodes
        sources = {}
    sources["proxy.log"] = cluster.proxy_log
    for name, path in sources.items():
        if path.exists():
            shutil.copyfile(path, target / name)


def _write_results(directory: Path, record: dict[str, Any], result: Result | None) -> None:
    data = dict(record)
    if result is not None:
        data["verdict"] = result.to_dict()
    (directory / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


def _write_summary(directory: Path, config: RunConfig, record: dict[str, Any],
                   result: Result | None) -> None:
    lines = [f"# chaos run: {config.workload} under {', '.join(config.nemesis)}", ""]
    lines.append(f"- seed `{config.seed}`, {config.nodes} nodes, {config.duration_s:g} s of faults, "
                 f"wall {record.get('wall_s', '?')} s")
    lines.append(f"- replay: `millpond chaos run --workload {config.workload} --nemesis "
                 f"{','.join(config.nemesis)} --nodes {config.nodes} --duration {config.duration_s:g} "
                 f"--seed {config.seed}`")
    if result is None:
        lines += ["", f"**Harness error** (exit 3, not a verdict): {record.get('harness_error')}"]
        (directory / "summary.md").write_text("\n".join(lines) + "\n")
        return
    code = record.get("exit_code", EXIT_UNKNOWN)
    lines += ["", f"## Verdict: {_verdict_word(code)} (exit {code})", "", f"    {result.summary()}", ""]
    data = result.to_dict()
    lines.append("## Faults")
    lines.append("")
    for run_record in record.get("fault_runs", []):
        state = f"skipped: {run_record['skipped']}" if run_record["skipped"] else \
            f"#{run_record['id']} targets {run_record['targets']}"
        lines.append(f"- period {run_record['period']}: `{run_record['fault']}` {state}")
    lines += ["", "## Operations", "", "```", json.dumps(data.get("stats", {}), indent=2), "```", ""]
    for title, key in (("Safety errors", "errors"), ("Allowed (expected) errors", "allowed_errors")):
        found = data.get(key) or {}
        lines += [f"## {title}", ""]
        if not found:
            lines += ["none", ""]
            continue
        for name, finding in sorted(found.items()):
            lines.append(f"- **{name}**: {finding['count']}")
            for example in finding["examples"][:3]:
                lines.append(f"  - `{json.dumps(example, default=str)[:300]}`")
        lines.append("")
    liveness = data.get("liveness", {})
    lines += ["## Liveness", "", f"valid: {liveness.get('valid')}", ""]
    for name, finding in sorted((liveness.get("failures") or {}).items()):
        lines.append(f"- **{name}**: {finding['count']}")
    lines += ["", "![timeline](timeline.png)", ""]
    (directory / "summary.md").write_text("\n".join(lines) + "\n")
