"""`fraudstream bench ...`: throughput benchmarks that print figures."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Annotated

import typer

from services.bench import generator as generator_bench
from services.config import DetectorSettings
from services.connection_options import BootstrapServers, RegistryUrl, connection
from services.kafka import Unreachable

app = typer.Typer(help="Benchmarks that print throughput figures.", no_args_is_help=True)

# Options every broker benchmark takes.
Partitions = Annotated[int, typer.Option(help="Partitions of the benchmark topics.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")]
DETECT_COMMIT_INTERVAL_MS: int = DetectorSettings.model_fields["commit_interval_ms"].default


def _names(option: str) -> list[str]:
    """The names of a comma-separated option (``--rows``, ``--stores``), blanks dropped."""
    return [name.strip() for name in option.split(",") if name.strip()]


def generator_command(
    count: Annotated[int, typer.Option(help="Transactions per measurement.")] = 100_000,
    kafka: Annotated[bool, typer.Option("--kafka/--no-kafka", help="Also produce to the broker.")] = True,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    repeat: Annotated[int, typer.Option(help="Runs per figure; the best is printed (a shared machine is noisy).")] = 3,
) -> None:
    """Generator throughput: (a) pure generation + Avro encode, (b) generate + produce to Kafka."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"fraudstream generator benchmark: {count:,} transactions, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load}, best of {repeat}"
    )
    for figure in generator_bench.pure(count, repeat=repeat):
        print(figure)
    if kafka:
        settings = connection(bootstrap_servers, registry_url)
        try:
            figure = generator_bench.kafka(settings, count, repeat=repeat)
            print(figure)
        except Unreachable as exc:
            print(f"error: {exc}")
            raise typer.Exit(2) from None


def detector_command(
    count: Annotated[int, typer.Option(min=1, help="Transactions to preload once, read by every pass.")] = 1_000_000,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (each runs every row once).")] = 3,
    rows: Annotated[str, typer.Option(help="Rows of each round (raw required).")] = "raw,stateless,window,fraud",
    partitions: Partitions = 6,
    commit_interval_ms: Annotated[int, typer.Option(help="Transaction commit interval (every loop).")] = 100,
    rate: Annotated[float, typer.Option(help="Input rate of the latency measurement (tx/s).")] = 5_000.0,
    latency_seconds: Annotated[float, typer.Option(help="Duration of the latency measurement (0: none).")] = 10.0,
    latency_row: Annotated[str, typer.Option(help="Topology of the latency measurement.")] = "fraud",
    latency_commit_interval_ms: Annotated[
        int, typer.Option(help="The latency detector's commit interval (default: fraudstream detect's).")
    ] = DETECT_COMMIT_INTERVAL_MS,
    profile: Annotated[
        str | None, typer.Option(help="cProfile one extra pass of this row (not in the table); print the top.")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Detector throughput vs a raw exactly-once copy loop, interleaved rounds; end-to-end latency; targets."""
    from services.bench.detector_cli import run_detector_bench

    raise typer.Exit(run_detector_bench(
        count=count, rounds=rounds, rows=_names(rows), partitions=partitions, commit_interval_ms=commit_interval_ms,
        rate=rate, latency_seconds=latency_seconds, latency_row=latency_row,
        latency_commit_interval_ms=latency_commit_interval_ms, profile=profile, json_output=json_output,
    ))  # fmt: skip


def state_command(
    keys: Annotated[int, typer.Option(help="Distinct keys in the changelog to restore.")] = 1_000_000,
    count: Annotated[int, typer.Option(help="Transactions for the stateful vs stateless throughput.")] = 200_000,
    partitions: Partitions = 6,
    restore: Annotated[bool, typer.Option("--restore/--no-restore", help="Measure the restore.")] = True,
    throughput: Annotated[bool, typer.Option("--throughput/--no-throughput", help="Measure throughput.")] = True,
    json_output: JsonOutput = False,
) -> None:
    """State: changelog restore time for N keys; throughput with stateful rules vs stateless (same run)."""
    from services.bench.state import run_state_bench

    raise typer.Exit(run_state_bench(
        keys=keys, count=count, partitions=partitions, restore=restore, throughput=throughput, json_output=json_output,
    ))  # fmt: skip


def hot_command(
    normal: Annotated[int, typer.Option(help="Normal records in every input.")] = 100_000,
    hot: Annotated[int, typer.Option(help="Records added: more normal ones, or one hot payer's / payee's.")] = 50_000,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (normal, hot payer, hot payee).")] = 2,
    partitions: Partitions = 6,
) -> None:
    """Hot keys: fraud.yaml's speed with one hot payer or payee against normal traffic (same run, same size)."""
    from services.bench.hot import run_hot_bench

    raise typer.Exit(run_hot_bench(normal=normal, hot=hot, rounds=rounds, partitions=partitions))


def processor_command(
    count: Annotated[int, typer.Option(help="Generated transactions.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated stream.")] = 1,
    partitions: Annotated[int, typer.Option(help="Input partitions.")] = 3,
    commit_every: Annotated[int, typer.Option(help="Input records between two flush() calls.")] = 1000,
    profile: Annotated[bool, typer.Option("--profile", help="Print a cProfile of the fraud.yaml run.")] = False,
    json_output: JsonOutput = False,
) -> None:
    """The processor alone, no broker: the stateless rule and fraud.yaml over the same generated input."""
    from services.bench.processor import run_processor_bench

    raise typer.Exit(run_processor_bench(
        count=count, seed=seed, partitions=partitions, commit_every=commit_every, profile=profile,
        json_output=json_output,
    ))  # fmt: skip


def dashboard_command(
    records: Annotated[int, typer.Option(help="Decisions produced, then taken in by the dashboard's feed.")] = 50_000,
) -> None:
    """The dashboard's feed: decisions per second taken in, and the worst event-loop stall (real broker)."""
    from services.bench.dashboard import run_dashboard_bench

    raise typer.Exit(run_dashboard_bench(records))


def stores_command(
    records: Annotated[int, typer.Option(help="Generated transactions of the update + flush workloads.")] = 100_000,
    repeat: Annotated[int, typer.Option(help="Rounds of the update workloads (the best of each store counts).")] = 3,
    flush_every: Annotated[int, typer.Option(help="Records between two flushes (one transaction).")] = 2_000,
    keys: Annotated[int, typer.Option(help="Distinct keys in the changelog to replay.")] = 1_000_000,
    partitions: Annotated[int, typer.Option(help="Partitions of the stores and of the changelog.")] = 6,
    stores: Annotated[
        str, typer.Option(help="Implementations, memory first (also: rocksdb-cached, lmdb-cached).")
    ] = "memory,rocksdb,rocksdb-cached,lmdb",
    restore: Annotated[bool, typer.Option("--restore/--no-restore", help="Replay a changelog (needs Kafka).")] = True,
    json_output: JsonOutput = False,
) -> None:
    """State stores: in-memory vs embedded (RocksDB, LMDB): update, flush, restore, RSS, restart (same run)."""
    from services.bench.stores import run_stores_bench

    raise typer.Exit(run_stores_bench(
        records=records, repeat=repeat, flush_every=flush_every, keys=keys, partitions=partitions,
        kinds=_names(stores), restore=restore, json_output=json_output,
    ))  # fmt: skip


def _register(*commands: tuple[str, Callable[..., None]]) -> None:
    """Add each (name, function) of ``commands`` to ``app``, in the order ``--help`` lists them."""
    for name, command in commands:
        app.command(name)(command)


_register(
    ("generator", generator_command), ("detector", detector_command), ("state", state_command), ("hot", hot_command),
    ("processor", processor_command), ("dashboard", dashboard_command), ("stores", stores_command),
)
