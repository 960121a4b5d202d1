"""Fixtures of the CLI tests. The in-process fake cluster is shared with the client tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

from client_fake_cluster import FakeCluster


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    with FakeCluster(nodes=3) as cluster:
        yield cluster
