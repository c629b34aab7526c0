"""An input the broker took that is too large to forward is dead-lettered reduced, on real Kafka.

The broker accepts records up to its ``message.max.bytes`` (1,048,588 by default); the detector's
producer refuses more than 1,000,000 bytes. A transaction of about 999,900 bytes therefore cannot be
forwarded with the decision's headers, nor dead-lettered whole. Before, this looped for ever (abort,
re-read, fail). Now: a bounded number of retries, then a dead letter without the value
(``error.omitted: value``, ``error.value.bytes``), and the records around it are decided as usual.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Output, Topics, create_topics, read_all, stateless_topology
from tests.integration.stateful_support import run_until
from topology.serde.decoder import AvroEncoder

pytestmark = pytest.mark.integration


def _tx(n: int, target: str) -> dict[str, object]:
    return {
        "transaction_id": f"big-{n}", "source_account": f"acct-{n}", "target_account": target,
        "amount": Decimal("10.00"), "currency": "EUR", "event_time": 1_780_000_000_000 + n,
    }  # fmt: skip


def _detect(stack: Endpoints, t: Topics, tmp_path: Path, values: list[bytes]) -> tuple[list[Output], str]:
    """Produce ``values`` (up to the broker's limit), run the stateless detector until each is decided or
    dead-lettered, stop it; (every output record read_committed, the detector's log)."""
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "message.max.bytes": 1_048_576})
    for i, v in enumerate(values):
        producer.produce(t.transactions, v, f"acct-{i}".encode())
    assert producer.flush(30) == 0
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t), encoding="utf-8")
    d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "one", tmp_path / "d.log")
    log = run_until(d, stack.bootstrap_servers, t.outputs, 1, len(values), timeout=120)
    return read_all(stack.bootstrap_servers, t.outputs, "read_committed"), log


def test_an_input_too_large_to_forward_is_dead_lettered_without_its_value(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], 1)
    encoder = AvroEncoder(SchemaRegistryClient({"url": stack.registry_url}), schema_text("transaction"),
                          f"{t.transactions}-value")  # fmt: skip
    values = [encoder.encode(_tx(0, "shop")), encoder.encode(_tx(1, "x" * 999_850)), encoder.encode(_tx(2, "shop"))]
    assert 999_800 < len(values[1]) < 1_000_000
    outputs, log = _detect(stack, t, tmp_path, values)
    legit = [o for o in outputs if o.topic == t.legit]
    (dead,) = [o for o in outputs if o.topic == t.dlq]
    assert [o.value for o in legit] == [values[0], values[2]]  # the records around it, once each
    h = dict(dead.headers)
    assert dead.value is None and h["error.omitted"] == b"value"
    assert h["error.value.bytes"] == str(len(values[1])).encode()
    assert (h["source.topic"], h["source.offset"]) == (t.transactions.encode(), b"1")
    assert b"MSG_SIZE_TOO_LARGE" in h["error.message"] and h["error.reason"] == b"retries-exhausted"
    assert "dead-lettering" in log


def test_a_record_the_sink_topic_refuses_at_commit_is_found_and_dead_lettered(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    """The legit topic allows 2,000 bytes (a topic-level max.message.bytes): only the commit fails, for the
    whole produce request. The runtime halves its transactions until the record is alone, retries it, and
    dead-letters it whole (the DLQ topic takes it); the others are decided once."""
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], 1)
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    for f in admin.create_topics([NewTopic(t.legit, 1, 1, config={"max.message.bytes": "2000"})]).values():
        f.result(timeout=30)
    encoder = AvroEncoder(SchemaRegistryClient({"url": stack.registry_url}), schema_text("transaction"),
                          f"{t.transactions}-value")  # fmt: skip
    values = [encoder.encode(_tx(n, "x" * 5000 if n == 6 else "shop")) for n in range(20)]
    outputs, log = _detect(stack, t, tmp_path, values)
    assert [o.value for o in outputs if o.topic == t.legit] == [v for i, v in enumerate(values) if i != 6]
    (dead,) = [o for o in outputs if o.topic == t.dlq]
    h = dict(dead.headers)
    assert dead.value == values[6] and h["source.offset"] == b"6"
    assert b"MSG_SIZE_TOO_LARGE" in h["error.message"]
    assert "commit refused" in log
