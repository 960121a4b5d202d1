"""Node configuration: a TOML file, overridden by command-line flags, validated once.

Example ``node.toml``::

    node_id = 1
    listen = "127.0.0.1:9091"
    data_dir = ".millpond/node-1"
    peers = "1=127.0.0.1:9091,2=127.0.0.1:9092,3=127.0.0.1:9093"
    tick_ms = 100

``peers`` names every node of the initial cluster (this one included), the
same on every node: it fixes the voters of the metadata log (the lowest
min(3, N) ids) and where each node listens.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from millpond import limits
from millpond.controller.groups.coordinator import GroupSettings

_ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every problem."""


def parse_peers(text: str) -> dict[int, str]:
    """Parse ``"1=host:port,2=host:port"``; raise :class:`ConfigError` on malformed input."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.isdigit() or int(node) <= 0 or not _ADDRESS.match(address):
            raise ConfigError(f"peer {item!r} is not of the form ID=HOST:PORT with ID >= 1")
        if int(node) in peers:
            raise ConfigError(f"peer id {node} appears twice")
        peers[int(node)] = address
    return peers


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start."""

    node_id: int
    listen: str
    data_dir: Path
    peers: dict[int, str] = field(default_factory=dict)
    tick_ms: int = limits.raft_tick_ms
    election_ticks: int = limits.raft_election_ticks
    heartbeat_interval_ms: int = 250
    session_timeout_ms: int = 3_000
    replica_lag_ms_max: int = 5_000
    replacement_delay_ms: int = 30_000
    #: Consumer groups: how often members heartbeat (told in every answer), and the session timeout of a
    #: member that does not ask for its own (members without a heartbeat for that long are removed).
    group_heartbeat_interval_ms: int = 5_000
    group_session_timeout_ms: int = 45_000
    #: Test-only: answer acks=all on the leader's local (in-memory) append, before fsync or replication
    #: (the chaos suite's negative control).
    unsafe_ack_before_commit: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming every problem."""
        problems = []
        if self.node_id <= 0:
            problems.append("node_id must be >= 1")
        if not _ADDRESS.match(self.listen):
            problems.append(f"listen {self.listen!r} is not HOST:PORT")
        if self.node_id not in self.peers:
            problems.append(f"peers must include this node ({self.node_id})")
        elif self.peers[self.node_id] != self.listen:
            problems.append(f"peers says node {self.node_id} is at {self.peers[self.node_id]}, "
                            f"but listen is {self.listen}")
        if not 10 <= self.tick_ms <= 10_000:
            problems.append("tick_ms must be in [10, 10000]")
        if self.election_ticks < 3:
            problems.append("election_ticks must be >= 3")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            problems.append("heartbeat_interval_ms must be < session_timeout_ms")
        if self.session_timeout_ms > self.replacement_delay_ms:
            problems.append("session_timeout_ms must be <= replacement_delay_ms")
        try:
            self.group_settings().validate()
        except ValueError as exc:
            problems.append(f"group settings: {exc}")
        if problems:
            raise ConfigError("invalid node config: " + "; ".join(problems))

    def group_settings(self) -> GroupSettings:
        """The consumer-group coordinator's settings (used while this node is the active controller)."""
        return GroupSettings(heartbeat_interval_ms=self.group_heartbeat_interval_ms,
                             session_timeout_ms=self.group_session_timeout_ms)

    def metadata_voters(self) -> list[int]:
        """The metadata log's voters: the lowest min(3, N) node ids."""
        return sorted(self.peers)[: min(3, len(self.peers))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``millpond node`` flags (each overrides the same key of ``--config``)."""
    parser.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    parser.add_argument("--node-id", type=int)
    parser.add_argument("--listen", help="HOST:PORT for all gRPC services")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--peers", help="ID=HOST:PORT,... of every node of the initial cluster")
    parser.add_argument("--tick-ms", type=int)
    parser.add_argument("--election-ticks", type=int)
    parser.add_argument("--heartbeat-interval-ms", type=int)
    parser.add_argument("--session-timeout-ms", type=int)
    parser.add_argument("--replica-lag-ms-max", type=int)
    parser.add_argument("--replacement-delay-ms", type=int)
    parser.add_argument("--group-heartbeat-interval-ms", type=int,
                        help="consumer-group member heartbeat interval (default 5000)")
    parser.add_argument("--group-session-timeout-ms", type=int,
                        help="default consumer-group member session timeout (default 45000)")
    parser.add_argument("--unsafe-ack-before-commit", action="store_true", default=None,
                        help=argparse.SUPPRESS)


def from_arguments(args: argparse.Namespace) -> NodeConfig:
    """Build and validate a config from ``--config`` and flags; raise :class:`ConfigError`."""
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            values.update(tomllib.loads(Path(args.config).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {args.config}: {exc}") from exc
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    for name in known:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    missing = [name for name in ("node_id", "listen", "data_dir", "peers") if name not in values]
    if missing:
        raise ConfigError("missing settings: " + ", ".join(missing))
    if isinstance(values["peers"], str):
        values["peers"] = parse_peers(values["peers"])
    values["data_dir"] = Path(values["data_dir"])
    try:
        config = NodeConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    config.validate()
    return config
