"""Fail-stop invariants.

``invariant(cond, message, **context)`` raises :class:`InvariantViolation` when a
condition that the code relies on does not hold. Unlike ``assert`` it survives
``python -O``. An invariant violation means the process's state can no longer
be trusted: the owner of the failing component must stop it (a node exits),
never log and carry on. Operating errors (a peer gone, a full disk, bad input)
are not invariants: they are handled where they happen.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["InvariantViolation", "invariant", "unreachable"]


class InvariantViolation(Exception):
    """A condition the code depends on was false: stop the component."""

    def __init__(self, message: str, context: dict[str, object]) -> None:
        detail = " ".join(f"{key}={value!r}" for key, value in sorted(context.items()))
        super().__init__(f"{message} {detail}".rstrip())
        self.context = context


def invariant(condition: bool, message: str, **context: object) -> None:
    """Raise :class:`InvariantViolation` with ``message`` and ``context`` unless ``condition``."""
    if not condition:
        raise InvariantViolation(message, context)


def unreachable(message: str, **context: object) -> NoReturn:
    """Mark a branch that must never run."""
    raise InvariantViolation(message, context)
