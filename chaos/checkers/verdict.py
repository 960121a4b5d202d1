"""The verdict on one chaos run: safety, liveness, and op statistics, with an exit code.

:func:`check` runs every checker of the run's workload (see
:mod:`millpond.chaos.checkers.registry`) over the history, the nemesis' fault windows and the
replica report, and folds their examples into a :class:`Result`:

* ``valid`` (safety): False if some safety error type that is not *allowed* has an example; None
  (unknown) if the history is empty or a safety checker could not run and nothing was found;
  True otherwise.
* ``liveness.valid``: the same over the liveness checkers.
* *allowed* error types (say ``unseen`` and ``lost-write`` for an ``acks=1`` run, where losing a
  write on leader failure is documented behaviour) are still reported, under ``allowed_errors``,
  but do not count against validity. Naming an error type the workload cannot report is a
  ValueError (a typo would otherwise allow nothing, silently).

:func:`exit_code` maps a result to the process exit status of ``millpond chaos check``:
0 valid and live, 1 safety violation, 2 liveness failure (safe), 3 unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from millpond.chaos.history import FaultWindow, Op

from .base import CannotCheck, CheckConfig, CheckInput, Example, ReplicaReport
from .model import op_pairs
from .registry import checkers_for
from .stats import op_stats

__all__ = [
    "EXIT_LIVENESS",
    "EXIT_OK",
    "EXIT_SAFETY",
    "EXIT_UNKNOWN",
    "Finding",
    "LivenessResult",
    "Result",
    "check",
    "exit_code",
]

EXIT_OK = 0
EXIT_SAFETY = 1
EXIT_LIVENESS = 2
EXIT_UNKNOWN = 3


@dataclass(frozen=True)
class Finding:
    """All instances of one error type: how many, and the first few examples."""

    count: int
    examples: tuple[Example, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": list(self.examples)}


@dataclass(frozen=True)
class LivenessResult:
    """Liveness part of a verdict; fields as in :class:`Result`."""

    valid: bool | None
    failures: Mapping[str, Finding] = field(default_factory=dict)
    allowed: Mapping[str, Finding] = field(default_factory=dict)
    unchecked: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "failures": {name: finding.to_dict() for name, finding in self.failures.items()},
            "allowed": {name: finding.to_dict() for name, finding in self.allowed.items()},
            "unchecked": dict(self.unchecked),
        }


@dataclass(frozen=True)
class Result:
    """The verdict on one run.

    ``errors``: safety error types found and not allowed -> :class:`Finding`;
    ``allowed_errors``: allowed safety types found; ``unchecked``: safety types whose checker
    could not run -> why; ``stats``: see :func:`millpond.chaos.checkers.stats.op_stats`;
    ``notes``: remarks on the input (an empty history, a value sent twice).
    """

    workload: str
    valid: bool | None
    errors: Mapping[str, Finding]
    allowed_errors: Mapping[str, Finding]
    unchecked: Mapping[str, str]
    liveness: LivenessResult
    stats: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole result."""
        return {
            "workload": self.workload,
            "valid": self.valid,
            "errors": {name: finding.to_dict() for name, finding in self.errors.items()},
            "allowed_errors": {name: finding.to_dict() for name, finding in self.allowed_errors.items()},
            "unchecked": dict(self.unchecked),
            "liveness": self.liveness.to_dict(),
            "stats": dict(self.stats),
            "notes": list(self.notes),
            "exit_code": exit_code(self),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """One line: validity, liveness and the count of every error type found."""
        parts = [f"valid={_word(self.valid)}", f"live={_word(self.liveness.valid)}"]
        parts += [f"{name}={finding.count}" for name, finding in self.errors.items()]
        parts += [f"{name}={finding.count}" for name, finding in self.liveness.failures.items()]
        parts += [f"{name}={finding.count}(allowed)" for name, finding in self.allowed_errors.items()]
        parts += [f"{name}={finding.count}(allowed)" for name, finding in self.liveness.allowed.items()]
        parts += [f"{name}=unchecked" for name in [*self.unchecked, *self.liveness.unchecked]]
        return " ".join(parts)


def _word(valid: bool | None) -> str:
    return "unknown" if valid is None else str(valid).lower()


def _validity(found: Mapping[str, Finding], unchecked: Mapping[str, str]) -> bool | None:
    if found:
        return False
    return None if unchecked else True


def check(
    history: Sequence[Op],
    nemesis_windows: Sequence[FaultWindow],
    replicas: ReplicaReport | None,
    allowed: Iterable[str] = frozenset(),
    config: CheckConfig | None = None,
) -> Result:
    """Judge one run of ``config.workload``.

    ``history`` as :func:`~millpond.chaos.history.load_history` returns it; ``nemesis_windows``
    from :func:`~millpond.chaos.history.fault_windows`; ``replicas`` the report described in
    :mod:`millpond.chaos.checkers.replicas` (None: not collected, so replica checks are
    unchecked; ``{}``: nothing to compare). Raises ValueError for an unknown workload or allowed
    error type, and :class:`~millpond.chaos.history.HistoryError` for a malformed history.
    """
    config = config or CheckConfig()
    checkers = checkers_for(config.workload)
    allowed = frozenset(allowed)
    unknown = sorted(allowed - {checker.error_type for checker in checkers})
    if unknown:
        known = [checker.error_type for checker in checkers]
        raise ValueError(
            f"allowed error types {unknown} are not reported by workload {config.workload!r}: {known}"
        )
    if not history:
        return Result(
            config.workload,
            None,
            {},
            {},
            {},
            LivenessResult(None),
            op_stats([]),
            ("empty history: nothing to judge",),
        )
    inputs = CheckInput(history, nemesis_windows, replicas, config)
    found: dict[str, dict[str, Finding]] = {"safety": {}, "liveness": {}}
    allowed_found: dict[str, dict[str, Finding]] = {"safety": {}, "liveness": {}}
    unchecked: dict[str, dict[str, str]] = {"safety": {}, "liveness": {}}
    for checker in checkers:
        try:
            examples = checker.run(inputs)
        except CannotCheck as exc:
            unchecked[checker.kind][checker.error_type] = str(exc)
            continue
        if not examples:
            continue
        finding = Finding(len(examples), tuple(examples[: config.examples_max]))
        target = allowed_found if checker.error_type in allowed else found
        target[checker.kind][checker.error_type] = finding
    liveness = LivenessResult(
        _validity(found["liveness"], unchecked["liveness"]),
        found["liveness"],
        allowed_found["liveness"],
        unchecked["liveness"],
    )
    return Result(
        config.workload,
        _validity(found["safety"], unchecked["safety"]),
        found["safety"],
        allowed_found["safety"],
        unchecked["safety"],
        liveness,
        op_stats(inputs.derived(op_pairs)),
        tuple(inputs.notes),
    )


def exit_code(result: Result) -> int:
    """0 valid and live, 1 safety violation, 2 liveness failure only, 3 unknown.

    A safety violation wins over everything (1 even if liveness also failed or is unknown);
    unknown safety gives 3; then a liveness failure gives 2, unknown liveness 3.
    """
    if result.valid is False:
        return EXIT_SAFETY
    if result.valid is None:
        return EXIT_UNKNOWN
    if result.liveness.valid is False:
        return EXIT_LIVENESS
    if result.liveness.valid is None:
        return EXIT_UNKNOWN
    return EXIT_OK
