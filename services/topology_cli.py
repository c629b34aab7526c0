"""``fraudstream topology describe | validate``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from services.config import TOPICS
from services.detector import FRAUD_TOPOLOGY
from topology.plan.describe import describe_mermaid, describe_text
from topology.plan.loader import TopologyError, load_topology
from topology.plan.model import Topology

app = typer.Typer(help="Print or check a topology file (default: the fraud detector's).", no_args_is_help=True)


class Format(StrEnum):
    text = "text"
    mermaid = "mermaid"


File = Annotated[Path, typer.Option("--file", "-f", help="Topology YAML file.")]
AnyTopic = Annotated[
    bool, typer.Option("--any-topic", help="Accept topics that are not in the project's topic list.")
]


def _load(file: Path, any_topic: bool) -> Topology:
    known = None if any_topic else set(TOPICS.model_dump().values())
    try:
        return load_topology(file, known_topics=known)
    except TopologyError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@app.command("describe")
def describe(
    file: File = FRAUD_TOPOLOGY,
    format: Annotated[Format, typer.Option("--format", help="text or mermaid")] = Format.text,
    any_topic: AnyTopic = False,
) -> None:
    """Print sub-topologies, sources, processors, branches, sinks, state stores and rules."""
    t = _load(file, any_topic)
    typer.echo(describe_mermaid(t) if format is Format.mermaid else describe_text(t), nl=False)


@app.command("validate")
def validate(file: File = FRAUD_TOPOLOGY, any_topic: AnyTopic = False) -> None:
    """Check a topology file; errors name the file, line and key (exit code 1)."""
    t = _load(file, any_topic)
    typer.echo(f"{file}: ok ({len(t.rules)} rules, {len(t.branches) + 1} branches, {len(t.stores)} state stores)")
