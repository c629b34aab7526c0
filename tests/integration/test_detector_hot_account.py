"""A hot account does not take the stateful detector down: bounded window state on real Kafka.

Before bounded state, one source account paying 9,000 times within 90 s of event time grew its
changelog document past the broker's maximum message size; the commit failed with
MSG_SIZE_TOO_LARGE and every restart died the same way. Here the input mixes normal scenario
traffic with 50,000 payments from ONE source account within 5 minutes of event time (velocity
and card-testing windows) and 50,000 payments of one amount to ONE target account from distinct
payers within 5 minutes (the fan-in window, after the repartition stage). ``fraudstream detect``
with fraud.yaml must decide every record exactly once without exiting, fire velocity for the hot
payer and fan-in for the hot payee, and no changelog record may exceed a fixed bound (state per
key is bounded by what the aggregates need, not by the events in the window). The per-record
speed of hot against normal traffic is a benchmark figure (``fraudstream bench hot``),
not an assertion here.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics, read_all
from tests.integration.stateful_support import (
    START_MS,
    Tx,
    decisions,
    produce,
    run_until,
    scenario_transactions,
    stateful_topology,
)

pytestmark = pytest.mark.integration

NORMAL = 10_000
HOT = 50_000
PARTITIONS = 3
MAX_CHANGELOG_BYTES = 64 * 1024  # far below the 1,000,000-byte producer limit


def _hot(seed: int) -> list[Tx]:
    """HOT payments from one payer and HOT payments to one payee, each within 5 minutes of event time."""
    out: list[Tx] = []
    for j in range(HOT):
        t = START_MS + j * 300_000 // HOT
        out.append(Tx(0, _record(f"{seed:04x}a{j:027x}", "acct-hot", f"shop-{j % 97}", "12.50", t, "5411")))
        payer = f"payer-{j:06d}"
        out.append(Tx(j % PARTITIONS, _record(f"{seed:04x}b{j:027x}", payer, "mule-hot", "500.00", t, None)))
    return out


def _record(tid: str, src: str, dst: str, amount: str, t: int, mcc: str | None) -> dict[str, object]:
    return {
        "transaction_id": tid, "source_account": src, "target_account": dst, "amount": Decimal(amount),
        "currency": "EUR", "event_time": t, "channel": "card", "country": "NL", "merchant_category": mcc,
    }  # fmt: skip


def test_hot_payer_and_hot_payee_are_decided_exactly_once_with_bounded_changelog_records(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], PARTITIONS)
    registry = SchemaRegistryClient({"url": stack.registry_url})
    txs = sorted(
        scenario_transactions(NORMAL, seed=3, partitions=PARTITIONS) + _hot(3),
        key=lambda tx: int(tx.record["event_time"]),
    )
    produce(stack.bootstrap_servers, registry, t.transactions, txs)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "hot", tmp_path / "hot.log")
    run_until(d, stack.bootstrap_servers, t.outputs, PARTITIONS, len(txs), timeout=420)

    decided, seen = decisions(read_all(stack.bootstrap_servers, t.outputs, "read_committed"), t)
    assert max(seen.values()) == 1 and len(decided) == len(txs)
    by_id = {tx.transaction_id: tx.record for tx in txs}
    hot_payer = [v for k, v in decided.items() if by_id[k]["source_account"] == "acct-hot"]
    hot_payee = [v for k, v in decided.items() if by_id[k]["target_account"] == "mule-hot"]
    assert sum("velocity@" in rules for _, rules, _ in hot_payer) > HOT * 0.99
    assert sum("fan-in@" in rules for _, rules, _ in hot_payee) > HOT * 0.99

    changelogs = [
        name for name in AdminClient({"bootstrap.servers": stack.bootstrap_servers}).list_topics(timeout=30).topics
        if name.startswith(t.application_id) and name.endswith("-changelog")
    ]  # fmt: skip
    assert len(changelogs) == 2, changelogs  # stage 0 (by source account) and stage 1 (by target, amount)
    records = read_all(stack.bootstrap_servers, tuple(changelogs), "read_committed")
    largest = max(len(o.value or b"") for o in records)
    assert largest <= MAX_CHANGELOG_BYTES, f"a changelog record of {largest:,} bytes"
