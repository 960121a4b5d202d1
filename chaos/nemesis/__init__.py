"""Seeded, scheduled faults against a chaos cluster."""
