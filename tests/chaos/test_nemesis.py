"""Nemeses: the seeded plan (pure), partition shapes and the registry (pure), the schedule runner
against scripted faults (pure), and real faults against a real 3-node chaos cluster.

The live tests share one module-scoped cluster; each fault is started, held briefly, stopped, and
the cluster must then be ready again and take an ``acks=all`` write.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from millpond.chaos.harness import FAST_NODE_ARGS, ChaosCluster, has_connected_majority
from millpond.chaos.history import fault_windows, load_nemesis
from millpond.chaos.nemesis import (
    Fault,
    FaultNotApplicable,
    FaultRecord,
    NemesisLog,
    NemesisSchedule,
    ScheduleConfig,
    create_fault,
    expand_fault_names,
    fault_names,
    plan_schedule,
)
from millpond.chaos.nemesis.faults import PARTITION_SHAPES, TARGETS, plan_partition
from millpond.client import AsyncProducer, ProducerConfig

#: Seconds the shared cluster may take to start.
START_TIMEOUT_S = 120.0
#: Seconds to wait for a ready cluster after a fault.
CONVERGE_S = 60.0
#: Seconds each fault of the live test is held before it is stopped.
HOLD_S = 1.0
#: Seconds the whole live fault tour may take.
TOUR_TIMEOUT_S = 400.0


# --- the plan ------------------------------------------------------------------------------------------
def test_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    names = fault_names()
    config = ScheduleConfig(quiet_s=(2.0, 4.0), fault_s=(3.0, 6.0), faults_at_once=2)
    first = plan_schedule(1234, 120.0, names, config)
    assert first == plan_schedule(1234, 120.0, names, config)
    assert first.to_json() == plan_schedule(1234, 120.0, names, config).to_json()
    assert first != plan_schedule(1235, 120.0, names, config)
    assert len(first.periods) >= 10


def test_plan_alternates_quiet_and_fault_periods_within_the_duration() -> None:
    config = ScheduleConfig(quiet_s=(2.0, 4.0), fault_s=(3.0, 6.0))
    plan = plan_schedule(99, 60.0, ["kill-one", "pause-one", "partition-halves-refuse"], config)
    previous_stop = 0.0
    for index, period in enumerate(plan.periods):
        assert period.index == index
        assert 2.0 - 0.001 <= period.start_s - previous_stop <= 4.0 + 0.001
        assert period.stop_s - period.start_s <= 6.0 + 0.001
        assert period.stop_s - period.start_s >= 3.0 - 0.001 or period.stop_s == 60.0
        assert len(period.faults) == 1
        previous_stop = period.stop_s
    assert previous_stop <= 60.0
    seeds = [fault.seed for period in plan.periods for fault in period.faults]
    assert len(set(seeds)) == len(seeds)


def test_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_schedule(1, 10.0, [])
    with pytest.raises(ValueError):
        plan_schedule(1, 0.0, ["kill-one"])
    with pytest.raises(ValueError):
        plan_schedule(1, 10.0, ["kill-one"], ScheduleConfig(faults_at_once=2))
    with pytest.raises(ValueError):
        ScheduleConfig(quiet_s=(3.0, 1.0))


# --- partition shapes and the registry -----------------------------------------------------------------
@pytest.mark.parametrize("nodes", [[1, 2, 3], [1, 2, 3, 4, 5]])
def test_partition_shapes_cut_the_links_they_promise(nodes: list[int]) -> None:
    count, majority = len(nodes), len(nodes) // 2 + 1
    rng = random.Random(5)
    isolate = plan_partition("isolate-leader", nodes, rng, chosen=2)
    assert isolate.targets == (2,) and len(isolate.links) == 2 * (count - 1)
    assert all(2 in link for link in isolate.links)
    halves = plan_partition("halves", nodes, rng)
    minority, bigger = halves.detail["groups"]
    assert len(minority) == count // 2 and len(halves.links) == 2 * len(minority) * len(bigger)
    assert has_connected_majority(nodes, cut=halves.links)
    ring = plan_partition("majorities-ring", nodes, rng)
    for node in nodes:  # every node hears a majority (itself included), and only that
        assert sum(1 for link in ring.links if link[1] == node) == count - majority
    # On 3 nodes no pair keeps both directions; on 5 each node keeps two-way links to 2 others.
    assert has_connected_majority(nodes, cut=ring.links) == (count == 5)
    bridge = plan_partition("bridge", nodes, rng)
    assert all(bridge.detail["bridge"] not in link for link in bridge.links)
    assert has_connected_majority(nodes, cut=bridge.links)
    one_way = plan_partition("one-way", nodes, rng)
    assert len(one_way.links) == 1 and one_way.targets == one_way.links[0]
    assert plan_partition("halves", nodes, random.Random(8)) == plan_partition(
        "halves", nodes, random.Random(8))


def test_registry_names_every_fault_and_builds_it() -> None:
    expected = {f"{action}-{target}" for action in ("kill", "pause", "restart") for target in TARGETS}
    expected |= {f"partition-{shape}-{mode}" for shape in PARTITION_SHAPES for mode in ("refuse", "silent")}
    expected |= {"packet-latency", "packet-bandwidth", "packet-slicer", "packet-reset-peer"}
    expected |= {"rolling-restart", "leader-transfer", "membership"}
    assert set(fault_names()) == expected
    for name in fault_names():
        fault = create_fault(name, topic="events")
        assert fault.name == name and fault.topic == "events" and fault.description
    assert expand_fault_names(["kill-*", "kill-one", "partition-*-silent"])[:6] == [
        f"kill-{target}" for target in TARGETS
    ]
    with pytest.raises(KeyError):
        create_fault("kill-everything")
    with pytest.raises(KeyError):
        expand_fault_names(["nope-*"])


# --- the schedule runner against scripted faults -------------------------------------------------------
class _FakeClock:
    """Run-clock seconds that only the injected sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class _ScriptedFault(Fault):
    def __init__(self, name: str, behaviour: str, calls: list[str]) -> None:
        super().__init__(name, "scripted")
        self.behaviour = behaviour
        self.calls = calls

    async def start(self, cluster: ChaosCluster, rng: random.Random) -> FaultRecord:
        if self.behaviour == "not-applicable":
            raise FaultNotApplicable("nothing to aim at")
        self.calls.append(f"start {self.name}")
        return FaultRecord(self.name, [rng.randint(1, 3)], self.behaviour != "majority-lost", {"seen": 1})

    async def stop(self, cluster: ChaosCluster, record: FaultRecord) -> dict[str, Any]:
        self.calls.append(f"stop {self.name}")
        if self.behaviour == "stop-fails":
            raise RuntimeError("cannot heal")
        return {"healed": True}


class _FakeCluster:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def heal_all(self) -> None:
        self.calls.append("heal_all")


def _run_scripted(tmp_path: Path, behaviours: dict[str, str], seed: int = 3) -> tuple[list[str], Path, Any]:
    calls: list[str] = []
    clock = _FakeClock()
    plan = plan_schedule(seed, 40.0, list(behaviours), ScheduleConfig(quiet_s=(1.0, 2.0), fault_s=(2.0, 3.0)))
    path = tmp_path / f"nemesis-{seed}.jsonl"

    def factory(name: str, topic: str | None) -> Fault:
        return _ScriptedFault(name, behaviours[name], calls)

    async def main() -> Any:
        with NemesisLog(path, clock) as log:
            schedule = NemesisSchedule(cast(ChaosCluster, _FakeCluster(calls)), plan, log,
                                       fault_factory=factory, sleep=clock.sleep)
            try:
                return await schedule.run()
            except RuntimeError as exc:
                return exc

    return calls, path, (plan, asyncio.run(main()))


def test_schedule_runs_the_plan_on_the_run_clock_and_logs_paired_events(tmp_path: Path) -> None:
    behaviours = {"alpha": "ok", "beta": "majority-lost", "gamma": "not-applicable"}
    calls, path, (plan, runs) = _run_scripted(tmp_path, behaviours)
    started = [run for run in runs if run.record is not None]
    assert [run.planned for run in runs] == [period.faults[0] for period in plan.periods]
    assert all(run.skipped for run in runs if run.planned.fault == "gamma")
    assert calls[-1] == "heal_all" and calls.count("heal_all") == 1
    events = load_nemesis(path)
    assert [event.event for event in events] == ["start", "stop"] * len(started)
    windows = fault_windows(events)
    assert [window.id for window in windows] == [run.fault_id for run in started] == list(
        range(1, len(started) + 1))
    for window, run in zip(windows, started, strict=True):
        period = plan.periods[run.period]
        assert window.start == pytest.approx(period.start_s, abs=0.002)
        assert window.stop == pytest.approx(period.stop_s, abs=0.002)
        assert window.keeps_majority == (run.planned.fault != "beta")
        assert window.fault == run.planned.fault
    stops = [event for event in events if event.event == "stop"]
    assert all(event.detail == {"healed": True} for event in stops)


def test_schedule_heals_everything_when_a_fault_cannot_be_stopped(tmp_path: Path) -> None:
    calls, path, (_, outcome) = _run_scripted(tmp_path, {"broken": "stop-fails"})
    assert isinstance(outcome, RuntimeError) and "cannot heal" in str(outcome)
    assert calls[-1] == "heal_all"
    events = load_nemesis(path)
    assert [event.event for event in events] == ["start", "stop"]
    assert events[1].detail == {"healed_by": "heal_all"}


# --- real faults on a real cluster ---------------------------------------------------------------------
@dataclass
class Live:
    runner: asyncio.Runner
    cluster: ChaosCluster


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    runner = asyncio.Runner()
    cluster = ChaosCluster(3, data_dir=tmp_path_factory.mktemp("chaos-nemesis"), node_args=FAST_NODE_ARGS)

    async def start() -> None:
        await cluster.start()
        await cluster.admin().create_topic("nemesis", 2, 3)
        for partition in range(2):
            await cluster.wait_leader("nemesis", partition, CONVERGE_S)

    try:
        runner.run(asyncio.wait_for(start(), START_TIMEOUT_S))
        yield Live(runner, cluster)
    finally:
        runner.run(cluster.stop())
        runner.close()


async def _write_one(cluster: ChaosCluster, topic: str) -> None:
    config = ProducerConfig(acks="all", request_timeout_ms=5_000, delivery_timeout_ms=int(CONVERGE_S * 1000))
    async with AsyncProducer(cluster.bootstrap, config) as producer:
        await (await producer.send(topic, b"after a fault"))


def _expected_keeps_majority(name: str) -> bool | None:
    """What ``keeps_majority`` a fault must report on 3 nodes with 3 replicas (None: it depends on
    the links drawn)."""
    if name.endswith(("-majority", "-all")) or name.startswith("partition-majorities-ring"):
        return False
    return None if name == "packet-reset-peer" else True


def test_every_fault_starts_stops_and_leaves_the_cluster_healthy(live: Live, tmp_path: Path) -> None:
    """Each registered fault in turn: start, hold, stop; then every node is up, no link is cut, the
    cluster is ready and takes an acks=all write. ``membership`` moves a replica of a 2-replica
    topic (a 3-replica topic has no spare node on 3 nodes)."""
    cluster = live.cluster
    path = tmp_path / "nemesis.jsonl"
    loop_start = live.runner.get_loop().time()

    async def tour() -> None:
        await cluster.admin().create_topic("moves", 1, 2)
        await cluster.wait_leader("moves", 0, CONVERGE_S)
        with NemesisLog(path, lambda: asyncio.get_running_loop().time() - loop_start) as log:
            for seed, name in enumerate(fault_names()):
                topic = "moves" if name == "membership" else "nemesis"
                fault = create_fault(name, topic=topic)
                record = await fault.start(cluster, random.Random(seed))
                fault_id = log.start(record)
                assert record.fault == name and record.targets, record
                assert "error" not in record.detail, record
                expected = _expected_keeps_majority(name)
                assert expected is None or record.keeps_majority is expected, record
                await asyncio.sleep(HOLD_S)  # the fault's duration, not a synchronisation
                log.stop(fault_id, await fault.stop(cluster, record))
                assert not cluster.down() and not cluster.disconnected_links(), name
                await cluster.wait_ready(CONVERGE_S)
                await _write_one(cluster, topic)

    try:
        live.runner.run(asyncio.wait_for(tour(), TOUR_TIMEOUT_S))
    finally:
        live.runner.run(cluster.heal_all())
    windows = fault_windows(load_nemesis(path))
    assert [window.fault for window in windows] == fault_names()
    assert all(window.stop is not None and window.stop >= window.start + HOLD_S for window in windows)


def test_a_seeded_schedule_on_a_live_cluster_heals_and_logs_every_fault(live: Live, tmp_path: Path) -> None:
    cluster = live.cluster
    names = ["kill-one", "partition-isolate-one-refuse", "pause-leader", "packet-slicer"]
    plan = plan_schedule(11, 12.0, names, ScheduleConfig(quiet_s=(1.0, 2.0), fault_s=(2.0, 3.0)))
    path = tmp_path / "nemesis.jsonl"

    async def main() -> list[Any]:
        loop_start = asyncio.get_running_loop().time()
        with NemesisLog(path, lambda: asyncio.get_running_loop().time() - loop_start) as log:
            runs = await NemesisSchedule(cluster, plan, log, topic="nemesis").run()
        await cluster.wait_ready(CONVERGE_S)
        await _write_one(cluster, "nemesis")
        return runs

    runs = live.runner.run(asyncio.wait_for(main(), TOUR_TIMEOUT_S))
    started = [run for run in runs if run.record is not None]
    assert started and len(runs) == len(plan.periods)
    windows = fault_windows(load_nemesis(path))
    assert [(w.id, w.fault) for w in windows] == [(run.fault_id, run.planned.fault) for run in started]
    assert all(window.stop is not None for window in windows)
