"""A local cluster whose every node-to-node link runs through its own fault proxy.

::

    async with ChaosCluster(nodes=3, node_args=FAST_NODE_ARGS) as cluster:
        leader = await cluster.leader_of("events", 0)
        await cluster.isolate(leader, mode="silent")     # cut n{leader}<->n{other} both ways
        ...
        await cluster.heal_all()                          # reset proxies, resume, restart

Topology. A Toxiproxy-API server (our own :mod:`millpond.chaos.proxy`, started as ``millpond chaos
proxy``; or a ``toxiproxy-server`` from PATH with ``proxy="external"``; or one already running at a
``proxy="http://host:port"`` URL) holds one proxy per *directed* link ``n{i}->n{j}``: it listens on
a port of its own and forwards to node j's real address. Node i's ``--peers`` entry for j is that
proxy (see :meth:`LocalCluster.peer_address`), so every call node i starts towards node j -- Raft
messages, controller heartbeats, forwarded admin writes -- crosses ``n{i}->n{j}``, and the answers
come back on the same TCP connection. Cutting ``n{i}->n{j}`` therefore silences i's messages to j
and the answers to them, while j's own calls to i (over ``n{j}->n{i}``) still work: a one-way cut.
Clients talk to the nodes' real addresses; with ``proxy_clients=True`` the bootstrap addresses are
proxies ``c->n{j}`` instead -- note that nodes advertise their real (listen) address in metadata,
so only the bootstrap and metadata traffic of clients crosses those proxies, not produce/fetch.

Faults. ``cut(i, j, mode)`` with ``refuse`` disables the proxy (new connections refused, existing
ones closed: the peer sees errors at once) and with ``silent`` adds a ``timeout`` toxic with
timeout 0 on both streams (connections stay open, bytes vanish: the peer learns only from its own
deadlines and keepalives). Process faults signal the node process (SIGKILL, SIGTERM, SIGSTOP,
SIGCONT). :meth:`heal_all` undoes everything: ``POST /reset`` (every proxy enabled, every toxic
gone), SIGCONT for paused nodes, and a restart of every node that is not running.

Queries ask each reachable node separately (:class:`~millpond.client.AsyncAdmin`, short deadline)
and trust the freshest answer: a node cut off from the majority still answers with the metadata it
had when it was cut off.

Lifetime. :meth:`start` and :meth:`stop` (or ``async with``) own every process: the proxy server
and the nodes are stopped on :meth:`stop`, on an error inside :meth:`start`, and by an ``atexit``
hook if the interpreter exits first. :meth:`start` blocks the event loop while the nodes start
(it reuses the blocking :class:`~millpond.testing.cluster.LocalCluster` start-up): start the
cluster before the workloads. Every other method awaits without blocking the loop, and every wait
has a deadline.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from millpond import limits
from millpond.chaos.toxiproxy_api import (
    Stream,
    ToxiproxyClient,
    ToxiproxyConflict,
    ToxiproxyError,
    ToxiproxyNotFound,
)
from millpond.client import AsyncAdmin, ClientConfig, ClusterDescription, PartitionDescription
from millpond.errors import MillpondError, UnknownTopic
from millpond.testing.cluster import ClusterStartError, LocalCluster, free_ports
from millpond.testing.waiting import POLL_INTERVAL_S, WaitTimeout, wait_until_async

__all__ = [
    "DISCONNECTING_TOXICS",
    "FAST_NODE_ARGS",
    "ChaosCluster",
    "CutMode",
    "client_link_name",
    "has_connected_majority",
    "link_name",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CutMode = Literal["refuse", "silent"]
PacketStream = Literal["upstream", "downstream", "both"]

#: Node flags for fast failure detection (as tests/cluster uses): 50 ms ticks (election timeout
#: 0.5-1 s), controller fencing after 1.5 s without heartbeats, ISR lag 1.5 s.
FAST_NODE_ARGS: tuple[str, ...] = (
    "--tick-ms", "50", "--heartbeat-interval-ms", "200", "--session-timeout-ms", "1500",
    "--replica-lag-ms-max", "1500",
)
#: Toxic types that stop a link from carrying a conversation (for :func:`has_connected_majority`).
DISCONNECTING_TOXICS: frozenset[str] = frozenset({"timeout", "reset_peer", "limit_data"})

#: Seconds the proxy server may take to print its "listening" line (or answer /version).
PROXY_START_TIMEOUT_S = 30.0
#: Seconds the proxy server gets to exit after SIGTERM before it is killed.
PROXY_STOP_GRACE_S = 5.0
#: Seconds a (re)started node may take to print its "listening" line.
NODE_LISTEN_TIMEOUT_S = 60.0
#: Seconds a node gets to exit after SIGTERM before it is killed.
NODE_STOP_GRACE_S = 15.0
#: Deadline of one admin query to one node (a paused node costs this much per query).
ADMIN_REQUEST_TIMEOUT_MS = 2_000
#: Seconds :meth:`ChaosCluster.start` waits for the whole cluster to be ready.
READY_TIMEOUT_S = 90.0
#: Seconds between two checks of :meth:`ChaosCluster.wait_ready` (each asks every node).
READY_POLL_INTERVAL_S = 0.2
#: Seconds :meth:`ChaosCluster.wait_leader` waits by default.
LEADER_WAIT_S = 30.0
#: Node ports are a consecutive run below Linux's ephemeral range (32768-60999), where the
#: proxy's own port-0 listeners land, so the two never collide.
NODE_PORT_RANGE = (12_000, 30_000)
#: Attempts at finding a free consecutive run of node ports.
PORT_RUN_ATTEMPTS_MAX = 200
#: Lines of a log quoted in an error message.
LOG_TAIL_LINES = 20

_PROXY_LINE = re.compile(rb"toxiproxy API listening on (http://\S+)")
_SILENT_TOXICS: tuple[tuple[str, Stream], ...] = (
    ("cut-silent-upstream", "upstream"), ("cut-silent-downstream", "downstream"),
)


def link_name(from_id: int, to_id: int) -> str:
    """The proxy carrying node ``from_id``'s calls to node ``to_id``."""
    return f"n{from_id}->n{to_id}"


def client_link_name(node_id: int) -> str:
    """The proxy carrying clients' bootstrap calls to node ``node_id`` (``proxy_clients=True``)."""
    return f"c->n{node_id}"


def has_connected_majority(
    members: Collection[int],
    down: Collection[int] = (),
    cut: Collection[tuple[int, int]] = (),
) -> bool:
    """Whether a Raft group of ``members`` can still elect a leader and commit.

    ``down`` are nodes that do not run (killed, paused); ``cut`` are directed links ``(i, j)`` that
    carry nothing. A leader needs two-way links to enough followers to form a majority with itself
    (a message goes one way over the sender's link, its answer over the other node's link the other
    way); the followers need not hear each other. So: some up member has two-way links to at least
    ``len(members) // 2`` other up members.
    """
    need = len(members) // 2 + 1
    up = sorted(set(members) - set(down))
    blocked = {frozenset(pair) for pair in cut}
    return any(
        1 + sum(1 for other in up if other != leader and frozenset((leader, other)) not in blocked) >= need
        for leader in up
    )


def _consecutive_free_ports(count: int, host: str, rng: random.Random) -> int:
    """The first of ``count`` consecutive ports in ``NODE_PORT_RANGE`` that were all free a moment ago."""
    low, high = NODE_PORT_RANGE
    for _ in range(PORT_RUN_ATTEMPTS_MAX):
        base = rng.randrange(low, high - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise ClusterStartError(f"no {count} consecutive free ports in {NODE_PORT_RANGE} "
                            f"after {PORT_RUN_ATTEMPTS_MAX} attempts")


def _flag_value(args: Sequence[str], flag: str, default: int) -> int:
    """The integer value of ``flag`` in a node command line (the last one wins), or ``default``."""
    value = default
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = int(args[index + 1])
        elif arg.startswith(flag + "="):
            value = int(arg.split("=", 1)[1])
    return value


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _ProxiedLocalCluster(LocalCluster):
    """A :class:`LocalCluster` whose node-to-node routes are the chaos proxies."""

    def __init__(self, *args: Any, routes: dict[tuple[int, int], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes = routes

    def peer_address(self, from_id: int, to_id: int) -> str:
        if from_id == to_id:
            return super().peer_address(from_id, to_id)
        return self.routes[(from_id, to_id)]


class _ProxyServer:
    """The Toxiproxy-API server process of a chaos cluster (or an external one we do not own)."""

    def __init__(self, kind: str, host: str, log_path: Path, python: str) -> None:
        if kind not in ("own", "external") and not kind.startswith("http://"):
            raise ValueError(f"proxy must be 'own', 'external' or an http:// URL, got {kind!r}")
        self.kind = kind
        self.host = host
        self.log_path = log_path
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def owned(self) -> bool:
        return self.kind in ("own", "external")

    async def start(self) -> str:
        """Start (or find) the server; return its API URL once it answers."""
        if not self.owned:
            url = self.kind
        elif self.kind == "own":
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn([self.python, "-m", "millpond.cli", "chaos", "proxy",
                         "--host", self.host, "--port", "0"])
            url = await self._wait_for_line(offset)
        else:
            binary = shutil.which("toxiproxy-server")
            if binary is None:
                raise ClusterStartError("proxy='external' but no toxiproxy-server on PATH")
            port = free_ports(1, self.host)[0]
            self._spawn([binary, "-host", self.host, "-port", str(port)])
            url = f"http://{self.host}:{port}"
        client = ToxiproxyClient(url)

        async def answers() -> bool:
            self._check_alive()
            await client.version()
            return True

        try:
            await wait_until_async(answers, PROXY_START_TIMEOUT_S, f"the toxiproxy API at {url}")
        except WaitTimeout as exc:
            raise ClusterStartError(f"{exc}; log {self.log_path}:\n{_log_tail(self.log_path)}") from exc
        return url

    def _spawn(self, command: list[str]) -> None:
        self._log = open(self.log_path, "ab")  # the server writes to it for its lifetime
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterStartError(f"the proxy server exited with code {self.process.returncode}; "
                                    f"log {self.log_path}:\n{_log_tail(self.log_path)}")

    async def _wait_for_line(self, offset: int) -> str:
        """The URL of the "listening" line printed after ``offset`` (the log is appended to)."""
        deadline = asyncio.get_running_loop().time() + PROXY_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                match = _PROXY_LINE.search(self.log_path.read_bytes()[offset:])
                if match:
                    return match.group(1).decode()
            self._check_alive()
            if asyncio.get_running_loop().time() > deadline:
                raise ClusterStartError(
                    f"the proxy server printed no 'toxiproxy API listening on' line within "
                    f"{PROXY_START_TIMEOUT_S} s; log {self.log_path}:\n{_log_tail(self.log_path)}")
            await asyncio.sleep(POLL_INTERVAL_S)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``PROXY_STOP_GRACE_S``; never blocks the loop for long."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            deadline = asyncio.get_running_loop().time() + PROXY_STOP_GRACE_S
            while process.poll() is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(POLL_INTERVAL_S)
        self.stop_now()

    def stop_now(self) -> None:
        """Kill the server if it still runs and reap it (for ``atexit``; blocks briefly)."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class ChaosCluster:
    """``nodes`` real node processes whose node-to-node links all run through fault proxies.

    ``data_dir``: node data, node logs ``node-<id>.log`` and ``proxy.log`` (default: a temporary
    directory, removed on :meth:`stop`). ``node_args``: extra flags for every node (e.g.
    :data:`FAST_NODE_ARGS`). ``proxy``: ``"own"`` (``millpond chaos proxy`` subprocess),
    ``"external"`` (``toxiproxy-server`` from PATH) or the URL of a running Toxiproxy API server
    (its proxies of our names are replaced; it is not stopped). ``proxy_clients``: route client
    bootstrap traffic through ``c->n{j}`` proxies (see the module docstring for the limit).
    ``seed``: the generator choosing node ports (nothing else is random here).
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        data_dir: str | Path | None = None,
        node_args: Sequence[str] = FAST_NODE_ARGS,
        proxy: str = "own",
        proxy_clients: bool = False,
        host: str = "127.0.0.1",
        ready_timeout_s: float = READY_TIMEOUT_S,
        python: str = sys.executable,
        seed: int | None = None,
    ) -> None:
        if not 1 <= nodes <= 64:
            raise ValueError(f"nodes must be in [1, 64], got {nodes}")
        self._temporary = data_dir is None
        self.data_dir = Path(data_dir if data_dir is not None else tempfile.mkdtemp(prefix="millpond-chaos-"))
        self.node_ids: tuple[int, ...] = tuple(range(1, nodes + 1))
        self.host = host
        self.node_args: tuple[str, ...] = tuple(node_args)
        self.proxy_clients = proxy_clients
        self.ready_timeout_s = ready_timeout_s
        self._python = python
        self._rng = random.Random(seed)
        self._proxy = _ProxyServer(proxy, host, self.data_dir / "proxy.log", python)
        self._api: ToxiproxyClient | None = None
        self._local: _ProxiedLocalCluster | None = None
        self._routes: dict[tuple[int, int], str] = {}
        self._client_routes: dict[int, str] = {}
        self._cuts: dict[str, CutMode] = {}
        self._toxics: dict[str, dict[str, str]] = {}
        self._toxic_serial = 0
        self._paused: set[int] = set()
        self._admin_loop: asyncio.AbstractEventLoop | None = None
        self._node_admins: dict[int, AsyncAdmin] = {}
        self._cluster_admin: AsyncAdmin | None = None
        self._started = False
        self._stopped = False
        tick_ms = _flag_value(self.node_args, "--tick-ms", limits.raft_tick_ms)
        ticks = _flag_value(self.node_args, "--election-ticks", limits.raft_election_ticks)
        #: The longest election timeout a node may draw (it draws from [ticks, 2 * ticks) ticks).
        self.election_timeout_max_s: float = 2 * ticks * tick_ms / 1000

    # --- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> ChaosCluster:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> ChaosCluster:
        """Start the proxy server, create every link's proxy, start the nodes, wait until ready.

        Raises :class:`~millpond.testing.cluster.ClusterStartError` (after stopping whatever
        started) if the proxy server or a node does not come up, or the cluster is not ready
        within ``ready_timeout_s``; :class:`~millpond.chaos.toxiproxy_api.ToxiproxyError` if the
        server refuses a proxy. Blocks the event loop while the nodes start (see the module doc).
        """
        if self._started:
            raise RuntimeError("a ChaosCluster starts once")
        self._started = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self._stop_now)
        try:
            self._api = ToxiproxyClient(await self._proxy.start())
            base = _consecutive_free_ports(len(self.node_ids), self.host, self._rng)
            real = {node: f"{self.host}:{base + index}" for index, node in enumerate(self.node_ids)}
            for i in self.node_ids:
                for j in self.node_ids:
                    if i != j:
                        self._routes[(i, j)] = await self._create_proxy(link_name(i, j), real[j])
            if self.proxy_clients:
                for j in self.node_ids:
                    self._client_routes[j] = await self._create_proxy(client_link_name(j), real[j])
            self._local = _ProxiedLocalCluster(
                len(self.node_ids), data_dir=self.data_dir, base_port=base, host=self.host,
                node_args=list(self.node_args), ready_timeout_s=self.ready_timeout_s, python=self._python,
                routes=self._routes,
            )
            self._local.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _create_proxy(self, name: str, upstream: str) -> str:
        api = self.api
        try:
            created = await api.create_proxy(name, f"{self.host}:0", upstream)
        except ToxiproxyConflict:  # left over on an external server from an earlier run
            await api.delete_proxy(name)
            created = await api.create_proxy(name, f"{self.host}:0", upstream)
        if created.listen.endswith(":0") or ":" not in created.listen:
            raise ClusterStartError(f"the proxy server did not report the port of {name}: {created.listen!r}")
        return created.listen

    async def stop(self) -> None:
        """Stop every node (paused ones are resumed first: a stopped process ignores SIGTERM), then
        the proxy server; remove a temporary data directory. Idempotent; never raises for a process
        that is already gone."""
        if self._stopped:
            return
        self._stopped = True
        local = self._local
        if local is not None:
            for node in list(self._paused):
                self._send(node, signal.SIGCONT)
            self._paused.clear()
            for node in self.node_ids:
                self._send(node, signal.SIGTERM)
            await self._wait_exited(self.node_ids, NODE_STOP_GRACE_S)
            for node in self.node_ids:
                local.kill(node)  # SIGKILL what still runs; reap everything
            local.stop()  # nothing runs any more: only unregisters its atexit hook
        await self._close_admins()
        if self._proxy.owned:
            await self._proxy.stop()
        elif self._api is not None:
            names = [link_name(*link) for link in self._routes]
            names += [client_link_name(node) for node in self._client_routes]
            for name in names:
                with contextlib.suppress(ToxiproxyError):
                    await self._api.delete_proxy(name)
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_now)
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _stop_now(self) -> None:
        """The ``atexit`` hook: stop everything without an event loop."""
        if self._local is not None:
            for node in list(self._paused):
                self._send(node, signal.SIGCONT)
            self._local.stop()
        self._proxy.stop_now()

    # --- addresses and files --------------------------------------------------------------------
    @property
    def api(self) -> ToxiproxyClient:
        """The Toxiproxy API client (after :meth:`start`)."""
        if self._api is None:
            raise RuntimeError("the chaos cluster is not started")
        return self._api

    @property
    def local(self) -> LocalCluster:
        """The underlying :class:`LocalCluster` (after :meth:`start`)."""
        if self._local is None:
            raise RuntimeError("the chaos cluster is not started")
        return self._local

    @property
    def majority(self) -> int:
        return len(self.node_ids) // 2 + 1

    def address(self, node_id: int) -> str:
        """Node ``node_id``'s real listen address."""
        return self.local.address(node_id)

    def route(self, from_id: int, to_id: int) -> str:
        """The proxy address node ``from_id`` uses for node ``to_id``."""
        return self._routes[(from_id, to_id)]

    @property
    def bootstrap(self) -> str:
        """What clients should bootstrap from: the real addresses, or the ``c->n{j}`` proxies."""
        if self.proxy_clients:
            return ",".join(self._client_routes[node] for node in self.node_ids)
        return self.local.bootstrap

    @property
    def node_logs(self) -> dict[int, Path]:
        """Each node's output file (appended to across restarts)."""
        return {node: self.local.nodes[node].log_path for node in self.node_ids}

    @property
    def proxy_log(self) -> Path:
        """The proxy server's output file (empty for a server we did not start)."""
        return self._proxy.log_path

    def pids(self) -> dict[str, int | None]:
        """Process ids of the proxy server (``proxy``; None if we did not start one) and the nodes
        (``n1``, ...; None if never started), for supervision and tests."""
        pids: dict[str, int | None] = {"proxy": self._proxy.process.pid if self._proxy.process else None}
        pids.update((f"n{node}", self.local.nodes[node].pid) for node in self.node_ids)
        return pids

    def links(self) -> list[tuple[int, int]]:
        """Every directed node-to-node link."""
        return sorted(self._routes)

    # --- node state -------------------------------------------------------------------------------
    def running(self, node_id: int) -> bool:
        """Whether the node's process exists (it may be paused)."""
        return self.local.nodes[node_id].running

    @property
    def paused(self) -> frozenset[int]:
        return frozenset(self._paused)

    def down(self) -> set[int]:
        """Nodes that cannot act: not running, or paused."""
        return {node for node in self.node_ids if not self.running(node) or node in self._paused}

    def up(self) -> list[int]:
        """Nodes that run and are not paused."""
        down = self.down()
        return [node for node in self.node_ids if node not in down]

    # --- process faults ---------------------------------------------------------------------------
    async def kill(self, node_id: int) -> None:
        """SIGKILL the node (paused or not) and reap it. No-op if it is not running."""
        self._paused.discard(node_id)
        self.local.kill(node_id)  # SIGKILL is immediate, so reaping does not block the loop

    async def stop_node(self, node_id: int) -> int | None:
        """Stop the node cleanly: SIGCONT if paused, SIGTERM, SIGKILL after ``NODE_STOP_GRACE_S``.
        Returns its exit code (None if it was not started)."""
        if node_id in self._paused:
            await self.resume(node_id)
        self._send(node_id, signal.SIGTERM)
        await self._wait_exited([node_id], NODE_STOP_GRACE_S)
        self.local.kill(node_id)  # SIGKILL if still running; reaps and closes its log either way
        process = self.local.nodes[node_id].process
        return process.returncode if process is not None else None

    async def start_node(self, node_id: int) -> None:
        """Start a node that is not running on its data directory; wait for its "listening" line.
        Raises :class:`ClusterStartError` if it exits or stays silent for ``NODE_LISTEN_TIMEOUT_S``."""
        node = self.local.nodes[node_id]
        if node.running:
            raise RuntimeError(f"node {node_id} is running")
        offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        self.local.start_node(node_id, wait=False)
        marker = f"millpond node {node_id} listening on".encode()
        deadline = asyncio.get_running_loop().time() + NODE_LISTEN_TIMEOUT_S
        while True:
            with open(node.log_path, "rb") as log:
                log.seek(offset)
                if marker in log.read():
                    return
            process = node.process
            if process is not None and process.poll() is not None:
                raise ClusterStartError(f"node {node_id} exited with code {process.returncode} while "
                                        f"starting; log {node.log_path}:\n{node.log_tail()}")
            if asyncio.get_running_loop().time() > deadline:
                raise ClusterStartError(f"node {node_id} did not report listening within "
                                        f"{NODE_LISTEN_TIMEOUT_S} s; log {node.log_path}:\n{node.log_tail()}")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def restart(self, node_id: int) -> None:
        """Stop the node cleanly if it runs (see :meth:`stop_node`), then start it again."""
        if self.running(node_id):
            await self.stop_node(node_id)
        await self.start_node(node_id)

    async def pause(self, node_id: int) -> None:
        """SIGSTOP the node: it keeps its sockets but does nothing (a long GC pause, a stalled VM)."""
        if not self.running(node_id):
            raise RuntimeError(f"node {node_id} is not running")
        self._send(node_id, signal.SIGSTOP)
        self._paused.add(node_id)

    async def resume(self, node_id: int) -> None:
        """SIGCONT a paused node. No-op for a node that is not paused."""
        if node_id in self._paused:
            self._send(node_id, signal.SIGCONT)
            self._paused.discard(node_id)

    def _send(self, node_id: int, sig: signal.Signals) -> None:
        process = self.local.nodes[node_id].process if self._local is not None else None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def _wait_exited(self, nodes: Iterable[int], timeout_s: float) -> None:
        """Poll until none of ``nodes`` runs or ``timeout_s`` passed (the caller kills what remains)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        nodes = list(nodes)
        while any(self.running(node) for node in nodes) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)

    # --- network faults ------------------------------------------------------------------------------
    def _directed(self, i: int, j: int, both_ways: bool) -> list[tuple[int, int]]:
        if i == j or (i, j) not in self._routes:
            raise ValueError(f"no link n{i}->n{j}")
        return [(i, j), (j, i)] if both_ways else [(i, j)]

    async def cut(self, i: int, j: int, mode: CutMode = "refuse", *, both_ways: bool = False) -> None:
        """Cut link ``n{i}->n{j}`` (and ``n{j}->n{i}`` too if ``both_ways``).

        ``refuse``: the proxy is disabled (connections refused and closed). ``silent``: a
        ``timeout`` toxic with timeout 0 on both of its streams (connections stay, bytes vanish).
        Cutting a link already cut in the other mode switches it. Raises ``ValueError`` for an
        unknown link, :class:`ToxiproxyError` if the proxy server refuses.
        """
        for a, b in self._directed(i, j, both_ways):
            await self._cut_proxy(link_name(a, b), mode)

    async def heal_link(self, i: int, j: int, *, both_ways: bool = False) -> None:
        """Undo :meth:`cut` of ``n{i}->n{j}`` (and of ``n{j}->n{i}`` if ``both_ways``); packet faults stay."""
        for a, b in self._directed(i, j, both_ways):
            await self._heal_proxy(link_name(a, b))

    async def partition(
        self, groups: Sequence[Collection[int]], mode: CutMode = "refuse"
    ) -> list[tuple[int, int]]:
        """Cut every link between nodes of different ``groups`` (both ways); return the links cut."""
        side = {node: index for index, group in enumerate(groups) for node in group}
        cut = [(a, b) for a, b in self.links() if a in side and b in side and side[a] != side[b]]
        for a, b in cut:
            await self._cut_proxy(link_name(a, b), mode)
        return cut

    async def isolate(self, node_id: int, mode: CutMode = "refuse") -> list[tuple[int, int]]:
        """Cut every link to and from ``node_id``; return the links cut."""
        return await self.partition([[node_id], [n for n in self.node_ids if n != node_id]], mode)

    async def cut_client(self, node_id: int, mode: CutMode = "refuse") -> None:
        """Cut the client proxy ``c->n{node_id}`` (only with ``proxy_clients=True``)."""
        if node_id not in self._client_routes:
            raise ValueError("client links are proxied only with proxy_clients=True")
        await self._cut_proxy(client_link_name(node_id), mode)

    async def heal_client(self, node_id: int) -> None:
        """Undo :meth:`cut_client`."""
        await self._heal_proxy(client_link_name(node_id))

    def cut_links(self) -> dict[tuple[int, int], CutMode]:
        """The node-to-node links cut now, with their mode."""
        return {link: self._cuts[link_name(*link)] for link in self._routes if link_name(*link) in self._cuts}

    async def _cut_proxy(self, name: str, mode: CutMode) -> None:
        if mode not in ("refuse", "silent"):
            raise ValueError(f"mode must be 'refuse' or 'silent', got {mode!r}")
        current = self._cuts.get(name)
        if current == mode:
            return
        if current is not None:
            await self._heal_proxy(name)
        if mode == "refuse":
            await self.api.disable(name)
        else:
            for toxic, stream in _SILENT_TOXICS:
                await self.api.add_toxic(name, type="timeout", name=toxic, stream=stream,
                                         attributes={"timeout": 0})
        self._cuts[name] = mode

    async def _heal_proxy(self, name: str) -> None:
        mode = self._cuts.pop(name, None)
        if mode == "refuse":
            await self.api.enable(name)
        elif mode == "silent":
            for toxic, _ in _SILENT_TOXICS:
                with contextlib.suppress(ToxiproxyNotFound):
                    await self.api.remove_toxic(name, toxic)

    async def add_packet_fault(
        self,
        i: int,
        j: int,
        kind: str,
        attrs: dict[str, Any],
        *,
        stream: PacketStream = "both",
        toxicity: float = 1.0,
    ) -> list[str]:
        """Add a toxic of type ``kind`` (``latency``, ``bandwidth``, ``slicer``, ``reset_peer``,
        ``slow_close``, ``limit_data``, ...) with attributes ``attrs`` to link ``n{i}->n{j}`` on
        ``stream`` (``both``: one toxic per direction); return the toxic names (for
        :meth:`remove_packet_fault`). Raises :class:`ToxiproxyError` for a bad type or attributes."""
        name = link_name(*self._directed(i, j, False)[0])
        streams: tuple[Stream, ...] = ("upstream", "downstream") if stream == "both" else (stream,)
        added: list[str] = []
        for direction in streams:
            self._toxic_serial += 1
            toxic = f"{kind}-{direction}-{self._toxic_serial}"
            await self.api.add_toxic(name, type=kind, name=toxic, stream=direction,
                                     toxicity=toxicity, attributes=attrs)
            self._toxics.setdefault(name, {})[toxic] = kind
            added.append(toxic)
        return added

    async def remove_packet_fault(self, i: int, j: int, toxics: Iterable[str]) -> None:
        """Remove toxics added by :meth:`add_packet_fault` from ``n{i}->n{j}`` (missing ones are ignored)."""
        name = link_name(i, j)
        for toxic in toxics:
            with contextlib.suppress(ToxiproxyNotFound):
                await self.api.remove_toxic(name, toxic)
            self._toxics.get(name, {}).pop(toxic, None)

    def disconnected_links(self) -> set[tuple[int, int]]:
        """Links that carry nothing now: cut, or with a toxic of :data:`DISCONNECTING_TOXICS`."""
        links = set(self.cut_links())
        for link in self._routes:
            if any(kind in DISCONNECTING_TOXICS for kind in self._toxics.get(link_name(*link), {}).values()):
                links.add(link)
        return links

    def keeps_majority(self, groups: Iterable[Collection[int]], *, extra_down: Collection[int] = ()) -> bool:
        """Whether, with the faults active now (and ``extra_down`` nodes down too), every group in
        ``groups`` (replica sets) keeps a majority of up, mutually connected members; see
        :func:`has_connected_majority`."""
        down = self.down() | set(extra_down)
        cut = self.disconnected_links()
        return all(has_connected_majority(group, down, cut) for group in groups)

    async def heal_all(self, *, ready_timeout_s: float | None = None) -> None:
        """Undo every fault: ``POST /reset`` (every proxy enabled, every toxic removed), SIGCONT for
        paused nodes, start every node that is not running. With ``ready_timeout_s``, then wait
        until the cluster is ready (:meth:`wait_ready`)."""
        await self.api.reset()
        self._cuts.clear()
        self._toxics.clear()
        for node in sorted(self._paused):
            await self.resume(node)
        stopped = [node for node in self.node_ids if not self.running(node)]
        await asyncio.gather(*(self.start_node(node) for node in stopped))
        if ready_timeout_s is not None:
            await self.wait_ready(ready_timeout_s)

    # --- queries ---------------------------------------------------------------------------------
    def _admins_of_this_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._admin_loop is not loop:  # grpc.aio channels belong to the loop that made them
            self._admin_loop = loop
            self._node_admins = {}
            self._cluster_admin = None

    def node_admin(self, node_id: int) -> AsyncAdmin:
        """An admin client that asks only node ``node_id`` (use reads that do not learn other nodes:
        ``describe_cluster(include_topics=False)``, ``describe_topic``)."""
        self._admins_of_this_loop()
        admin = self._node_admins.get(node_id)
        if admin is None:
            config = ClientConfig(request_timeout_ms=ADMIN_REQUEST_TIMEOUT_MS)
            admin = AsyncAdmin(self.address(node_id), config)
            self._node_admins[node_id] = admin
        return admin

    def admin(self) -> AsyncAdmin:
        """An admin client for the whole cluster (any node answers; writes go to the controller)."""
        self._admins_of_this_loop()
        if self._cluster_admin is None:
            self._cluster_admin = AsyncAdmin(self.local.bootstrap,
                                             ClientConfig(request_timeout_ms=ADMIN_REQUEST_TIMEOUT_MS * 2))
        return self._cluster_admin

    async def _close_admins(self) -> None:
        with contextlib.suppress(RuntimeError):
            if self._admin_loop is not asyncio.get_running_loop():
                return  # channels of another loop cannot be closed from here; they go with it
        for admin in [*self._node_admins.values(), *filter(None, [self._cluster_admin])]:
            with contextlib.suppress(Exception):
                await admin.close()
        self._node_admins = {}
        self._cluster_admin = None

    async def ask_each(self, query: Callable[[AsyncAdmin], Awaitable[T]]) -> dict[int, T]:
        """Run ``query`` on every up node concurrently; return the answers of those that answered
        within ``ADMIN_REQUEST_TIMEOUT_MS`` (a node that failed is left out)."""
        nodes = self.up()
        answers = await asyncio.gather(*(query(self.node_admin(node)) for node in nodes),
                                       return_exceptions=True)
        result: dict[int, T] = {}
        for node, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, MillpondError | OSError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            result[node] = answer
        return result

    async def controller_id(self) -> int:
        """The active controller as a majority of all nodes sees it, or 0 if no majority agrees."""
        answers = await self.ask_each(lambda admin: admin.describe_cluster(include_topics=False))
        votes = Counter(d.controller for d in answers.values() if d.controller)
        if votes:
            controller, count = votes.most_common(1)[0]
            if count >= self.majority:
                return controller
        return 0

    async def describe_partition(self, topic: str, partition: int) -> PartitionDescription | None:
        """The freshest description of a partition among the up nodes (highest leader epoch), or None
        if no node answered. Raises :class:`~millpond.errors.UnknownTopic` if every answering node
        says the topic does not exist."""
        unknown = 0

        async def ask(admin: AsyncAdmin) -> PartitionDescription | None:
            nonlocal unknown
            try:
                topic_info = await admin.describe_topic(topic)
            except UnknownTopic:
                unknown += 1
                return None
            return topic_info.partitions[partition] if partition < len(topic_info.partitions) else None

        answers = [answer for answer in (await self.ask_each(ask)).values() if answer is not None]
        if not answers:
            if unknown:
                raise UnknownTopic(f"no node knows topic {topic!r}")
            return None
        return max(answers, key=lambda p: (p.leader_epoch, p.leader != 0))

    async def leader_of(self, topic: str, partition: int) -> int:
        """The leader of a partition in the freshest metadata (0 if none or no node answered). The
        metadata may still name a node that just died; see :meth:`wait_leader`."""
        described = await self.describe_partition(topic, partition)
        return described.leader if described is not None else 0

    async def wait_leader(self, topic: str, partition: int, timeout_s: float = LEADER_WAIT_S,
                          *, exclude: Collection[int] = ()) -> int:
        """Wait until the freshest metadata names an up leader not in ``exclude``; return it.
        Raises :class:`~millpond.testing.waiting.WaitTimeout`."""

        async def leader() -> int:
            found = await self.leader_of(topic, partition)
            return found if found and found not in exclude and found in self.up() else 0

        return await wait_until_async(leader, timeout_s,
                                      f"a leader of {topic}/{partition} not in {sorted(exclude)}")

    async def partition_count(self, topic: str) -> int:
        """The topic's partition count (the largest any up node reports; 0 if none answered)."""
        answers = await self.ask_each(lambda admin: admin.describe_topic(topic))
        return max((len(t.partitions) for t in answers.values()), default=0)

    async def replica_groups(self, topic: str | None = None) -> list[tuple[int, ...]]:
        """The replica sets whose majorities matter: the metadata log's voters (the lowest min(3, N)
        node ids) and every partition of ``topic`` (of every topic if None) as the cluster reports
        them. Falls back to all nodes as one group if no node answers."""
        groups: set[tuple[int, ...]] = {tuple(sorted(self.node_ids)[: min(3, len(self.node_ids))])}
        try:
            description = await self.admin().describe_cluster(include_topics=True)
        except MillpondError:
            groups.add(self.node_ids)
            return sorted(groups)
        for described in description.topics:
            if topic is None or described.name == topic:
                groups.update(tuple(sorted(p.replicas)) for p in described.partitions if p.replicas)
        return sorted(groups)

    async def describe(self) -> ClusterDescription:
        """``DescribeCluster(include_topics=True)`` from any node."""
        return await self.admin().describe_cluster(include_topics=True)

    async def wait_ready(
        self, timeout_s: float = READY_TIMEOUT_S, *, full_isr: bool = False
    ) -> ClusterDescription:
        """Wait until every node runs and is not paused, and every node reports the same active
        controller, every node alive and no offline partition; with ``full_isr`` also until no
        partition is under-replicated. Returns the last description. Raises
        :class:`~millpond.testing.waiting.WaitTimeout`; :class:`ClusterStartError` if a node exited."""

        async def ready() -> ClusterDescription | None:
            if self.down():
                return None
            answers = await self.ask_each(lambda admin: admin.describe_cluster(include_topics=False))
            if len(answers) < len(self.node_ids):
                return None
            views = list(answers.values())
            everyone = len(self.node_ids)
            if not all(view.ready and sum(n.alive for n in view.nodes) == everyone for view in views):
                return None
            if len({view.controller for view in views}) != 1:
                return None
            if full_isr and any(view.under_replicated_partitions for view in views):
                return None
            return views[0]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = "no answer yet"
        while True:
            for node in self.node_ids:
                process = self.local.nodes[node].process
                if process is not None and process.poll() is not None and process.returncode not in (
                        -signal.SIGKILL, -signal.SIGTERM, 0):
                    raise ClusterStartError(f"node {node} exited with code {process.returncode}; "
                                            f"log {self.node_logs[node]}:\n{_log_tail(self.node_logs[node])}")
            try:
                described = await ready()
            except MillpondError as exc:
                described, last = None, f"{type(exc).__name__}: {exc}"
            if described is not None:
                return described
            if loop.time() >= deadline:
                raise WaitTimeout(f"cluster not ready within {timeout_s} s (down: {sorted(self.down())}, "
                                  f"cut: {sorted(self.disconnected_links())}; {last}); "
                                  f"logs in {self.data_dir}")
            await asyncio.sleep(READY_POLL_INTERVAL_S)

