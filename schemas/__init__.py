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


def schema_names(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Names of every ``<name>.avsc`` in ``schema_dir``, sorted."""
    return sorted(p.stem for p in schema_dir.glob("*.avsc"))


def history(name: str, schema_dir: Path = SCHEMA_DIR) -> list[tuple[int, str]]:
    """Earlier versions of ``name`` as ``(version, text)``, oldest first (``history/<name>/v<N>.avsc``)."""
    versions: list[tuple[int, str]] = []
    for path in (schema_dir / "history" / name).glob("v*.avsc"):
        if path.stem[1:].isdigit():
            versions.append((int(path.stem[1:]), path.read_text(encoding="utf-8")))
    return sorted(versions)
