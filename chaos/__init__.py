"""Chaos suite: a Toxiproxy-compatible fault proxy, a cluster harness whose links run through it,
seeded nemeses, workloads that record Jepsen-shaped histories, checkers over them, and reports."""
