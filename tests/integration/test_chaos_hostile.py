"""Hostile input interleaved with good traffic, on real Kafka: every record gets a bounded outcome.

One detector runs fraud.yaml (windowed rules, a repartition stage, its own graces). Into its input,
between good transactions, go:

- a value the broker accepted that is too large to forward with the decision's headers (~999,900 bytes);
- a record the legit topic refuses at commit (the topic allows 20,000 bytes; this one is 30,000);
- an event dated in 2031 (years ahead of the wall clock);
- a record with a schema id the registry does not know yet, registered a moment later, then another
  record with that id;

and into its rules topic, while it runs: a definition with a control character, one nested deeper
than Python's recursion allows, and bytes that are not Avro.

The detector never exits and never loops: each good transaction is decided exactly once
(read_committed), each hostile record is dead-lettered once with its reason (the over-large one
without its value), the bad rules are refused and the rules in force stay, the record written after its
schema was registered is decided, and SIGTERM stops the detector with exit 0.
"""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema

from schemas import schema_text
from services.kafka import registry_client
from services.rules.feed import publish
from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, connection, create_topics, read_all, transactions
from tests.integration.stateful_support import OutputCounter, decisions, stateful_topology, wait_outputs
from topology.serde.decoder import AvroEncoder, wire_header

pytestmark = pytest.mark.integration

PARTITIONS = 3
GOOD = 600  # good transactions, in three slices around the hostile records
UNKNOWN_TTL_S = 10.0  # AvroDecoder's default: an unknown schema id is asked again after this


def _tx(tx_id: str, target: str = "shop", event_time: int | None = None) -> dict[str, object]:
    return {
        "transaction_id": tx_id, "source_account": f"acct-{tx_id}", "target_account": target,
        "amount": Decimal("10.00"), "currency": "EUR",
        "event_time": int(time.time() * 1000) if event_time is None else event_time,
        "channel": "card", "country": "NL", "merchant_category": None,
    }  # fmt: skip


def _late_schema() -> str:
    schema = json.loads(schema_text("transaction"))
    schema["fields"].append({"name": "late_note", "type": ["null", "string"], "default": None})
    return json.dumps(schema)


def _wait_dead_letter(bootstrap: str, t: Topics, reason: bytes, d: Detector, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(o.headers.get("error.reason") == reason for o in read_all(bootstrap, (t.dlq,), "read_committed")):
        assert d.alive(), d.output()[-3000:]
        assert time.monotonic() < deadline, f"no {reason!r} dead letter in {timeout_s:.0f} s:\n{d.output()[-3000:]}"
        time.sleep(0.5)


def test_hostile_records_interleaved_with_good_ones_each_get_a_bounded_outcome(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    bootstrap = stack.bootstrap_servers
    kafka = connection(bootstrap, stack.registry_url)
    registry = registry_client(kafka)
    t = Topics.make(unique)
    rules_topic = f"rules-{unique}"
    create_topics(bootstrap, [t.transactions, t.fraud, t.dlq, rules_topic], PARTITIONS)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t.legit, PARTITIONS, 1, config={"max.message.bytes": "20000"})]).values():
        f.result(timeout=30)
    encoder = AvroEncoder(registry, schema_text("transaction"), f"{t.transactions}-value")
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1_048_576, "enable.idempotence": True})

    def send(values: list[bytes]) -> None:
        for i, v in enumerate(values):
            producer.produce(t.transactions, v, f"k{i % 7}".encode())
        assert producer.flush(30) == 0

    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t, fan_in_grace=None), encoding="utf-8")
    d = Detector(bootstrap, stack.registry_url, topology, t.application_id, "one", tmp_path / "d.log",
                 env={"FRAUDSTREAM_DETECTOR_RULES_TOPIC": rules_topic})  # fmt: skip
    good = [dict(tx, event_time=int(time.time() * 1000) - 600_000 + i) for i, tx in enumerate(transactions(GOOD, 3))]
    slices = [good[:200], good[200:400], good[400:]]
    counter = OutputCounter(bootstrap, t.outputs, PARTITIONS)
    try:
        send([encoder.encode(tx) for tx in slices[0]])
        wait_outputs(counter, len(slices[0]), [d], timeout=60)  # running: the next records meet it live
        # Bad rules while it runs (their schema is registered here, before the probe below).
        for rule_id, definition in (("ctl", "when: amount >= 1\x07"),
                                    ("deep", "when: " + "(" * 3000 + "amount >= 1" + ")" * 3000)):
            publish(kafka, rules_topic, rule_id, {"id": rule_id, "version": 1, "definition": definition})
        raw = Producer({"bootstrap.servers": bootstrap})
        raw.produce(rules_topic, key=b"junk", value=b"\x00not a rule")
        assert raw.flush(30) == 0
        too_large = encoder.encode(_tx("too-large", target="x" * 999_850))
        refused = encoder.encode(_tx("refused", target="y" * 30_000))
        future = encoder.encode(_tx("future", event_time=1_924_992_000_000))  # 2031-01-01
        assert 999_800 < len(too_large) < 1_000_000 and 30_000 < len(refused) < 31_000
        # The id the registry gives the next new schema; a record with it is sent before it exists.
        probe = registry.register_schema(f"probe-{unique}-value", Schema(_late_schema().replace("late_note", "p"),
                                                                        "AVRO"))  # fmt: skip
        late_id = probe + 1
        early = wire_header(late_id) + encoder.encode(_tx("early-late-schema"))[5:]  # its id is not known yet
        send([too_large, encoder.encode(slices[1][0]), refused, future, early])
        _wait_dead_letter(bootstrap, t, b"unknown-schema", d)  # before the schema exists
        late = AvroEncoder(registry, _late_schema(), f"{t.transactions}-value")
        assert late.schema_id == late_id, f"the registry gave id {late.schema_id}, not {late_id}: cannot test this"
        send([encoder.encode(tx) for tx in slices[1][1:]])
        d.wait_for_log("rule junk rejected", timeout_s=60)
        time.sleep(UNKNOWN_TTL_S)  # the unknown id is asked again after its TTL, not remembered for ever
        after = {**_tx("after-late-schema"), "late_note": "registered a moment later"}
        send([late.encode(after), *(encoder.encode(tx) for tx in slices[2])])
        wait_outputs(counter, GOOD + 1 + 4, [d], timeout=120)  # goods + the later late-schema one + 4 dead
    finally:
        counter.close()
        d.signal(signal.SIGTERM)
        rc = d.wait()
    log = d.output()
    assert rc == 0, log[-3000:]

    outputs = read_all(bootstrap, t.outputs, "read_committed")
    dead = [o for o in outputs if o.topic == t.dlq]
    reasons = sorted(o.headers["error.reason"].decode() for o in dead)
    assert reasons == ["event-time-skew", "retries-exhausted", "retries-exhausted", "unknown-schema"], reasons
    by_reason = {(o.headers["error.reason"], o.value is None): o for o in dead}
    big = by_reason[(b"retries-exhausted", True)]  # too large: dead-lettered without its value
    assert big.headers["error.omitted"] == b"value" and big.headers["error.value.bytes"] == str(len(too_large)).encode()
    assert b"MSG_SIZE_TOO_LARGE" in big.headers["error.message"]
    whole = by_reason[(b"retries-exhausted", False)]  # refused by the legit topic at commit: whole
    assert whole.value == refused and b"MSG_SIZE_TOO_LARGE" in whole.headers["error.message"]
    assert by_reason[(b"event-time-skew", False)].value == future
    assert by_reason[(b"unknown-schema", False)].value == early
    decided, seen = decisions([o for o in outputs if o.topic != t.dlq], t)
    assert max(seen.values()) == 1, [i for i, n in seen.items() if n > 1][:5]
    assert set(decided) == {str(tx["transaction_id"]) for tx in good} | {"after-late-schema"}
    for refusal in ("rule ctl@1 rejected", "rule deep@1 rejected", "rule junk rejected", "commit refused"):
        assert refusal in log, refusal
    assert "control character U+0007" in log and "nested too deeply" in log
