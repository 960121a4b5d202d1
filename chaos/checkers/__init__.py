"""Checkers over chaos histories; Jepsen's error-type names."""
