"""Workloads that drive a cluster and record a history."""
