"""`fraudstream schemas register` and `fraudstream schemas check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient
from rich.console import Console

import schemas
from services.config import CompatibilityLevel, KafkaSettings, SchemaSettings
from services.kafka import Unreachable, check_registry
from services.schemas import Finding, check_offline, check_online, register

app = typer.Typer(help="Register the Avro schemas and check their evolution.", no_args_is_help=True)

RegistryOpt = Annotated[
    str | None, typer.Option("--registry-url", help="Schema Registry URL (env SCHEMA_REGISTRY_URL).")
]
LevelOpt = Annotated[
    CompatibilityLevel | None,
    typer.Option("--compatibility", help="Level for every subject without an override (default BACKWARD)."),
]
DirOpt = Annotated[Path, typer.Option("--schemas-dir", help="Folder of .avsc files and history/.")]


def _registry(console: Console, registry_url: str | None) -> SchemaRegistryClient:
    """The Schema Registry at ``registry_url`` (else the configured one), answering; else exit 2."""
    try:
        return check_registry(KafkaSettings.with_overrides(schema_registry_url=registry_url))
    except Unreachable as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _print(console: Console, findings: list[Finding]) -> int:
    errors = 0
    for finding in findings:
        if finding.error:
            errors += 1
            console.print(f"[red]✗[/red] {finding.text}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]✓[/green] {finding.text}", highlight=False, soft_wrap=True)
    return errors


@app.command("check")
def check_command(
    offline: Annotated[bool, typer.Option("--offline", help="Only the history check (no registry; CI).")] = False,
    registry_url: RegistryOpt = None,
    compatibility: LevelOpt = None,
    schemas_dir: DirOpt = schemas.SCHEMA_DIR,
) -> None:
    """Check every local schema against its history and the registry's latest version; exit 1 if incompatible."""
    console, settings = Console(), SchemaSettings.with_overrides(compatibility=compatibility)
    findings = check_offline(settings, schema_dir=schemas_dir)
    if not offline:
        findings += check_online(_registry(console, registry_url), schema_dir=schemas_dir)
    errors = _print(console, findings)
    if errors:
        console.print(f"[red]{errors} incompatibilit{'y' if errors == 1 else 'ies'}[/red]")
        raise typer.Exit(1)


@app.command("register")
def register_command(
    registry_url: RegistryOpt = None,
    compatibility: LevelOpt = None,
    schemas_dir: DirOpt = schemas.SCHEMA_DIR,
) -> None:
    """Set each subject's compatibility level and register its schema; exit 1 if the registry refuses one."""
    console, settings = Console(), SchemaSettings.with_overrides(compatibility=compatibility)
    done, findings = register(_registry(console, registry_url), settings, schema_dir=schemas_dir)
    for r in done:
        console.print(
            f"[green]✓[/green] {r.subject}: {r.schema}.avsc is id {r.schema_id}, version {r.version}, "
            f"compatibility {r.compatibility}",
            highlight=False,
            soft_wrap=True,
        )
    if _print(console, findings):
        raise typer.Exit(1)
