"""Generator and serde throughput: pure generation, Avro encode/decode, and generate+produce to Kafka.

Figures are wall-clock records per second on one Python thread (librdkafka's
own threads do the network I/O in the Kafka case).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka.schema_registry import SchemaRegistryClient

import schemas
from services.config import GeneratorSettings
from services.generator.produce import Progress, Sender, stream_config
from services.generator.scenarios import Generated, TransactionStream
from services.kafka import check_broker, check_registry
from topology.serde import AvroDecoder, AvroEncoder


@dataclass(frozen=True)
class Figure:
    """One measured throughput."""

    name: str
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return f"{self.name:<50} {self.per_second:>12,.0f} records/s  ({self.records:,} in {self.seconds:.2f} s)"


def _timed(name: str, records: int, work: Callable[[], object]) -> Figure:
    start = time.perf_counter()
    work()
    return Figure(name, records, time.perf_counter() - start)


def pure(count: int, seed: int = 7) -> list[Figure]:
    """Generation alone, + encode, + label encode, and decode (in-memory mock registry: no network)."""
    registry = SchemaRegistryClient.new_client({"url": f"mock://bench-{uuid.uuid4().hex}"})
    settings = GeneratorSettings.with_overrides(seed=seed, rate=0)
    tx = AvroEncoder(registry, schemas.schema_text("transaction"), "bench-value")
    labels = AvroEncoder(registry, schemas.schema_text("transaction_label"), "bench.labels-value")
    decoder = AvroDecoder(registry)
    generated: list[Generated] = []
    encoded: list[bytes] = []

    def generate() -> None:
        generated.extend(TransactionStream(stream_config(settings)).take(count))

    def generate_encode() -> None:
        encode, encode_label = tx.encode, labels.encode
        for g in TransactionStream(stream_config(settings)).take(count):
            encoded.append(encode(g.record))
            encode_label(g.label())

    def encode_only() -> None:
        encode = tx.encode
        for g in generated:
            encode(g.record)

    def decode() -> None:
        run = decoder.decode
        for value in encoded:
            run(value)

    return [
        _timed("generate (pure)", count, generate),
        _timed("Avro encode Transaction", count, encode_only),
        _timed("generate + encode transaction + label", count, generate_encode),
        _timed("Avro decode Transaction (AvroDecoder)", count, decode),
    ]


def kafka(bootstrap_servers: str, registry_url: str, count: int, seed: int = 7) -> Figure:
    """Generate + encode + produce ``count`` transactions and labels to fresh topics, until all are delivered."""
    suffix = uuid.uuid4().hex[:10]
    settings = GeneratorSettings.with_overrides(
        seed=seed,
        rate=0,
        topic=f"bench-generator-{suffix}",
        labels_topic=f"bench-generator-{suffix}.labels",
        partitions=3,
    )
    admin = check_broker(bootstrap_servers)
    sender = Sender(settings, bootstrap_servers, check_registry(registry_url), admin)
    stream = TransactionStream(stream_config(settings))

    def quiet(_progress: Progress) -> None:
        return None

    start = time.perf_counter()
    result = sender.run(stream, count=count, rate=0, report=quiet)
    seconds = time.perf_counter() - start
    admin.delete_topics([settings.topic, settings.labels_topic])
    if result.failed or result.delivered != 2 * count:
        raise RuntimeError(f"{result.failed} failed, {result.delivered} of {2 * count} delivered: {result.last_error}")
    return Figure("generate + encode + produce to Kafka (delivered)", count, seconds)
