"""SIGKILL the writer process mid-stream: acknowledged writes survive, none is partial.

A child process (``lmdb_crash_writer.py``) writes seeded workloads to several
groups through the asyncio bridge and prints one ``ack`` line per durable
write. The parent reads a seeded number of lines, SIGKILLs the child while it
keeps writing, drains what it printed before dying, reopens the environment,
and checks each group against the workload's ``MemoryStorage`` model: the
stored log (entries, snapshot, hard state, memberships) must equal the model
after exactly the acknowledged number of writes, or one more (the write that
was in flight). Anything partial (some of a save's entries, entries without
their hard state, a snapshot without its truncation) matches neither. The next
round's child resumes from the recovered state, so recovery is also checked to
leave a store that keeps working.
"""

from __future__ import annotations

import importlib.util
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from millpond.raft.lmdb_store import LogStore

HELPER = Path(__file__).with_name("lmdb_crash_writer.py")
GROUPS = 4
ROUNDS = 6
#: Acknowledgements to read before each kill: drawn from this range.
ACKS_BEFORE_KILL = (5, 250)
#: Writes per group after which a child stops by itself (never reached in practice).
CHILD_OPS_MAX = 100_000
#: Bound on waiting for the child's output in one round.
ROUND_DEADLINE_S = 60.0


def _load_workload() -> ModuleType:
    """The helper module next to this file (loaded by path: tests are not a package)."""
    name = "lmdb_crash_writer"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


workload = _load_workload()


class _Lines:
    """Complete lines read from a child's stdout, each wait bounded by a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._deadline = deadline
        self._buffer = b""
        self.lines: list[str] = []
        self.eof = False

    def read_until(self, count: int) -> None:
        """Read until ``count`` lines arrived or the stream ended; fail at the deadline."""
        while len(self.lines) < count and not self.eof:
            remaining = self._deadline - time.monotonic()
            assert remaining > 0, f"child printed {len(self.lines)} lines before the deadline"
            if self._selector.select(remaining):
                self._read_chunk()

    def drain(self) -> None:
        """Read to the end of the stream (the child is dead); keep only complete lines."""
        self.read_until(sys.maxsize)

    def _read_chunk(self) -> None:
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self.eof = True
            return
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(line.decode() for line in complete)

    def close(self) -> None:
        self._selector.close()


def _acknowledged(lines: list[str], resume: list[int]) -> list[int]:
    """Per group, the highest write count acknowledged (or the count resumed from)."""
    acked = list(resume)
    for line in lines:
        if line.startswith("ack "):
            _, group, ops, _last, _term = line.split()
            acked[int(group)] = max(acked[int(group)], int(ops))
    return acked


def _run_child(path: Path, seed: int, resume: list[int], acks: int,
               stderr: Path) -> list[str]:
    """Start a writer, read ``acks`` acknowledgements, SIGKILL it, return all it printed."""
    command = [sys.executable, str(HELPER), str(path), str(seed), str(GROUPS),
               ",".join(map(str, resume)), str(CHILD_OPS_MAX)]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
    lines = _Lines(proc, time.monotonic() + ROUND_DEADLINE_S)
    try:
        lines.read_until(acks + 1)  # "ready" + acks
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=ROUND_DEADLINE_S)
        lines.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lines.close()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr.read_text()[-2000:])
    assert lines.lines[:1] == ["ready"], stderr.read_text()[-2000:]
    return lines.lines


def _recovered_count(store: LogStore, seed: int, group: int, acked: int) -> int:
    """Which model state the reopened group is in: ``acked`` or ``acked + 1`` writes."""
    model = workload.Workload(seed, group)
    model.skip(acked)
    stored = workload.dump(store.group(group))
    if stored == workload.dump(model.model):
        return acked
    model.next_op()
    assert stored == workload.dump(model.model), (
        f"seed={seed} group={group}: the reopened log matches neither the state after "
        f"{acked} acknowledged writes nor the one after the next write")
    return acked + 1


def test_sigkill_keeps_every_acknowledged_write_and_no_partial_one(tmp_path: Path) -> None:
    seed = 20240611
    rng = random.Random(seed)
    path = tmp_path / "env"
    resume = [0] * GROUPS
    for round_number in range(ROUNDS):
        acks = rng.randint(*ACKS_BEFORE_KILL)
        lines = _run_child(path, seed, resume, acks, tmp_path / f"stderr-{round_number}")
        acked = _acknowledged(lines, resume)
        assert sum(acked) - sum(resume) >= acks, (round_number, acks, acked)
        with LogStore(path) as store:
            resume = [_recovered_count(store, seed, group, acked[group])
                      for group in range(GROUPS)]
