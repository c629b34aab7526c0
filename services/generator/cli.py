"""`fraudstream generate`: labelled Avro transactions to Kafka."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from services.config import GeneratorSettings, KafkaSettings
from services.connection_options import BootstrapServers, RegistryUrl, connection
from services.generator.produce import Progress, Sender, rate_setting, stream_config
from services.generator.scenarios import SCENARIOS, TransactionStream
from services.kafka import Unreachable, check_broker, check_registry
from services.logs import setup_logging
from services.metrics import Metrics
from topology.serde.decoder import EncodeError, RegistryError

LOG_EVERY_S = 10.0  # status line interval when stderr is not a terminal


def _fraud_rates(values: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in values:
        name, sep, number = item.partition("=")
        if not sep or name not in SCENARIOS:
            raise typer.BadParameter(f"{item!r}: expected NAME=RATE with NAME one of {', '.join(SCENARIOS)}")
        try:
            rates[rate_setting(name)] = float(number)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: RATE must be a number (incidents per 1,000 tx)") from None
    return rates


def _stop_on_signals() -> list[str]:
    """Ctrl-C and SIGTERM both stop sending and flush (also when started in the background).

    The handler only records the signal (the send loop checks it between batches): an
    exception raised from a handler could surface inside librdkafka's poll() callbacks.
    """
    received: list[str] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return received


def generate(
    rate: Annotated[float | None, typer.Option(help="Transactions per second; 0 = as fast as possible.")] = None,
    count: Annotated[int | None, typer.Option(help="How many to send (default: until Ctrl-C).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed and flags give the same stream.")] = None,
    topic: Annotated[str | None, typer.Option(help="Transactions topic.")] = None,
    labels_topic: Annotated[str | None, typer.Option(help="Ground-truth labels topic.")] = None,
    fraud: Annotated[
        list[str] | None,
        typer.Option(help=f"Scenario rate as NAME=INCIDENTS_PER_1000_TX (repeatable); NAME in {', '.join(SCENARIOS)}."),
    ] = None,
    event_rate: Annotated[
        float | None, typer.Option(help="Simulated tx per event-time second (default: --rate, or 10).")
    ] = None,
    start: Annotated[
        datetime | None, typer.Option(help="First event time, UTC (default: now; 2026-01-01 when seeded).")
    ] = None,
    accounts: Annotated[
        int | None, typer.Option(help="Accounts (default: 5,000 per simulated tx/s, at least 10,000).")
    ] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of topics the generator creates.")] = None,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics on this port (env FRAUDSTREAM_GENERATOR_METRICS_PORT).")
    ] = None,
) -> None:
    """Generate labelled transactions (legit traffic with fraud scenarios) as Avro to Kafka."""
    setup_logging()  # the startup wait and broker outages are logged; progress goes to the console
    console = Console(stderr=True)
    settings = GeneratorSettings.with_overrides(
        rate=rate,
        count=count,
        seed=seed,
        topic=topic,
        labels_topic=labels_topic,
        event_rate=event_rate,
        start=start,
        accounts=accounts,
        partitions=partitions,
        metrics_port=metrics_port,
        **_fraud_rates(fraud or []),
    )
    kafka = connection(bootstrap_servers, registry_url)
    sender = _sender(console, settings, kafka)
    _announce(console, settings)
    signals = _stop_on_signals()
    metrics = Metrics("generator")
    server = metrics.serve(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
    metrics.generator_target_rate.set(settings.rate)
    result = _send(console, sender, TransactionStream(stream_config(settings)), settings, metrics, signals)
    if server is not None:
        server.close()
    _summarise(console, result, interrupted=bool(signals))


def _send(
    console: Console, sender: Sender, stream: TransactionStream, settings: GeneratorSettings, metrics: Metrics,
    signals: list[str],
) -> Progress:
    """Send ``stream`` until its count is sent or a signal came, reporting progress (exit 1 on a record that
    does not fit the schema)."""
    with contextlib.ExitStack() as stack:
        # A terminal gets one live status line; logs (containers, files) a plain line every LOG_EVERY_S.
        live = Live(Text(""), console=console, refresh_per_second=4) if console.is_terminal else None
        if live is not None:
            stack.enter_context(live)
        report = _reporter(console, live, metrics)
        try:
            result = sender.run(stream, count=settings.count, rate=settings.rate, report=report,
                                stopped=lambda: bool(signals))
        except EncodeError as exc:  # a generator bug: name the field rather than print a trace
            console.print(f"[red]error:[/red] generated record does not fit the schema: {exc}")
            raise typer.Exit(1) from None
        report(result)
    return result


def _sender(console: Console, settings: GeneratorSettings, kafka: KafkaSettings) -> Sender:
    """The sender, once the broker and the registry answer (exit 2 when one does not)."""
    try:
        admin = check_broker(kafka)
        registry = check_registry(kafka)
        return Sender(settings, kafka, registry, admin)
    except (Unreachable, RegistryError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _announce(console: Console, settings: GeneratorSettings) -> None:
    target = "until Ctrl-C" if settings.count is None else f"{settings.count:,}"
    pace = "as fast as possible" if settings.rate == 0 else f"{settings.rate:,.0f} tx/s"
    console.print(
        f"generating {target} transactions to {settings.topic} (labels: {settings.labels_topic}), {pace}, "
        f"seed {settings.seed}",
        highlight=False,
        soft_wrap=True,
    )


def _reporter(console: Console, live: Live | None, metrics: Metrics) -> Callable[[Progress], None]:
    """The progress callback: the live status line (or a plain line every ``LOG_EVERY_S``) and the metrics."""
    last = [0, time.monotonic()]  # transactions counted into the metrics, and when
    logged = [0.0]  # when the last status line was printed (not on a terminal)

    def report(progress: Progress) -> None:
        now = time.monotonic()
        if live is not None:
            live.update(Text(progress.line(now)))
        elif now - logged[0] >= LOG_EVERY_S:
            console.print(progress.line(now), highlight=False, soft_wrap=True)
            logged[0] = now
        metrics.generated.inc(progress.sent - last[0])
        if now > last[1]:
            metrics.generator_rate.set((progress.sent - last[0]) / (now - last[1]))
        last[:] = [progress.sent, now]

    return report


def _summarise(console: Console, result: Progress, *, interrupted: bool) -> None:
    """The last line; exit 1 when records failed or were never delivered."""
    elapsed = time.monotonic() - result.started
    verdict = "interrupted: " if interrupted else ""
    records = result.records
    console.print(
        f"{verdict}sent {result.sent:,} transactions ({result.fraud:,} fraud) in {elapsed:.1f} s, "
        f"{records.delivered:,} records delivered (transactions + labels), {records.failed:,} failed",
        highlight=False,
        soft_wrap=True,
    )
    if records.failed or records.in_flight:
        console.print(
            f"[red]error:[/red] {records.failed:,} failed, {records.in_flight:,} undelivered: {records.last_error}"
        )
        raise typer.Exit(1)
