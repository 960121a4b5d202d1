"""Fixtures for tests that run real node processes (``LocalCluster``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_helpers import FAST

from millpond.testing.cluster import LocalCluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start clusters that are stopped (every process) when the test ends."""
    started: list[LocalCluster] = []

    def make(nodes: int = 3, extra: list[str] | None = None) -> LocalCluster:
        cluster = LocalCluster(nodes, data_dir=f"{tmp_path}/cluster-{len(started)}",
                               node_args=[*FAST, *(extra or [])], ready_timeout_s=90)
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()

