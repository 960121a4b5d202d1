"""Checkers over chaos histories; Jepsen's error-type names.

Modules: :mod:`.base` (checker input and description), :mod:`.model` (the ``log`` workload's
indexed facts), :mod:`.log` (its safety checkers), :mod:`.replicas` (replica divergence),
:mod:`.liveness`, :mod:`.stats`, :mod:`.registry` (workload -> checkers, the extension point)
and :mod:`.verdict` (the result of a run and its exit code).
"""

from .base import CannotCheck, CheckConfig, Checker, CheckInput, Example, ReplicaReport
from .registry import WORKLOADS, checkers_for, error_types, register_workload
from .verdict import Finding, LivenessResult, Result, check, exit_code

__all__ = [
    "WORKLOADS",
    "CannotCheck",
    "CheckConfig",
    "CheckInput",
    "Checker",
    "Example",
    "Finding",
    "LivenessResult",
    "ReplicaReport",
    "Result",
    "check",
    "checkers_for",
    "error_types",
    "exit_code",
    "register_workload",
]
