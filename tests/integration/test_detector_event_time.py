"""One event dated years ahead is dead-lettered before it moves stream time, on real Kafka.

Without the guard, a record of partition P dated in 2031 raises P's stream time, and every later
record there is late: its windowed rules go silent. ``fraudstream detect`` with fraud.yaml (its own
windows and graces) must dead-letter that record (``error.reason: event-time-skew``) and decide the
velocity burst that follows it in the same partition as fraud.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics, read_all
from tests.integration.stateful_support import START_MS, Tx, decisions, produce, run_until, stateful_topology

pytestmark = pytest.mark.integration

YEAR_2031_MS = 1_924_992_000_000


def _tx(n: int, t: int, amount: str = "25.00") -> Tx:
    return Tx(0, {
        "transaction_id": f"burst-{n:04d}", "source_account": "acct-burst", "target_account": f"shop-{n}",
        "amount": Decimal(amount), "currency": "EUR", "event_time": t, "channel": "card", "country": "NL",
        "merchant_category": "5411",
    })  # fmt: skip


def test_an_event_dated_years_ahead_is_dead_lettered_and_the_windows_stay_alive(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], 1)
    future = _tx(0, YEAR_2031_MS)
    burst = [_tx(n, START_MS + n * 1000) for n in range(1, 16)]  # 15 payments in 15 s: velocity fires
    txs = [_tx(-1, START_MS - 60_000), future, *burst]
    produce(stack.bootstrap_servers, SchemaRegistryClient({"url": stack.registry_url}), t.transactions, txs)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "one", tmp_path / "d.log")
    run_until(d, stack.bootstrap_servers, t.outputs, 1, len(txs), timeout=120)

    outputs = read_all(stack.bootstrap_servers, t.outputs, "read_committed")
    (dead,) = [o for o in outputs if o.topic == t.dlq]
    assert dead.headers["error.reason"] == b"event-time-skew"
    assert b"2031-01-01T00:00:00.000Z" in dead.headers["error.message"]
    assert b"ahead of the wall clock" in dead.headers["error.message"]
    decided, seen = decisions([o for o in outputs if o.topic != t.dlq], t)
    assert max(seen.values()) == 1 and set(decided) == {tx.transaction_id for tx in txs if tx is not future}
    fired = [tid for tid, (branch, rules, _) in decided.items() if "velocity@" in rules]
    assert len(fired) >= 5, f"the burst after the future event did not fire velocity: {sorted(decided.items())}"
