"""Stateful exactly-once across rebalances: a second instance joins mid-stream, then the first leaves.

Instances A and B (same application id = consumer group, different instance ids, so different
transactional ids) run fraud.yaml's windowed rules while the input is still being produced:

1. A alone processes the first third of the input;
2. B starts while the second third is being produced: the cooperative-sticky assignor moves
   partitions from A to B (A's log shows them revoked, B's shows them assigned, B restores their
   state from the changelogs) and both commit records;
3. A gets SIGTERM while the last third is being produced: it commits its open transaction, leaves
   the group and exits 0; B takes A's partitions over (restoring their state) and finishes.

The decisions (branch, fired rule ids and versions, aggregate evidence) equal those of an
uninterrupted single-instance run over the same input, every transaction is decided exactly once,
and the records both instances committed add up to the input plus the repartition topic exactly.
This is also the proof that several instances of one consumer group share the partitions.

Per-source-key output order is not checked: the fan-in rule routes every record through a
repartition topic (see tests/integration/stateful_support.py).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics, read_all
from tests.integration.stateful_support import (
    OutputCounter,
    Sender,
    Tx,
    decisions,
    describe_difference,
    run_reference,
    scenario_transactions,
    stateful_topology,
    stats_committed,
    stats_records_in,
    wait_outputs,
)

pytestmark = pytest.mark.integration

COUNT = 30_000
PARTITIONS = 3


def _log(d: Detector) -> str:
    return re.sub(r"\s+", " ", d.output())


def _paced(sender: Sender, txs: list[Tx], step: Callable[[], bool], slice_: int = 100) -> None:
    """Produce ``txs`` in slices of ``slice_`` every 50 ms until ``step()`` (called before each slice)
    returns true, then the rest at once: the input keeps flowing while instances join or leave."""
    done = 0
    while done < len(txs) and not step():
        sender.send(txs[done : done + slice_])
        done += slice_
        time.sleep(0.05)
    sender.send(txs[done:])


def test_instances_joining_and_leaving_mid_stream_keep_stateful_decisions_identical(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], PARTITIONS)
    registry = SchemaRegistryClient({"url": stack.registry_url})
    txs = scenario_transactions(COUNT, seed=23, partitions=PARTITIONS)
    third = COUNT // 3
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    sender = Sender(stack.bootstrap_servers, registry, t.transactions)
    counter = OutputCounter(stack.bootstrap_servers, t.outputs, PARTITIONS)
    args = (stack.bootstrap_servers, stack.registry_url, topology, t.application_id)
    a = b = None
    try:
        # 1. A alone.
        sender.send(txs[:third])
        a = Detector(*args, "a", tmp_path / "a.log", "--stats-interval-s", "0.2")
        wait_outputs(counter, third // 2, [a], timeout=120)

        # 2. B joins while records flow; partitions move from A to B and both commit.
        # 3. A leaves (SIGTERM) while records flow; B takes its partitions over.
        b = Detector(*args, "b", tmp_path / "b.log", "--stats-interval-s", "0.2")
        a_, b_ = a, b
        marks: dict[str, int] = {}

        def step() -> bool:
            for d in (a_, b_):
                if "a_stopped" not in marks or d is b_:
                    assert d.proc.poll() is None, d.output()[-3000:]
            count = counter.poll(0.0)
            if "b_joined" not in marks and " assigned " in _log(b_) and stats_committed(b_.output()) > 0:
                marks["b_joined"] = count
                marks["b_assignments"] = _log(b_).count(" assigned ")
            elif "b_joined" in marks and "a_stopped" not in marks and count > marks["b_joined"] + 1000:
                marks["a_stopped"] = count
                a_.signal(signal.SIGTERM)
            return a_.proc.poll() is not None

        _paced(sender, txs[third:], step)
        assert "a_stopped" in marks, f"the input ran out before B joined and A was stopped: {marks}"
        assert marks["a_stopped"] < COUNT
        a_log = _log(a)
        assert " revoked " in a_log.split("SIGTERM")[0], f"no partition moved from A to B:\n{a.output()[-3000:]}"
        assert a.wait() == 0, a.output()[-3000:]
        wait_outputs(counter, COUNT, [b], timeout=180)
        assert _log(b).count(" assigned ") > marks["b_assignments"], (
            f"B did not take A's partitions:\n{b.output()[-3000:]}"
        )
        b.signal(signal.SIGTERM)
        assert b.wait() == 0, b.output()[-3000:]
    finally:
        counter.close()
        for d in (a, b):
            if d is not None:
                d.kill()

    # Both committed work, and together exactly the input plus the repartition topic (each record once).
    a_in, b_in = stats_records_in(a.output()), stats_records_in(b.output())
    assert a_in > 0 and b_in > 0, (a_in, b_in)
    # The repartition topic holds the records fan-in's stage aggregates (the others are decided in
    # the first stage), each committed once.
    rep = read_all(stack.bootstrap_servers, (f"{t.application_id}-by-target_account-amount-repartition",),
                   "read_committed")  # fmt: skip
    assert 0 < len(rep) < COUNT
    assert a_in + b_in == COUNT, f"A committed {a_in} inputs, B {b_in}: not {COUNT}"
    a_staged, b_staged = stats_records_in(a.output(), staged=True), stats_records_in(b.output(), staged=True)
    assert a_staged + b_staged == len(rep), f"A re-read {a_staged}, B {b_staged}: not {len(rep)}"

    committed = read_all(stack.bootstrap_servers, t.outputs, "read_committed")  # asserts the end is reached
    shared, seen = decisions(committed, t)
    duplicates = [i for i, n in seen.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} transactions decided twice, e.g. {duplicates[:3]}"
    assert set(shared) == {tx.transaction_id for tx in txs}
    reference = run_reference(
        stack.bootstrap_servers, stack.registry_url, t, topology, COUNT, PARTITIONS, tmp_path / "reference.log"
    )
    assert shared == reference, describe_difference(reference, shared)
