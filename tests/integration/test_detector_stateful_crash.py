"""Stateful exactly-once under crashes: fraud.yaml's windowed rules decide the same after SIGKILLs.

One input topic (3 partitions, scenario traffic that fires every rule of fraud.yaml: velocity,
card testing, fan-in, fan-out, structuring, large amount) is read twice, by two application ids:

- a reference run: one detector, never interrupted;
- a crash run: the detector is SIGKILLed at random moments at least 5 times and restarted; each
  restart restores its state stores from the changelog topics (read_committed) before it resumes.

Both runs must give every transaction the same decision: branch, fired rule ids and versions
(``fraudstream.rules``), and the aggregate values that fired (``fraudstream.evidence``), and the
crash run's read_committed outputs hold each transaction exactly once. Any state lost, doubled
or restored from an aborted transaction changes some count, sum or distinct count and fails this.

Not checked here: per-source-key output order. fraud.yaml's fan-in rule groups by target account,
so every record passes a repartition topic before it is decided, and records of one source account
leave that stage from different repartition partitions (the stateless crash test checks order).
See tests/integration/stateful_support.py for why the fan-in decisions are run-independent.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, read_all
from tests.integration.stateful_support import (
    OutputCounter,
    decisions,
    describe_difference,
    rule_counts,
    stateful_input,
    stats_committed,
    stats_restored,
    wait_outputs,
)

pytestmark = pytest.mark.integration

COUNT = 40_000
PARTITIONS = 3
KILLS = 6
RULES = ("large-amount", "velocity", "card-testing", "fan-in", "fan-out", "structuring")


def test_stateful_rules_decide_the_same_after_sigkills_as_an_uninterrupted_run(
    stack: Endpoints, unique: str, tmp_path: Path, every_restart_replays: bool = True
) -> None:
    """``every_restart_replays``: in memory each restart replays the changelog; a store behind a
    checkpoint may find nothing after it (the RocksDB variant checks that checkpoints were used)."""
    given = stateful_input(stack.bootstrap_servers, stack.registry_url, unique, tmp_path, COUNT, 11, PARTITIONS)
    t, txs, topology, reference = given.topics, given.transactions, given.topology, given.reference
    fired = rule_counts(reference)
    assert all(fired[r] > 0 for r in RULES), f"the input does not exercise every rule: {dict(fired)}"

    rnd = random.Random(unique)
    counter = OutputCounter(stack.bootstrap_servers, t.outputs, PARTITIONS)
    runs: list[Detector] = []
    try:
        while len(runs) < KILLS:
            d = Detector(
                stack.bootstrap_servers,
                stack.registry_url,
                topology,
                t.application_id,
                "crash",
                tmp_path / f"crash-{len(runs)}.log",
                "--stats-interval-s",
                "0.1",
            )
            runs.append(d)
            # Kills spread over the stream (both stages busy), each after a commit of this run's own
            # (its stats line counts committed records).
            target = COUNT * len(runs) // (KILLS + 2)
            deadline = time.monotonic() + 120
            while stats_committed(d.output()) == 0 or counter.poll(0.02) < target:
                assert d.proc.poll() is None, f"detector exited early:\n{d.output()[-3000:]}"
                assert time.monotonic() < deadline, f"no progress in 120 s:\n{d.output()[-3000:]}"
            time.sleep(rnd.uniform(0.0, 0.2))  # somewhere inside a transaction
            d.signal(signal.SIGKILL)
            d.wait()
            assert counter.poll() < COUNT, f"the input was done before kill {len(runs)}: input too small"
        last = Detector(
            stack.bootstrap_servers,
            stack.registry_url,
            topology,
            t.application_id,
            "crash",
            tmp_path / "crash-last.log",
        )
        runs.append(last)
        wait_outputs(counter, COUNT, [last], timeout=180)
        last.signal(signal.SIGTERM)
        assert last.wait() == 0, last.output()[-3000:]
    finally:
        counter.close()

    written = (*t.outputs, f"{t.application_id}-by-target_account-amount-repartition")
    committed = read_all(stack.bootstrap_servers, written, "read_committed")  # asserts the end is reached
    uncommitted = read_all(stack.bootstrap_servers, written, "read_uncommitted")
    assert len(uncommitted) > len(committed), "no aborted transaction left records behind: kills missed"
    crashed, seen = decisions([o for o in committed if o.topic in t.outputs], t)
    duplicates = [i for i, n in seen.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} transactions decided twice, e.g. {duplicates[:3]}"
    assert set(crashed) == {tx.transaction_id for tx in txs}
    assert crashed == reference, describe_difference(reference, crashed)
    restored = [stats_restored(r.output()) for r in runs[1:]]
    if every_restart_replays:
        assert all(n > 0 for n in restored), f"a restart restored no state: {restored}"
