"""What every command shares: the bootstrap default, one-line errors, tables, byte rendering."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence
from typing import Any

from millpond.errors import MillpondError, RequestTimeout, Unavailable

BOOTSTRAP_ENV = "MILLPOND_BOOTSTRAP"
BOOTSTRAP_DEFAULT = "127.0.0.1:9091"


class CommandError(Exception):
    """A failure a command reports as one line (bad option combinations, a cluster not ready, ...)."""


def default_bootstrap() -> str:
    """``$MILLPOND_BOOTSTRAP``, else ``127.0.0.1:9091``."""
    return os.environ.get(BOOTSTRAP_ENV) or BOOTSTRAP_DEFAULT


def error_line(exc: BaseException, bootstrap: str | None = None) -> str:
    """One line describing an operating error, without a traceback."""
    if isinstance(exc, Unavailable):
        where = f" (bootstrap {bootstrap}; is the cluster running?)" if bootstrap else ""
        return f"unavailable: {exc.message}{where}"
    if isinstance(exc, RequestTimeout):
        return f"timed out: {exc.message}"
    if isinstance(exc, MillpondError):
        return f"{exc.reason.lower().replace('_', ' ')}: {exc.message}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def fail(message: str) -> int:
    """Print ``millpond: <message>`` (one line) to stderr and return exit code 1."""
    print(f"millpond: {' '.join(message.split())}", file=sys.stderr)
    return 1


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def json_bytes(data: bytes | None) -> str | dict[str, str] | None:
    """Bytes for JSON output: UTF-8 text as a string, anything else as ``{"base64": ...}``, None as null."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def text_bytes(data: bytes | None) -> str:
    """Bytes for text output (invalid UTF-8 replaced; None as an empty string)."""
    return "" if data is None else data.decode("utf-8", errors="replace")


def join_ids(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids) or "-"


def parse_pairs(pairs: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``["k=v", ...]`` as pairs; raises :class:`CommandError` for an item without ``=`` or key."""
    parsed: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"{what} must be KEY=VALUE, got {pair!r}")
        parsed.append((key, value))
    return parsed
