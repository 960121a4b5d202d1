"""What every checker shares: its input, its configuration, and its own description.

A checker is a named function from a :class:`CheckInput` to a list of *examples* -- JSON-ready
dicts that each say exactly what is wrong and name the op indices that prove it. The list is
empty when the history shows no anomaly of that type. A checker that cannot decide (its input is
missing) raises :class:`CannotCheck`; the verdict then reports that type as unchecked and the
run's validity as unknown, rather than guessing.

Derived structures (the log model, the replica report) are built once per check and shared by
all checkers through :meth:`CheckInput.derived`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from millpond.chaos.history import FaultWindow, Op

__all__ = ["CannotCheck", "CheckConfig", "CheckInput", "Checker", "Example", "ReplicaReport"]

Example = dict[str, Any]
"""One instance of an anomaly: JSON-ready, with op indices under keys such as ``op`` or ``ops``."""

ReplicaReport = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""``{"<topic>/<p>": {"<node>": {"commit_index": int, "upto": int, "checksum": str}}}``, collected
after healing: each replica's checksum of its committed records below offset ``upto``."""

T = TypeVar("T")


class CannotCheck(Exception):
    """A checker lacks the input it needs; the message says which."""


@dataclass(frozen=True)
class CheckConfig:
    """How to check a run.

    ``workload`` selects the checkers (see :mod:`millpond.chaos.checkers.registry`);
    ``progress_grace_s`` is how long after a fault that keeps a majority starts the cluster may
    take before some send must succeed again (leader election, client retries and backoff);
    ``examples_max`` bounds the examples kept per error type in a result.
    """

    workload: str = "log"
    progress_grace_s: float = 6.0
    examples_max: int = 8

    def __post_init__(self) -> None:
        if self.progress_grace_s < 0:
            raise ValueError(f"progress_grace_s must be >= 0, got {self.progress_grace_s}")
        if self.examples_max < 0:
            raise ValueError(f"examples_max must be >= 0, got {self.examples_max}")


@dataclass
class CheckInput:
    """Everything a run left behind for the checkers; build derived views with :meth:`derived`."""

    history: Sequence[Op]
    windows: Sequence[FaultWindow] = ()
    replicas: ReplicaReport | None = None
    config: CheckConfig = field(default_factory=CheckConfig)
    notes: list[str] = field(default_factory=list)
    """Remarks on the input that checkers or model builders make (the verdict reports them)."""
    _derived: dict[Callable[[CheckInput], Any], Any] = field(default_factory=dict, repr=False)

    def derived(self, build: Callable[[CheckInput], T]) -> T:
        """``build(self)``, computed on first use and cached: index the history once per check."""
        if build not in self._derived:
            self._derived[build] = build(self)
        value: T = self._derived[build]
        return value

    @property
    def end_time(self) -> float:
        """Time of the last op (0.0 for an empty history)."""
        return self.history[-1].time if self.history else 0.0


@dataclass(frozen=True)
class Checker:
    """One error type and the function that finds its examples.

    ``kind`` is ``safety`` (an example means the system broke a promise) or ``liveness`` (it
    failed to make progress when it should have, or did not converge after healing).
    """

    error_type: str
    kind: Literal["safety", "liveness"]
    run: Callable[[CheckInput], list[Example]]
    description: str
