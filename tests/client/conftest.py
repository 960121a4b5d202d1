"""Fixtures of the client tests: an in-process fake cluster (see client_fake_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_fake_cluster import FakeCluster


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    with FakeCluster(nodes=3) as cluster:
        yield cluster
