"""``fraudstream topology describe | validate``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from services.detector import FRAUD_TOPOLOGY, load_topology
from topology.plan.describe import describe_mermaid, describe_text
from topology.plan.loader import TopologyError
from topology.plan.model import Topology

app = typer.Typer(help="Print or check a topology file (default: the fraud detector's).", no_args_is_help=True)


class Format(StrEnum):
    text = "text"
    mermaid = "mermaid"


File = Annotated[Path, typer.Option("--file", "-f", help="Topology YAML file.")]
Declared = Annotated[
    list[str] | None,
    typer.Option("--topic", help="A topic the file may name (repeat it); with any, every topic must be declared."),
]
Broker = Annotated[
    bool, typer.Option("--broker", help="Also check that the source topic exists on the broker (KAFKA_* settings).")
]


def _load(file: Path, declared: list[str] | None) -> Topology:
    try:
        return load_topology(file, known_topics=set(declared) if declared else None)
    except TopologyError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


def _check_on_broker(file: Path, t: Topology) -> None:
    """The source must exist; the runtime creates the other topics it writes at start."""
    from services.config import KafkaSettings
    from services.kafka import check_broker

    kafka = KafkaSettings()
    present = set(check_broker(kafka).list_topics(timeout=10).topics)
    if t.source not in present:
        typer.secho(f"error: {file}: source.topic: topic {t.source!r} does not exist on {kafka.bootstrap_servers}",
                    fg=typer.colors.RED, err=True)  # fmt: skip
        raise typer.Exit(1)
    missing = [x for x in (*t.sinks, t.dlq, *((t.alerts,) if t.alerts else ())) if x not in present]
    if missing:
        typer.echo(f"created at start (not on the broker yet): {', '.join(dict.fromkeys(missing))}")


@app.command("describe")
def describe(
    file: File = FRAUD_TOPOLOGY,
    format: Annotated[Format, typer.Option("--format", help="text or mermaid")] = Format.text,
    declared: Declared = None,
) -> None:
    """Print sub-topologies, sources, processors, branches, sinks, state stores and rules."""
    t = _load(file, declared)
    typer.echo(describe_mermaid(t) if format is Format.mermaid else describe_text(t), nl=False)


@app.command("validate")
def validate(file: File = FRAUD_TOPOLOGY, declared: Declared = None, broker: Broker = False) -> None:
    """Check a topology file; errors name the file, line and key (exit code 1). Any topic name is accepted
    unless ``--topic`` declares the list; ``--broker`` checks the source topic exists."""
    t = _load(file, declared)
    if broker:
        _check_on_broker(file, t)
    typer.echo(f"{file}: ok ({len(t.rules)} rules, {len(t.branches) + 1} branches, {len(t.stores)} state stores)")
