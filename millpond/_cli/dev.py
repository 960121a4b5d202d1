"""``millpond dev``: a local cluster of node processes for development; ``millpond dev stop``.

The cluster's data and logs live in ``--data-dir`` (``node-<id>/`` and
``node-<id>.log`` per node) together with ``dev.json``, the state file that
``dev stop`` reads: every node's id, address, pid and command line. Data
survives a stop: the next ``millpond dev`` on the same directory restarts the
same cluster from its LMDB files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from millpond._cli.common import CommandError
from millpond.testing.cluster import ClusterStartError, LocalCluster, node_stop_grace_s

STATE_FILE = "dev.json"
_MONITOR_INTERVAL_S = 0.5


def _state_path(data_dir: str) -> Path:
    return Path(data_dir) / STATE_FILE


def _node_data_dir(pid: int) -> Path | None:
    """The ``--data-dir`` of process ``pid`` if it is a live millpond node, else None."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = [arg.decode(errors="replace") for arg in raw.split(b"\0")]  # a zombie's is empty: gone
    if "node" not in args or not any("millpond" in arg for arg in args[:3]) or "--data-dir" not in args:
        return None
    index = args.index("--data-dir") + 1
    if index >= len(args):
        return None
    try:
        return (Path(f"/proc/{pid}/cwd").resolve() / args[index]).resolve()
    except OSError:
        return None


def _is_node_process(pid: int) -> bool:
    """True if ``pid`` is alive and runs a millpond node (guards against a recycled pid)."""
    return _node_data_dir(pid) is not None


def _nodes_under(data_dir: str) -> list[int]:
    """Pids of every node process whose data directory lies in ``data_dir`` (restarted ones too)."""
    root = Path(data_dir).resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            node_dir = _node_data_dir(int(entry.name))
            if node_dir is not None and node_dir.is_relative_to(root):
                found.append(int(entry.name))
    return found


def _running_pids(data_dir: str) -> list[int]:
    try:
        state = json.loads(_state_path(data_dir).read_text())
    except (OSError, ValueError):
        state = {}
    recorded = [node["pid"] for node in state.get("nodes", []) if _is_node_process(node["pid"])]
    return sorted(set(recorded) | set(_nodes_under(data_dir)))


def _write_state(cluster: LocalCluster, data_dir: str, detached: bool) -> None:
    state = {
        "bootstrap": cluster.bootstrap,
        "detached": detached,
        "supervisor_pid": None if detached else os.getpid(),
        "nodes": [
            {"id": node.node_id, "address": node.address, "pid": node.pid, "log": str(node.log_path),
             "command": cluster.command(node.node_id)}
            for node in cluster.nodes.values()
        ],
    }
    path = _state_path(data_dir)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(path)


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the foreground loop."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def dev(args: argparse.Namespace) -> int:
    """Start ``--nodes`` nodes on consecutive ports from ``--port``; print the bootstrap address."""
    if args.action == "stop":
        return dev_stop(args)
    running = _running_pids(args.data_dir)
    if running:
        raise CommandError(
            f"a dev cluster is already running from {args.data_dir} (pids {', '.join(map(str, running))}); "
            f"stop it with: millpond dev stop --data-dir {args.data_dir}"
        )
    cluster = LocalCluster(args.nodes, data_dir=args.data_dir, base_port=args.port)
    try:
        cluster.start()
    except ClusterStartError as exc:
        raise CommandError(str(exc).splitlines()[0]) from exc
    _write_state(cluster, args.data_dir, args.detach)
    print(cluster.bootstrap, flush=True)
    for node in cluster.nodes.values():
        print(f"node {node.node_id}  {node.address}  pid {node.pid}  log {node.log_path}", file=sys.stderr)
    if args.detach:
        cluster.detach()
        print(f"detached; stop with: millpond dev stop --data-dir {args.data_dir}", file=sys.stderr)
        return 0
    print("running; Ctrl-C stops the cluster", file=sys.stderr)
    return _supervise(cluster, args.data_dir)


def _supervise(cluster: LocalCluster, data_dir: str) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    reported: set[int] = set()
    try:
        while True:
            for node in cluster.nodes.values():
                if node.node_id not in reported and node.process is not None and not node.running:
                    reported.add(node.node_id)
                    print(f"node {node.node_id} exited with code {node.process.returncode} "
                          f"(log {node.log_path})", file=sys.stderr)
            if len(reported) == len(cluster.nodes):
                print("every node has exited", file=sys.stderr)
                return 0
            time.sleep(_MONITOR_INTERVAL_S)
    except (KeyboardInterrupt, _Stop):
        print("stopping the cluster", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        cluster.stop()
        _state_path(data_dir).unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)


def dev_stop(args: argparse.Namespace) -> int:
    """Stop every node of ``--data-dir``: those in its state file and any other node process whose data
    directory lies in it (a node restarted by hand). SIGTERM, then SIGKILL after a grace period."""
    path = _state_path(args.data_dir)
    pids = _running_pids(args.data_dir)
    if not path.exists() and not pids:
        raise CommandError(f"no dev cluster in {args.data_dir} ({STATE_FILE} not found, no node running)")
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + node_stop_grace_s
    while time.monotonic() < deadline and any(_is_node_process(pid) for pid in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if _is_node_process(pid)]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    note = f" ({len(killed)} killed after {node_stop_grace_s:g} s)" if killed else ""
    print(f"stopped {len(pids)} nodes{note}")
    return 0
