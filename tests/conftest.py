"""Project-wide pytest options. Only options belong here (fixtures live next to their tests)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="regenerate the expected output of data-driven scenario files (review the diff!)",
    )
