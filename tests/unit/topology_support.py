"""Helpers for the topology unit tests: a mock registry with the real Avro serde, and transactions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from services.detector import transaction_fields
from topology.batch.decode import ColumnarDecoder
from topology.plan.dsl import Stream
from topology.plan.dsl import stream as dsl_stream
from topology.plan.model import Topology
from topology.processor import TopologyProcessor
from topology.serde.decoder import AvroDecoder, AvroEncoder
from topology.testing.driver import TopologyTestDriver

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TOPIC = "queueing.transactions"
TX_KEY = ("source_account",)  # the record key of a piped transaction (as the generator keys them)
TX_FIELDS = transaction_fields()


def stream(topic: str = TOPIC, **kwargs: Any) -> Stream:
    """``topology.plan.dsl.stream`` of transactions: keyed by source account, event time, transaction id."""
    defaults = {"fields": TX_FIELDS, "key": TX_KEY, "time_field": "event_time", "id_field": "transaction_id"}
    return dsl_stream(topic, **{"dlq": "dlq", **defaults, **kwargs})


TX = stream()  # builds conditions over transactions: TX.expr(...), TX.rule(...), TX.count(...)


@dataclass
class Serde:
    registry: SchemaRegistryClient
    encoder: AvroEncoder
    decoder: AvroDecoder


def serde(name: str = "unit") -> Serde:
    """The real Avro serde over confluent_kafka's in-memory mock registry (unit tests only)."""
    registry = SchemaRegistryClient.new_client({"url": f"mock://{name}"})
    text = schema_text("transaction")
    return Serde(registry, AvroEncoder(registry, text, f"{TOPIC}-value"), AvroDecoder(registry, text))


def tx(
    n: int,
    amount: str = "10.00",
    *,
    source: str = "acc-1",
    target: str = "shop-1",
    minutes: float = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Transaction ``tx-<n>`` at ``T0 + minutes``."""
    return {
        "transaction_id": f"tx-{n}",
        "source_account": source,
        "target_account": target,
        "amount": Decimal(amount),
        "currency": "EUR",
        "event_time": T0 + timedelta(minutes=minutes),
        **extra,
    }


def driver(
    topology: Topology, s: Serde, *, partitions: int = 1, version: str = "v-test"
) -> TopologyTestDriver[TopologyProcessor]:
    """A driver whose processor also has the batch path (stateless topologies take it for every record)."""
    columnar = ColumnarDecoder(s.registry, schema_text("transaction"))
    processor = TopologyProcessor(topology, s.decoder.decode, version=version, columnar=columnar)
    return TopologyTestDriver(
        processor, partitions=partitions, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY
    )


def headers(record: Any) -> Mapping[str, bytes]:
    return dict(record.headers)
