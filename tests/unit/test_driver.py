"""The fraud topology (services/detector/fraud.yaml) in the in-memory driver: each default rule, state, restore."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from schemas import schema_text
from services.config import GeneratorSettings
from services.detector import FRAUD_TOPOLOGY, load_topology, loads_topology
from services.detector.alerts import FraudAlerts
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from topology.plan.dsl import sliding
from topology.processor import TopologyProcessor
from topology.records import H_AGGS, H_KEY, H_ORIGIN
from topology.serde.decoder import EncodeError
from topology.serde.projection import ProjectionDecoder
from topology.testing.driver import TopologyTestDriver

from .topology_support import T0, TOPIC, TX, TX_KEY, Serde, driver, headers, serde, stream, tx

FRAUD, LEGIT, DLQ = "streaming.transactions.fraud", "streaming.transactions.legit", "streaming.transactions.dlq"


@pytest.fixture(scope="module")
def s() -> Serde:
    return serde("driver")


def decisions(d: TopologyTestDriver[TopologyProcessor], s: Serde) -> dict[str, str]:
    """transaction id -> fired rules ('' = legit), over fraud and legit outputs."""
    out: dict[str, str] = {}
    for topic in (FRAUD, LEGIT):
        for w in d.records(topic):
            tid = s.decoder.decode(w.value)["transaction_id"]
            assert tid not in out, f"{tid} routed twice"
            out[tid] = headers(w)["fraudstream.rules"].decode()
    return out


def fired(d: TopologyTestDriver[TopologyProcessor], s: Serde) -> dict[str, str]:
    return {k: v for k, v in decisions(d, s).items() if v}


def test_large_amount(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    d.pipe(tx(1, "899.99", channel="online"))
    d.pipe(tx(2, "900.00", source="acc-2", channel="online"))
    d.pipe(tx(3, "5000.00", source="acc-3", channel="transfer"))  # large transfers between people are common
    assert decisions(d, s) == {"tx-1": "", "tx-2": "large-amount@2", "tx-3": ""}


SHOP = {"merchant_category": "5411", "channel": "card"}


def test_velocity(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i in range(5):
        d.pipe(tx(i, "300.00", target=f"shop-{i}", minutes=i * 0.5, **SHOP))  # 5 payments, 1,500 in 2 minutes
    d.pipe(tx(99, "20.00", minutes=30))  # quiet again
    for i in range(5):
        d.pipe(tx(100 + i, "200.00", source="acc-2", minutes=40 + i * 0.5, **SHOP))  # 5 in 2 minutes, only 1,000
    for i in range(6):
        d.pipe(tx(200 + i, "400.00", source="acc-3", minutes=60 + i * 0.8, **SHOP))  # 6 in 4 min: never 5 in 3
    for i in range(10):
        d.pipe(tx(300 + i, "3.00", source="acc-4", minutes=80 + i * 0.2))  # ten small ones in 2 minutes
    assert fired(d, s) == {"tx-4": "velocity@3", "tx-309": "velocity@3"}


def test_card_testing(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i, (amount, minute) in enumerate([("0.99", 0), ("45.00", 1), ("2.00", 3), ("1.50", 9), ("2.01", 9.5)]):
        d.pipe(tx(i, amount, minutes=minute))
    assert fired(d, s) == {"tx-2": "card-testing@3"}  # the 2nd tiny one within 5 minutes


def test_fan_in_goes_through_the_repartition_topic(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i in range(4):
        d.pipe(tx(i, "500.00", source=f"payer-{i}", target="mule", minutes=i * 300))  # 4 sources in 15 h
    d.pipe(tx(50, "499.00", source="payer-50", target="mule", minutes=1000))  # different amount
    d.pipe(tx(51, "500.00", source="payer-0", target="mule", minutes=1001))  # a source already counted
    for i in range(4):  # the same amount to one shop (a merchant) is ordinary
        d.pipe(tx(60 + i, "500.00", source=f"buyer-{i}", target="shop-9", merchant_category="5732", minutes=i))
    for i in range(4):  # small amounts (under 100) do not count
        d.pipe(tx(70 + i, "25.00", source=f"friend-{i}", target="host", minutes=i))
    for i in range(3):  # 3 sources but over more than a day
        d.pipe(tx(80 + i, "800.00", source=f"p-{i}", target="saver", minutes=i * 800))
    assert fired(d, s) == {"tx-2": "fan-in@2", "tx-3": "fan-in@2", "tx-51": "fan-in@2"}
    flagged = d.records(FRAUD)[0]
    h = headers(flagged)
    assert flagged.key == b"payer-2"  # the original key, not the repartition key
    assert not {H_KEY, H_AGGS, H_ORIGIN} & set(h)
    assert b'"aggregate":"fan-in","function":"distinct_count","value":"3"' in h["fraudstream.evidence"]
    rep = d.records("fraud-detector-by-target_account-amount-repartition")
    # Only records fan-in's filter passes cross the repartition topic (no merchant, 100 or more): the
    # 4 shop payments and the 4 small amounts are decided in the first stage.
    assert len(rep) == 9 and rep[0].key == b'["mule","500.00"]'
    assert {s.decoder.decode(w.value)["transaction_id"] for w in rep} == {
        "tx-0", "tx-1", "tx-2", "tx-3", "tx-50", "tx-51", "tx-80", "tx-81", "tx-82",
    }  # fmt: skip
    changelog = d.records("fraud-detector-by-target_account-amount-changelog")
    assert {w.partition for w in changelog if w.key == rep[0].key} == {rep[0].partition}


def test_fan_out(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i in range(6):  # transfers of 100 or more to 5 distinct people in 15 minutes, then a repeat
        d.pipe(tx(i, "150.00", target=f"friend-{i % 5}", minutes=i * 2))
    for i in range(8):  # shops (merchant category) or small amounts do not count
        mcc = "5411" if i % 2 else None
        d.pipe(
            tx(10 + i, "150.00" if mcc else "99.99", source="acc-2", target=f"t-{i}", minutes=i, merchant_category=mcc)
        )
    assert fired(d, s) == {"tx-4": "fan-out@3", "tx-5": "fan-out@3"}


def test_structuring_under_either_limit(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i, amount in enumerate(["850.00", "20.00", "880.00", "899.00", "710.00"]):
        d.pipe(tx(i, amount, minutes=i * 120))  # 3 under 900 adding up to more than 2,000
    for i, amount in enumerate(["9500.00", "120.00", "9990.00"]):
        d.pipe(tx(10 + i, amount, source="acc-2", minutes=i * 300))  # 2 under the 10,000 reporting limit
    assert fired(d, s) == {"tx-3": "structuring@3", "tx-4": "structuring@3", "tx-12": "structuring@3"}


def test_legit_traffic_is_not_flagged(s: Serde) -> None:
    rnd = random.Random(7)
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=3)
    for i in range(400):
        acc = f"acc-{rnd.randrange(60)}"
        d.pipe(tx(i, f"{rnd.uniform(5, 300):.2f}", source=acc, target=f"shop-{rnd.randrange(40)}", minutes=i * 2))
    assert fired(d, s) == {}
    assert len(decisions(d, s)) == 400


def test_and_or_and_aggregates_update_even_when_not_needed_for_the_decision(s: Serde) -> None:
    w = sliding("1h")
    t = (
        stream(TOPIC, dlq="dlq", name="app")
        .split()
        .branch(TX.rule("big", "amount >= 900"), to="fraud", name="big")
        .branch(
            [
                TX.rule("both", TX.all_of("currency == 'USD'", TX.count(by="source_account", window=w) >= 3)),
                TX.rule("either", TX.any_of(TX.sum("amount", by="source_account", window=w) >= 1500,
                                            "country == 'XX'")),
            ],
            to="fraud2",
            name="agg",
        )
        .default_branch(to="legit")
    )
    d = driver(t, s)
    d.pipe(tx(1, "950.00", currency="USD"))  # taken by the first branch, but counted and summed
    d.pipe(tx(2, "10.00", currency="EUR", minutes=1))
    d.pipe(tx(3, "10.00", currency="USD", minutes=2, country="XX"))
    d.pipe(tx(4, "600.00", currency="EUR", minutes=3))
    rules = [headers(x)["fraudstream.rules"] for x in d.records("fraud2")]
    assert rules == [b"both@1,either@1", b"either@1"]


def _traffic(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = rnd.random()
        acc = f"acc-{rnd.randrange(25)}"
        if kind < 0.1:
            out.append(tx(i, "0.50", source=acc, minutes=i * 0.5))
        elif kind < 0.25:
            out.append(tx(i, "500.00", source=acc, target=f"mule-{rnd.randrange(3)}", minutes=i * 0.5))
        elif kind < 0.3:
            out.append(tx(i, "800.00", source=acc, minutes=i * 0.5))
        else:
            out.append(tx(i, f"{rnd.uniform(1, 950):.2f}", source=acc, target=f"t-{rnd.randrange(30)}",
                          minutes=i * 0.5 - rnd.uniform(0, 0.5)))  # fmt: skip
    return out


def test_restart_restores_state_from_the_changelog_and_decides_the_same(s: Serde) -> None:
    topology = load_topology(FRAUD_TOPOLOGY)
    traffic = _traffic(600, seed=11)
    straight = driver(topology, s, partitions=3)
    straight.pipe_all(traffic)

    crashed = driver(topology, s, partitions=3)
    for cut in (150, 320, 470):  # "crash" three times: a fresh processor restores from the changelogs
        start = len(crashed.records(TOPIC))
        crashed.pipe_all(traffic[start:cut])
        replayed = crashed.restart(TopologyProcessor(topology, s.decoder.decode, version="v-test"))
        assert replayed > 0
    crashed.pipe_all(traffic[470:])

    expected = decisions(straight, s)
    assert len(expected) == 600 and sum(1 for v in expected.values() if v) > 20
    assert decisions(crashed, s) == expected
    for name, store in straight.processor.stores.items():
        for p in range(3):
            assert crashed.processor.stores[name].snapshot(p) == store.snapshot(p), name


def test_changelog_records_go_to_the_input_partition(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=4)
    d.pipe_all(_traffic(80, seed=3))
    src = {(w.key): w.partition for w in d.records(TOPIC)}
    changelog = d.records("fraud-detector-by-source_account-changelog")
    assert changelog
    for w in changelog:
        assert w.partition == src[w.key]  # stage 0's stores are keyed by the input key
    processor = d.processor
    assert processor.changelog_topics == (
        "fraud-detector-by-source_account-changelog",
        "fraud-detector-by-target_account-amount-changelog",
    )
    assert processor.changelog_partitions(TOPIC, 2) == (("fraud-detector-by-source_account-changelog", 2),)


def test_revoked_partitions_drop_state_and_restore_brings_it_back(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s, partitions=2)
    d.pipe_all(_traffic(120, seed=5))
    p = d.processor
    velocity = p.stores["velocity-count"]
    before = velocity.snapshot(1)
    assert before
    p.revoked([(TOPIC, 1)])
    assert velocity.snapshot(1) == {} and velocity.snapshot(0)
    p.assigned([(TOPIC, 1)])
    for ctopic, cp in p.changelog_partitions(TOPIC, 1):
        for w in d.records(ctopic):
            if w.partition == cp:
                p.restore(w.as_raw())
    assert velocity.snapshot(1) == before


def test_bad_record_in_a_stateful_topology_changes_no_state(s: Serde) -> None:
    d = driver(load_topology(FRAUD_TOPOLOGY), s)
    d.pipe(tx(1, "1.00"))
    snap = d.processor.stores["card-testing"].snapshot(0)
    out = d.pipe(b"\x00\x00\x00\x00\x01garbage")
    assert [o.topic for o in out] == [DLQ]
    assert d.processor.stores["card-testing"].snapshot(0) == snap


ALERTS = "streaming.transactions.alerts"


def _alerting_driver(s: Serde) -> TopologyTestDriver[TopologyProcessor]:
    """fraud.yaml as the detector runs it: projection decoder, alerts encoded with schemas/fraud_alert.avsc."""
    topology = load_topology(FRAUD_TOPOLOGY)
    assert topology.alerts == ALERTS
    alerts = FraudAlerts.for_topic(s.registry, ALERTS)
    decoder = ProjectionDecoder.for_topology(s.registry, topology, schema_text("transaction"), alerts)
    processor = TopologyProcessor(topology, decoder.decode, version="v-test", alerts=alerts)
    assert ALERTS in processor.sink_topics
    return TopologyTestDriver(processor, partitions=3, encoder=s.encoder.encode, decoder=s.decoder.decode,
                              key_fields=TX_KEY)


def _alerts(d: TopologyTestDriver[TopologyProcessor], s: Serde) -> dict[str, dict[str, Any]]:
    """transaction id -> alert, decoded with fastavro from the Confluent wire format."""
    schema = fastavro.parse_schema(json.loads(schema_text("fraud_alert")))
    out: dict[str, dict[str, Any]] = {}
    for w in d.records(ALERTS):
        assert w.value is not None and w.value[0] == 0
        alert = fastavro.schemaless_reader(io.BytesIO(w.value[5:]), schema, None)
        assert isinstance(alert, dict)
        assert w.key == alert["transaction_id"].encode()
        assert headers(w)["fraudstream.detector.version"] == b"v-test"
        assert headers(w)["fraudstream.rules"].decode() == fired(d, s)[alert["transaction_id"]]
        out[alert["transaction_id"]] = alert
    return out


def test_an_alert_per_fraud_decision_with_rules_evidence_and_score(s: Serde) -> None:
    d = _alerting_driver(s)
    for i in range(4):  # fan-in: decided in the repartition stage, from carried fields
        d.pipe(tx(20 + i, "500.00", source=f"payer-{i}", target="mule", minutes=i * 60))
    for i in range(6):  # 6 large online payments in 2 minutes: large-amount each, velocity from the 5th
        d.pipe(tx(i, "950.00", target=f"shop-{i}", minutes=1000 + i * 0.3, channel="online", merchant_category="5411"))
    d.pipe(tx(99, "12.00", source="acc-9"))  # legit
    alerts = _alerts(d, s)
    assert set(alerts) == set(fired(d, s)) == {*(f"tx-{i}" for i in range(6)), "tx-22", "tx-23"}
    assert len(d.records(ALERTS)) == len(d.records(FRAUD)) == 8

    a0 = alerts["tx-0"]
    assert a0["rules"] == [{"id": "large-amount", "version": 2}] and a0["evidence"] == [] and a0["score"] == 1.0
    assert (a0["source_account"], a0["target_account"], a0["amount"]) == ("acc-1", "shop-0", Decimal("950.00"))
    assert a0["event_time"] == T0 + timedelta(minutes=1000) and a0["detector_version"] == "v-test"

    a4 = alerts["tx-4"]
    assert a4["rules"] == [{"id": "large-amount", "version": 2}, {"id": "velocity", "version": 3}]
    assert a4["score"] == 2.0
    velocity = {"rule_id": "velocity", "op": ">="}
    assert a4["evidence"] == [  # the related count names the 4 earlier payments of the burst
        {**velocity, "aggregate": "velocity-count", "function": "count", "value": "5", "threshold": "5",
         "transactions": ["tx-0", "tx-1", "tx-2", "tx-3"]},
        {**velocity, "aggregate": "velocity-sum", "function": "sum", "value": "4750.00", "threshold": "1200",
         "transactions": []},
        {**velocity, "aggregate": "velocity-many", "function": "count", "value": "5", "threshold": "10",
         "transactions": []},  # related, but it does not hold: names nothing
    ]  # fmt: skip
    assert alerts["tx-5"]["evidence"][0]["transactions"] == ["tx-0", "tx-1", "tx-2", "tx-3", "tx-4"]

    a22 = alerts["tx-22"]
    assert (a22["source_account"], a22["target_account"], a22["amount"]) == ("payer-2", "mule", Decimal("500.00"))
    assert a22["event_time"] == T0 + timedelta(minutes=120)
    assert a22["rules"] == [{"id": "fan-in", "version": 2}] and a22["score"] == 1.0
    assert a22["evidence"] == [
        {"rule_id": "fan-in", "aggregate": "fan-in", "function": "distinct_count", "value": "3", "op": ">=",
         "threshold": "3", "transactions": ["tx-20", "tx-21"]}  # named across the repartition stage
    ]  # fmt: skip
    assert alerts["tx-23"]["evidence"][0]["transactions"] == ["tx-20", "tx-21", "tx-22"]
    # the same evidence as the fraud record's header, which also has how many earlier transactions the window holds
    fraud = {s.decoder.decode(w.value)["transaction_id"]: headers(w) for w in d.records(FRAUD)}
    assert json.loads(fraud["tx-22"]["fraudstream.evidence"]) == {
        "fan-in@2": [
            {**{k: v for k, v in e.items() if k != "rule_id"}, "transactions_total": 2} for e in a22["evidence"]
        ]
    }


def test_no_alerts_without_an_encoder_or_an_alerts_topic(s: Serde) -> None:
    topology = load_topology(FRAUD_TOPOLOGY)
    d = driver(topology, s)  # no encoder: the fraud topic only
    d.pipe(tx(1, "950.00", channel="online"))
    assert len(d.records(FRAUD)) == 1 and d.records(ALERTS) == []
    no_alerts = dataclasses.replace(topology, alerts=None)
    p = TopologyProcessor(no_alerts, s.decoder.decode, version="v", alerts=FraudAlerts.for_topic(s.registry, ALERTS))
    assert ALERTS not in p.sink_topics
    d2 = TopologyTestDriver(p, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY)
    d2.pipe(tx(1, "950.00", channel="online"))
    assert len(d2.records(FRAUD)) == 1 and d2.records(ALERTS) == []


def test_a_decision_whose_alert_cannot_be_encoded_is_dead_lettered(s: Serde) -> None:
    def refuse(alert: Any) -> bytes:
        raise EncodeError(f"amount {alert['amount']} does not fit", "amount")

    p = TopologyProcessor(load_topology(FRAUD_TOPOLOGY), s.decoder.decode, version="v", alerts=FraudAlerts(refuse))
    d = TopologyTestDriver(p, encoder=s.encoder.encode, decoder=s.decoder.decode, key_fields=TX_KEY)
    d.pipe(tx(1, "950.00", channel="online"))
    d.pipe(tx(2, "12.00"))  # legit: no alert needed
    assert d.records(FRAUD) == [] and d.records(ALERTS) == [] and len(d.records(LEGIT)) == 1
    (dead,) = d.records(DLQ)
    assert headers(dead)["error.reason"] == b"alert"
    assert headers(dead)["error.message"] == b"amount 950.00 does not fit"


@pytest.mark.python_sources  # patches ignored_later
def test_records_no_later_store_aggregates_are_decided_in_the_first_stage_as_the_last_would(
    s: Serde, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = load_topology(FRAUD_TOPOLOGY)
    traffic = _traffic(600, seed=5)
    shortcut = driver(topology, s, partitions=3)
    shortcut.pipe_all(traffic)
    monkeypatch.setattr("topology.processor.processor.ignored_later", lambda stage, value: False)
    every = driver(topology, s, partitions=3)
    every.pipe_all(traffic)
    rep = "fraud-detector-by-target_account-amount-repartition"
    assert 0 < len(shortcut.records(rep)) < len(every.records(rep)) == 600
    assert decisions(shortcut, s) == decisions(every, s)
    for topic in (FRAUD, "streaming.transactions.legit", "streaming.transactions.alerts"):
        by_key = {(w.key, w.value): headers(w) for w in every.records(topic)}
        assert {(w.key, w.value): headers(w) for w in shortcut.records(topic)} == by_key, topic


def test_aggregates_keeping_the_same_state_share_one_store_and_decide_as_separate_stores(s: Serde) -> None:
    """fraud.yaml's velocity-count and velocity-many (one count, thresholds 5 and 10) share a store; the same
    topology with velocity-many made distinct (an always-true filter) gives the same decisions and alerts."""
    text = FRAUD_TOPOLOGY.read_text()
    shared = "threshold: 10\n            related: true\n"
    assert text.count(shared) == 1
    apart = text.replace(shared, shared + "            filter: amount > -1000000000\n")
    generated = TransactionStream(stream_config(GeneratorSettings.with_overrides(seed=11, rate=0)))
    txs = [g.record for g in generated.take(12_000)]

    def run(topology_text: str) -> tuple[TopologyProcessor, dict[str, Any], dict[str, Any]]:
        topology = loads_topology(topology_text)
        alerts = FraudAlerts.for_topic(s.registry, ALERTS)
        decoder = ProjectionDecoder.for_topology(s.registry, topology, schema_text("transaction"), alerts)
        processor = TopologyProcessor(topology, decoder.decode, version="v-test", alerts=alerts)
        d = TopologyTestDriver(processor, partitions=3, encoder=s.encoder.encode, decoder=s.decoder.decode,
                               key_fields=TX_KEY, commit_every=200)  # fmt: skip
        d.pipe_all(txs)
        d.commit()
        routed = {s.decoder.decode(w.value)["transaction_id"]: (t, headers(w).get("fraudstream.rules"))
                  for t in topology.sinks for w in d.records(t)}  # fmt: skip
        schema = fastavro.parse_schema(json.loads(schema_text("fraud_alert")))
        docs = [fastavro.schemaless_reader(io.BytesIO((w.value or b"")[5:]), schema, None) for w in d.records(ALERTS)]
        return processor, routed, {a["transaction_id"]: a for a in docs if isinstance(a, dict)}

    one, routed, alerts = run(text)
    two, routed_apart, alerts_apart = run(apart)
    assert one.stores["velocity-many"] is one.stores["velocity-count"]
    assert two.stores["velocity-many"] is not two.stores["velocity-count"]
    assert len(routed) == len(txs) and routed == routed_apart
    assert len(alerts) == sum(t == FRAUD for t, _ in routed.values()) and alerts == alerts_apart
    assert sum(b"velocity" in (r or b"") for _, r in routed.values()) > 10  # the shared store decided some
