"""Proofs that the stack under test is a real Kafka with working transactions and a real registry."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.conftest import Endpoints
from tests.integration.eos_support import read_all

pytestmark = pytest.mark.integration


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def test_transactions_hide_aborted_records_from_read_committed(stack: Endpoints, unique: str) -> None:
    topic = f"proof-txn-{unique}"
    _create_topic(stack.bootstrap_servers, topic)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "transactional.id": f"proof-{unique}"})
    producer.init_transactions(60)
    producer.begin_transaction()
    for i in range(1000):
        producer.produce(topic, key=str(i).encode(), value=b"committed")
    producer.commit_transaction(60)
    producer.begin_transaction()
    for i in range(1000):
        producer.produce(topic, key=str(i).encode(), value=b"aborted")
    producer.flush(60)
    producer.abort_transaction(60)

    assert len(read_all(stack.bootstrap_servers, (topic,), "read_committed")) == 1000
    assert len(read_all(stack.bootstrap_servers, (topic,), "read_uncommitted")) == 2000


def test_group_consumer_gets_data_within_ten_seconds(stack: Endpoints, unique: str) -> None:
    topic = f"proof-group-{unique}"
    _create_topic(stack.bootstrap_servers, topic)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    producer.produce(topic, value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({
        "bootstrap.servers": stack.bootstrap_servers, "group.id": f"proof-group-{unique}",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    deadline = time.monotonic() + 10
    got = None
    try:
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg.value()
    finally:
        consumer.close()
    assert got == b"hello", "a group consumer got nothing within 10 s (is group.initial.rebalance.delay.ms 0?)"


V1 = '{"type":"record","name":"Probe","namespace":"io.fraudstream.test","fields":[{"name":"a","type":"int"}]}'
V2_OK = ('{"type":"record","name":"Probe","namespace":"io.fraudstream.test","fields":'
         '[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}')
V2_BAD = ('{"type":"record","name":"Probe","namespace":"io.fraudstream.test","fields":'
          '[{"name":"a","type":"int"},{"name":"b","type":"string"}]}')


def test_registry_registers_reads_back_and_rejects_backward_incompatible(stack: Endpoints, unique: str) -> None:
    client = SchemaRegistryClient({"url": stack.registry_url})
    subject = f"proof-{unique}-value"
    client.set_compatibility(subject, "BACKWARD")
    schema_id = client.register_schema(subject, Schema(V1, "AVRO"))
    assert '"name":"a"' in (client.get_schema(schema_id).schema_str or "").replace(" ", "")
    assert client.get_latest_version(subject).schema_id == schema_id

    assert client.test_compatibility(subject, Schema(V2_OK, "AVRO")) is True
    assert client.test_compatibility(subject, Schema(V2_BAD, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as rejected:
        client.register_schema(subject, Schema(V2_BAD, "AVRO"))
    assert rejected.value.http_status_code == 409
    assert client.register_schema(subject, Schema(V2_OK, "AVRO")) != schema_id
    assert [v for v in client.get_versions(subject)] == [1, 2]
