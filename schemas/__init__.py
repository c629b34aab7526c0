"""Avro schemas (``*.avsc``) of every record type, and their history for evolution checks."""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """Path of ``schemas/<name>.avsc``."""
    return SCHEMA_DIR / f"{name}.avsc"


def schema_text(name: str) -> str:
    """Text of ``schemas/<name>.avsc``."""
    return schema_path(name).read_text(encoding="utf-8")
