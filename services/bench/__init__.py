"""Benchmarks that print figures (`fraudstream bench ...`); never timed assertions."""
