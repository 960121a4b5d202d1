"""The commands of the ``millpond`` CLI, one module per group; the parser lives in :mod:`millpond.cli`."""
