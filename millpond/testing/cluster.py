"""A cluster of real millpond node processes on this machine: for tests, benchmarks and ``millpond dev``.

::

    with LocalCluster(nodes=3) as cluster:        # free ports, a temporary data dir
        admin = Admin(cluster.bootstrap)
        ...
        cluster.kill(2)                           # SIGKILL node 2
        cluster.start_node(2)                     # restart it on its data dir

Each node is a fresh ``python -m millpond.cli node ...`` process (never a
fork of a process that already uses gRPC), with its own data directory
``<data_dir>/node-<id>`` and its output in ``<data_dir>/node-<id>.log``.
:meth:`LocalCluster.start` waits until every node printed its
``millpond node N listening on HOST:PORT`` line and ``DescribeCluster`` shows
every node alive and an active controller. Leaving the ``with`` block (or
:meth:`LocalCluster.stop`) stops every node, SIGTERM first, then SIGKILL after
a grace period, and an ``atexit`` hook does the same if the interpreter exits
first; a temporary data directory is removed. Nothing is left behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from millpond.client import Admin, ClientConfig, ClusterDescription
from millpond.errors import MillpondError

__all__ = ["ClusterStartError", "LocalCluster", "NodeProcess", "free_ports"]

#: Seconds a node may take from spawn to its "listening" line.
node_start_timeout_s = 60.0
#: Seconds a node gets to exit after SIGTERM before it is killed.
node_stop_grace_s = 15.0


class ClusterStartError(RuntimeError):
    """A node did not start, or the cluster did not become ready in time (the message names the log)."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound to port 0 and released together)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class NodeProcess:
    """One node of a :class:`LocalCluster`."""

    node_id: int
    address: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the node's output (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalCluster:
    """Node processes on one host, one per port. Use as a context manager, or :meth:`start` / :meth:`stop`.

    ``data_dir``: where node data and logs go (default: a temporary directory,
    removed on stop). ``base_port``: the first node's port, the others follow
    (default: free ports chosen at start). ``node_args``: extra flags for every
    node (e.g. ``["--tick-ms", "50"]``). ``ready_timeout_s``: how long
    :meth:`start` waits for the cluster to be ready.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        data_dir: str | Path | None = None,
        base_port: int | None = None,
        host: str = "127.0.0.1",
        node_args: list[str] | None = None,
        ready_timeout_s: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        if not 1 <= nodes <= 64:
            raise ValueError(f"nodes must be in [1, 64], got {nodes}")
        self._temporary = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="millpond-"))
        self._base_port = base_port
        self.host = host
        self._node_args = list(node_args or [])
        self.ready_timeout_s = ready_timeout_s
        self._python = python
        self._count = nodes
        self.nodes: dict[int, NodeProcess] = {}
        self._atexit_registered = False

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Start every node and wait until the cluster is ready.

        Raises :class:`ClusterStartError` (after stopping whatever started) if
        a node exits or stays silent for ``node_start_timeout_s``, or the
        cluster is not ready within ``ready_timeout_s``.
        """
        ports = (list(range(self._base_port, self._base_port + self._count)) if self._base_port
                 else free_ports(self._count, self.host))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = {
            node_id: NodeProcess(
                node_id=node_id,
                address=f"{self.host}:{port}",
                data_dir=self.data_dir / f"node-{node_id}",
                log_path=self.data_dir / f"node-{node_id}.log",
            )
            for node_id, port in enumerate(ports, start=1)
        }
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            for node_id in self.nodes:
                self._spawn(node_id)
            for node_id in self.nodes:
                self._wait_listening(node_id)
            self.wait_ready(self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``node_stop_grace_s``). Idempotent."""
        for node_id in self.nodes:
            self._signal(node_id, signal.SIGTERM)
        deadline = time.monotonic() + node_stop_grace_s
        for node_id in self.nodes:
            self._reap(node_id, deadline)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def detach(self) -> None:
        """Leave the nodes running when this object goes away (``millpond dev --detach``)."""
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        for node in self.nodes.values():
            if node._log is not None:
                node._log.close()
                node._log = None
            node.process = None

    # --- one node --------------------------------------------------------------------------
    def peer_address(self, from_id: int, to_id: int) -> str:
        """Where node ``from_id`` reaches node ``to_id``: its ``--peers`` entry for ``to_id``.

        The real address here. A subclass may route each directed node-to-node link elsewhere
        (the chaos harness points it at a fault proxy); a node's entry for itself must stay
        its listen address (the node checks that)."""
        return self.nodes[to_id].address

    def command(self, node_id: int) -> list[str]:
        """The command line that runs node ``node_id``."""
        node = self.nodes[node_id]
        peers = ",".join(f"{n.node_id}={self.peer_address(node_id, n.node_id)}" for n in self.nodes.values())
        return [
            self._python, "-m", "millpond.cli", "node",
            "--node-id", str(node_id), "--listen", node.address,
            "--data-dir", str(node.data_dir), "--peers", peers, *self._node_args,
        ]

    def _spawn(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        if node._log is not None:
            node._log.close()
        node._log = open(node.log_path, "ab")  # the node writes to it for its lifetime
        node._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting node {node_id}\n".encode())
        node._log.flush()
        node.process = subprocess.Popen(
            self.command(node_id),
            stdin=subprocess.DEVNULL,
            stdout=node._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only the supervisor
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _wait_listening(self, node_id: int) -> None:
        node = self.nodes[node_id]
        process = node.process
        if process is None:
            raise RuntimeError(f"node {node_id} was not started")
        marker = f"millpond node {node_id} listening on".encode()
        deadline = time.monotonic() + node_start_timeout_s
        start = node.log_path.stat().st_size if node.log_path.exists() else 0
        while True:
            with open(node.log_path, "rb") as log:
                log.seek(max(0, start - 4096))
                if marker in log.read():
                    return
            code = process.poll()
            if code is not None:
                raise ClusterStartError(
                    f"node {node_id} exited with code {code} while starting; log {node.log_path}:\n"
                    f"{node.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"node {node_id} did not report listening within {node_start_timeout_s} s; "
                    f"log {node.log_path}:\n{node.log_tail()}"
                )
            time.sleep(0.05)

    def start_node(self, node_id: int, wait: bool = True) -> None:
        """(Re)start node ``node_id`` on its data directory; wait for its "listening" line if ``wait``."""
        if self.nodes[node_id].running:
            raise RuntimeError(f"node {node_id} is running")
        self._spawn(node_id)
        if wait:
            self._wait_listening(node_id)

    def kill(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) to node ``node_id`` and, for SIGKILL, wait until it is gone."""
        self._signal(node_id, sig)
        if sig == signal.SIGKILL:
            self._reap(node_id, time.monotonic() + node_stop_grace_s)

    def stop_node(self, node_id: int) -> int | None:
        """Stop node ``node_id`` cleanly (SIGTERM, SIGKILL after the grace period); return its exit code."""
        self._signal(node_id, signal.SIGTERM)
        return self._reap(node_id, time.monotonic() + node_stop_grace_s)

    def _signal(self, node_id: int, sig: signal.Signals) -> None:
        process = self.nodes[node_id].process
        if process is not None and process.poll() is None:
            process.send_signal(sig)

    def _reap(self, node_id: int, deadline: float) -> int | None:
        node = self.nodes[node_id]
        process = node.process
        if process is None:
            return None
        try:
            code = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if node._log is not None:
            node._log.close()
            node._log = None
        return code

    # --- the cluster as clients see it ------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (what ``--bootstrap`` and the clients take)."""
        return ",".join(node.address for node in self.nodes.values())

    def address(self, node_id: int) -> str:
        return self.nodes[node_id].address

    def describe(self, timeout_ms: int = 5000) -> ClusterDescription:
        """``DescribeCluster(include_topics=True)`` from any running node."""
        running = [n.address for n in self.nodes.values() if n.running] or [self.bootstrap]
        with Admin(running, ClientConfig(request_timeout_ms=timeout_ms)) as admin:
            return admin.describe_cluster(include_topics=True)

    def wait_ready(self, timeout_s: float = 60.0, nodes: int | None = None) -> ClusterDescription:
        """Wait until ``nodes`` (default: all) nodes are registered and alive, a controller is active
        and every partition has a leader; return that description. Raises :class:`ClusterStartError`."""
        wanted = self._count if nodes is None else nodes
        deadline = time.monotonic() + timeout_s
        reason = "no answer yet"
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    raise ClusterStartError(
                        f"node {node.node_id} exited with code {node.process.returncode}; "
                        f"log {node.log_path}:\n{node.log_tail()}"
                    )
            try:
                cluster = self.describe(timeout_ms=2000)
            except MillpondError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                alive = sum(node.alive for node in cluster.nodes)
                if cluster.ready and alive >= wanted:
                    return cluster
                reason = (f"{alive} of {wanted} nodes alive, controller {cluster.controller or 'none'}, "
                          f"{cluster.offline_partitions} offline partitions")
            time.sleep(0.1)
        raise ClusterStartError(f"cluster not ready within {timeout_s} s: {reason}; logs in {self.data_dir}")

    def leader(self, topic: str, partition: int, timeout_s: float = 30.0) -> int:
        """Node id of the current leader of a partition, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                for described in self.describe().topics:
                    if described.name == topic and described.partitions[partition].leader:
                        return described.partitions[partition].leader
            except MillpondError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader for {topic}/{partition} within {timeout_s} s")
            time.sleep(0.1)
