"""`fraudstream consume --topic T`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from rich.console import Console

from services.config import KafkaSettings
from services.connection_options import BootstrapServers, RegistryUrl, connection
from services.consumer import consume, parse_offset
from services.kafka import NotAuthorized, Unreachable, check_broker, check_registry, topic_partitions
from topology.serde.decoder import RegistryError


def consume_command(
    topic: Annotated[str, typer.Option(help="Topic to read.")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the earliest offset (new group).")] = False,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (commits offsets); default: a new one.")] = None,
    print_key: Annotated[bool, typer.Option(help="Print an envelope with the key.")] = False,
    print_headers: Annotated[bool, typer.Option(help="Print an envelope with the headers.")] = False,
    read_committed: Annotated[
        bool, typer.Option("--read-committed/--read-uncommitted", help="Isolation level.")
    ] = True,
    partition: Annotated[
        int | None, typer.Option(min=0, help="Read only this partition (no group), from --offset.")
    ] = None,
    offset: Annotated[
        str | None,
        typer.Option(help="With --partition: earliest, latest (default) or an offset."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a record (default: never).")
    ] = None,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
) -> None:
    """Print Avro records of a topic as JSON lines (decimals exact); undecodable ones as error lines."""
    console = Console(stderr=True)
    start = _start_offset(offset, partition, group, from_beginning)
    kafka = connection(bootstrap_servers, registry_url)
    try:
        admin = check_broker(kafka)
        registry = check_registry(kafka)
        _check_topic(console, kafka, topic_partitions(admin, topic), topic, partition)
        result = consume(
            kafka,
            registry,
            topic,
            group_id=group,
            from_beginning=from_beginning,
            max_messages=max_messages,
            idle_timeout_s=timeout,
            read_committed=read_committed,
            print_key=print_key,
            print_headers=print_headers,
            partition=partition,
            offset=start,
        )
    except (Unreachable, NotAuthorized, RegistryError, KafkaException) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        raise typer.Exit(130) from None
    except BrokenPipeError:  # e.g. `| head`
        sys.stderr.close()
        raise typer.Exit(0) from None
    print(
        f"Processed a total of {result.printed + result.errors} messages ({result.errors} undecodable)", file=sys.stderr
    )


def _start_offset(offset: str | None, partition: int | None, group: str | None, from_beginning: bool) -> int:
    """Where a ``--partition`` read starts (``BadParameter`` for options that do not go together)."""
    if offset is not None and partition is None:
        raise typer.BadParameter("needs --partition", param_hint="--offset")
    if partition is not None and group is not None:
        raise typer.BadParameter("cannot be used with --partition (a partition is read without a group)",
                                 param_hint="--group")  # fmt: skip
    try:
        return parse_offset(offset or ("earliest" if from_beginning else "latest"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--offset") from None


def _check_topic(
    console: Console, kafka: KafkaSettings, partitions: int | None, topic: str, partition: int | None
) -> None:
    """Exit 1 when ``topic`` does not exist (``partitions`` is ``None``) or has no ``partition``."""
    if partitions is None:
        console.print(f"[red]error:[/red] topic {topic!r} does not exist on {kafka.bootstrap_servers}")
        raise typer.Exit(1)
    if partition is not None and partition >= partitions:
        console.print(f"[red]error:[/red] topic {topic!r} has {partitions} partitions (0-{partitions - 1})")
        raise typer.Exit(1)
