"""Generator and serde throughput: pure generation, Avro encode/decode, and generate+produce to Kafka.

Figures are wall-clock records per second on one Python thread (librdkafka's
own threads do the network I/O in the Kafka case).
"""

from __future__ import annotations

import functools
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer

import schemas
from services.config import GeneratorSettings, KafkaSettings
from services.generator.produce import Progress, Sender, stream_config
from services.generator.scenarios import Generated, TransactionStream
from services.kafka import check_broker, check_registry
from topology.serde.decoder import AvroDecoder, AvroEncoder, wire_header

_SCHEMA_FILES = {"Transaction": "transaction", "TransactionLabel": "transaction_label"}


@dataclass(frozen=True)
class Figure:
    """One measured throughput."""

    name: str
    records: int
    seconds: float
    cpu_seconds: float | None = None  # CPU time of the Python thread, when measured

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        text = f"{self.name:<56} {self.per_second:>12,.0f} records/s  ({self.records:,} in {self.seconds:.2f} s"
        if self.cpu_seconds is not None:
            text += f"; Python thread CPU {self.cpu_seconds:.2f} s"
        return text + ")"


def _timed(name: str, records: int, prepare: Callable[[], Callable[[], object]], repeat: int = 1) -> Figure:
    """The best of ``repeat`` runs of the work ``prepare()`` returns, each prepared afresh (untimed);
    on a shared machine the best run is the least disturbed."""
    best = float("inf")
    for _ in range(max(repeat, 1)):
        work = prepare()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return Figure(name, records, best)


def pure(count: int, seed: int = 7, repeat: int = 1) -> list[Figure]:
    """Generation alone; encode with fastavro's schemaless_writer (the baseline) and with
    ``AvroEncoder``, on the same records; generate + encode transaction and label; decode.
    In-memory mock registry: no network. Each figure is the best of ``repeat`` runs; each run
    gets a new stream and new encoders, made before its clock starts (as in ``kafka``; a warm
    decimal cache would flatter repeats)."""
    registry = SchemaRegistryClient.new_client({"url": f"mock://bench-{uuid.uuid4().hex}"})
    settings = GeneratorSettings.with_overrides(seed=seed, rate=0)
    texts = {name: schemas.schema_text(file) for name, file in _SCHEMA_FILES.items()}
    subjects = {"Transaction": "bench-value", "TransactionLabel": "bench.labels-value"}

    def encoder(name: str) -> AvroEncoder:
        return AvroEncoder(registry, texts[name], subjects[name])

    generated: list[Generated] = []
    encoded: list[bytes] = []
    generate = functools.partial(_generate_loop, settings, count, generated)
    generate_encode = functools.partial(_generate_encode_loop, settings, count, encoder, encoded)
    decode = functools.partial(_decode_loop, registry, encoded)
    figures = [_timed("generate (pure)", count, generate, repeat)]
    batches = {"Transaction": [g.record for g in generated], "TransactionLabel": [g.label() for g in generated]}
    for name, batch in batches.items():
        schema_id = encoder(name).schema_id
        baseline = _fastavro_loop(texts[name], schema_id, batch)
        figures.append(_timed(f"Avro encode {name} (fastavro schemaless_writer)", count, _as_is(baseline), repeat))
        fresh = _encoder_loop(functools.partial(encoder, name), batch)
        figures.append(_timed(f"Avro encode {name} (AvroEncoder)", count, fresh, repeat))
    figures.append(_timed("generate + encode transaction + label", count, generate_encode, repeat))
    figures.append(_timed("Avro decode Transaction (AvroDecoder)", count, decode, repeat))
    return figures


def _generate_loop(settings: GeneratorSettings, count: int, into: list[Generated]) -> Callable[[], None]:
    """A run generating ``count`` transactions (kept in ``into``) from a new stream."""
    stream = TransactionStream(stream_config(settings))

    def run() -> None:
        into[:] = stream.take(count)

    return run


def _generate_encode_loop(
    settings: GeneratorSettings, count: int, encoder: Callable[[str], AvroEncoder], into: list[bytes]
) -> Callable[[], None]:
    """A run generating ``count`` transactions from a new stream and encoding each with its label (the
    encoded transactions kept in ``into``)."""
    stream = TransactionStream(stream_config(settings))
    encode, encode_label = encoder("Transaction").encode, encoder("TransactionLabel").encode

    def run() -> None:
        into.clear()
        for g in stream.take(count):
            into.append(encode(g.record))
            encode_label(g.label())

    return run


def _decode_loop(registry: SchemaRegistryClient, encoded: list[bytes]) -> Callable[[], None]:
    """A run decoding every value of ``encoded`` (as it is when the run starts) with a new ``AvroDecoder``."""
    run = AvroDecoder(registry).decode

    def work() -> None:
        for value in encoded:
            run(value)

    return work


def _as_is(work: Callable[[], None]) -> Callable[[], Callable[[], None]]:
    return lambda: work


def _encoder_loop(
    make: Callable[[], AvroEncoder], records: list[dict[str, Any]]
) -> Callable[[], Callable[[], None]]:
    """Prepares a run of a new encoder from ``make`` over ``records``."""

    def prepare() -> Callable[[], None]:
        encode = make().encode

        def run() -> None:
            for record in records:
                encode(record)

        return run

    return prepare


def _fastavro_loop(schema_text: str, schema_id: int, records: list[dict[str, Any]]) -> Callable[[], None]:
    """fastavro's schemaless_writer into a buffer after the wire header: ``AvroEncoder``'s
    per-record work before ``topology.serde.writer``, less its field checks."""
    parsed, header = parse_schema(json.loads(schema_text)), wire_header(schema_id)

    def run() -> None:
        for record in records:
            buf = io.BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
            buf.getvalue()

    return run


def kafka(connection: KafkaSettings, count: int, seed: int = 7, repeat: int = 1) -> Figure:
    """Generate + encode + produce ``count`` transactions and labels to fresh topics, until all are
    delivered; the best of ``repeat`` runs (each on its own fresh topics). ``cpu_seconds`` is the
    Python thread's CPU time in that run (librdkafka's threads do the network I/O and compression)."""
    registry = check_registry(connection)
    admin = check_broker(connection)
    best = Figure("generate + encode + produce to Kafka (delivered)", count, float("inf"))
    for _ in range(max(repeat, 1)):
        suffix = uuid.uuid4().hex[:10]
        settings = GeneratorSettings.with_overrides(
            seed=seed,
            rate=0,
            topic=f"bench-generator-{suffix}",
            labels_topic=f"bench-generator-{suffix}.labels",
            partitions=3,
        )
        sender = Sender(settings, connection, registry, admin)
        stream = TransactionStream(stream_config(settings))
        start, cpu = time.perf_counter(), time.thread_time()
        result = sender.run(stream, count=count, rate=0, report=_quiet)
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
        for future in admin.delete_topics([settings.topic, settings.labels_topic]).values():
            future.result(timeout=30)  # wait: a process that exits first leaves the topics behind
        records = result.records
        if records.failed or records.delivered != 2 * count:
            raise RuntimeError(
                f"{records.failed} failed, {records.delivered} of {2 * count} delivered: {records.last_error}"
            )
        if seconds < best.seconds:
            best = Figure(best.name, count, seconds, cpu)
    return best


def _quiet(_progress: Progress) -> None:
    return None
