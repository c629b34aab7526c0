"""Zombie fencing: instance A is paused (SIGSTOP) inside a transaction; A' with the same
transactional.id takes over; A, resumed, is fenced and exits; nothing A wrote after the
pause ever becomes visible. Also when the pause outlasts ``transaction.timeout.ms``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import schema_text
from tests.conftest import Endpoints
from tests.integration.eos_support import (
    Detector,
    Sent,
    Topics,
    committed_offsets,
    create_topics,
    end_offsets,
    read_all,
    stateless_topology,
    transactions,
)
from topology.serde.decoder import AvroEncoder

pytestmark = pytest.mark.integration

CHUNK = 400
FENCED_EXIT = 3


class Feeder:
    """Produces the input a chunk at a time, so the detector always has a transaction open."""

    def __init__(self, stack: Endpoints, t: Topics, total: int) -> None:
        registry = SchemaRegistryClient({"url": stack.registry_url})
        self.encoder = AvroEncoder(registry, schema_text("transaction"), f"{t.transactions}-value")
        self.producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 5})
        self.topic = t.transactions
        self.pending = list(transactions(total, seed=11))
        self.sent: list[Sent] = []

    def feed(self, n: int = CHUNK) -> None:
        chunk, self.pending = self.pending[:n], self.pending[n:]
        for tx in chunk:
            key = tx["source_account"].encode()
            self.producer.produce(self.topic, self.encoder.encode(tx), key)
            self.sent.append(Sent(tx["transaction_id"], key, tx["amount"]))
        assert self.producer.flush(30) == 0

    def feed_all(self) -> None:
        while self.pending:
            self.feed(5000)


def _open_ranges(stack: Endpoints, t: Topics) -> dict[tuple[str, int], tuple[int, int]]:
    """Per output partition, offsets [last stable offset, high watermark) of open transactions."""
    lso = end_offsets(stack.bootstrap_servers, t.outputs, "read_committed")
    hw = end_offsets(stack.bootstrap_servers, t.outputs, "read_uncommitted")
    return {tp: (lso[tp], hw[tp]) for tp in hw if hw[tp] > lso[tp]}


def _pause_inside_transaction(stack: Endpoints, t: Topics, a: Detector, feeder: Feeder) -> dict[
    tuple[str, int], tuple[int, int]
]:
    """Feed A until it has committed once, then SIGSTOP it while it has records in an open transaction."""
    deadline = time.monotonic() + 120
    while committed_offsets(stack.bootstrap_servers, t.application_id, t.transactions) == 0:
        assert time.monotonic() < deadline and a.proc.poll() is None, a.output()[-3000:]
        feeder.feed()
        time.sleep(0.2)
    for _ in range(20):
        feeder.feed()
        time.sleep(0.3)
        a.signal(signal.SIGSTOP)
        open_ranges = _open_ranges(stack, t)
        if open_ranges:
            return open_ranges
        a.signal(signal.SIGCONT)  # between two transactions: try again
    raise AssertionError("never caught A inside a transaction")


@pytest.mark.parametrize("outlast_timeout", [False, True], ids=["short-pause", "pause-outlasts-txn-timeout"])
def test_paused_instance_is_fenced_and_its_writes_stay_invisible(
    stack: Endpoints, unique: str, tmp_path: Path, outlast_timeout: bool
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], 3)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    feeder = Feeder(stack, t, 30_000)
    log = tmp_path / "a.log"
    # A commits every 2 s, so a pause almost always falls inside a transaction with records written.
    extra = ["--commit-interval-ms", "2000"]
    if outlast_timeout:
        extra += ["--transaction-timeout-ms", "5000"]
    a = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "zombie", log, *extra)
    try:
        open_at_pause = _pause_inside_transaction(stack, t, a, feeder)
        assert sum(hi - lo for lo, hi in open_at_pause.values()) > 0
        if outlast_timeout:
            # The broker aborts A's transaction once it outlasts transaction.timeout.ms (checked every
            # ~10 s): the last stable offset catches up with the high watermark while A is still stopped.
            deadline = time.monotonic() + 90
            while _open_ranges(stack, t):
                assert time.monotonic() < deadline, "the broker never aborted the timed-out transaction"
                time.sleep(1)
        feeder.feed_all()
        a2 = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "zombie",
                      tmp_path / "a2.log")
        total = len(feeder.sent)
        deadline = time.monotonic() + 180
        while committed_offsets(stack.bootstrap_servers, t.application_id, t.transactions) < total:
            assert time.monotonic() < deadline and a2.proc.poll() is None, a2.output()[-3000:]
            time.sleep(0.5)
        a.signal(signal.SIGCONT)
        code = a.wait(120)
        assert code == FENCED_EXIT, f"A exited with {code}:\n{a.output()[-3000:]}"
        assert "fenced" in a.output()
        a2.signal(signal.SIGTERM)
        assert a2.wait(60) == 0, a2.output()[-3000:]
    finally:
        for d in (a,):
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
                d.kill()

    committed = read_all(stack.bootstrap_servers, t.outputs, "read_committed")
    # Nothing A had in its open transaction at the pause (nor wrote after it) is visible.
    for o in committed:
        span = open_at_pause.get((o.topic, o.partition))
        assert span is None or not span[0] <= o.offset < span[1], f"zombie write visible: {o}"
    seen = Counter(o.transaction_id() for o in committed if o.topic != t.dlq)
    assert seen == Counter(s.transaction_id for s in feeder.sent)  # each exactly once
    uncommitted = read_all(stack.bootstrap_servers, t.outputs, "read_uncommitted")
    assert len(uncommitted) > len(committed)
