"""millpond: a distributed message broker on a Raft-replicated, partitioned log.

Top-level package: shared helpers (limits, invariants) and, later, the CLI.
The Raft core lives in :mod:`millpond.raft` (folder ``raft/``).
"""

__version__ = "0.1.0"
