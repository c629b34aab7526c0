"""Stateful exactly-once under crashes: fraud.yaml's windowed rules decide the same after SIGKILLs.

One input topic (3 partitions, scenario traffic that fires every rule of fraud.yaml: velocity,
card testing, fan-in, fan-out, structuring, large amount) is read twice, by two application ids:

- a reference run: one detector, never interrupted;
- a crash run: two detectors with different instance ids (so different ``transactional.id``s, as
  ``docker compose --scale`` runs them) share the input; one of them is SIGKILLed at random moments,
  inside a transaction, 5 times, and restarted each time. While it is down the other takes over its
  partitions after a rebalance (KIP-447: its fetch of their offsets waits for the dead instance's open
  transaction to be aborted, and the broker fences that instance's writes by group generation) and
  restores their state from the changelog topics (read_committed) before it resumes.

Both runs must give every transaction the same decision: branch, fired rule ids and versions
(``fraudstream.rules``), and the aggregate values that fired (``fraudstream.evidence``), and the
crash run's read_committed outputs hold each transaction exactly once. Any state lost, doubled
or restored from an aborted transaction changes some count, sum or distinct count and fails this.
The RocksDB variant (``test_detector_stateful_crash_rocksdb``) runs one instance, restarted with the
same id.

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
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import Detector, Topics, create_topics, read_all
from tests.integration.stateful_support import (
    Decision,
    OutputCounter,
    Sender,
    Tx,
    decisions,
    describe_difference,
    rule_counts,
    run_reference,
    scenario_transactions,
    stateful_input,
    stateful_topology,
    stats_committed,
    stats_restored,
    wait_outputs,
)

pytestmark = pytest.mark.integration

COUNT = 40_000
PARTITIONS = 3
RULES = ("large-amount", "velocity", "card-testing", "fan-in", "fan-out", "structuring")


def test_stateful_rules_decide_the_same_when_one_of_two_instances_is_sigkilled_five_times(
    stack: Endpoints, unique: str, tmp_path: Path
) -> None:
    kills = 5
    bootstrap = stack.bootstrap_servers
    t = Topics.make(unique)
    create_topics(bootstrap, [t.transactions], PARTITIONS)
    txs = scenario_transactions(COUNT, seed=11, partitions=PARTITIONS)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    sender = Sender(bootstrap, SchemaRegistryClient({"url": stack.registry_url}), t.transactions)
    # Live traffic: each chunk in slices until the instance to be killed has committed some, the rest after the
    # kill (input on every partition that only the survivor can take while it is down), the last chunk after
    # the last kill.
    size = COUNT // (kills + 1)
    chunks = [txs[i * size:(i + 1) * size] for i in range(kills)] + [txs[kills * size:]]

    def detector(instance: str, log: str, *args: str) -> Detector:
        # The killed instance's open transaction is aborted by the broker after this timeout (the survivor
        # that took its partitions over waits for that); the default of 60 s would make the test slow.
        env = {"FRAUDSTREAM_DETECTOR_TRANSACTION_TIMEOUT_MS": "6000"} if instance == "b" else None
        return Detector(bootstrap, stack.registry_url, topology, t.application_id, instance, tmp_path / log,
                        *args, env=env)  # fmt: skip

    rnd = random.Random(unique)
    counter = OutputCounter(bootstrap, t.outputs, PARTITIONS)
    survivor = detector("a", "survivor.log")
    runs: list[Detector] = []
    sent = 0
    try:
        for chunk in chunks[:kills]:
            b = detector("b", f"crash-{len(runs)}.log", "--stats-interval-s", "0.1")
            runs.append(b)
            # Traffic in slices until b has committed some of it (it owns partitions and is mid-stream).
            done, deadline = 0, time.monotonic() + 120
            while stats_committed(b.output()) == 0:
                for d in (b, survivor):
                    assert d.alive(), f"detector exited early:\n{d.output()[-3000:]}"
                assert done < len(chunk) * 9 // 10 and time.monotonic() < deadline, f"no commit:\n{b.output()[-3000:]}"
                sent += sender.send(chunk[done:done + 50])
                done += 50
                counter.poll(0.3)
            time.sleep(rnd.uniform(0.0, 0.2))  # somewhere inside a transaction of b's
            b.signal(signal.SIGKILL)
            b.wait()
            sent += sender.send(chunk[done:])  # input on every partition that only the survivor can take now
            wait_outputs(counter, sent, [survivor], timeout=90)  # b's partitions taken over: all decided
        last = detector("b", "crash-last.log")
        runs.append(last)
        sent += sender.send(chunks[kills])
        wait_outputs(counter, COUNT, [last, survivor], timeout=180)
        for d in (last, survivor):
            d.signal(signal.SIGTERM)
        for d in (last, survivor):
            assert d.wait() == 0, d.output()[-3000:]
    finally:
        counter.close()
        survivor.kill()
    assert sent == COUNT
    reference = run_reference(bootstrap, stack.registry_url, t, topology, COUNT, PARTITIONS, tmp_path / "ref.log")
    # Each restarted b restored state, and so did the survivor when it took b's partitions over (the last b
    # may be given partitions too late to).
    _check_decisions(stack, t, txs, reference, [*runs[1:-1], survivor], every_restart_replays=True)


def check_crashes(
    stack: Endpoints, unique: str, tmp_path: Path, *, kills: int, every_restart_replays: bool = True
) -> None:
    """SIGKILL one detector ``kills`` times, restarting it with the same id each time, and hold its
    decisions to the reference run's. ``every_restart_replays``: in memory each restart replays the
    changelog; a store behind a checkpoint may find nothing after it (the RocksDB variant checks that
    checkpoints were used)."""
    given = stateful_input(stack.bootstrap_servers, stack.registry_url, unique, tmp_path, COUNT, 11, PARTITIONS)
    t, txs, topology, reference = given.topics, given.transactions, given.topology, given.reference

    def detector(log: str, *args: str) -> Detector:
        return Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "crash",
                        tmp_path / log, *args)  # fmt: skip

    rnd = random.Random(unique)
    counter = OutputCounter(stack.bootstrap_servers, t.outputs, PARTITIONS)
    runs: list[Detector] = []
    try:
        while len(runs) < kills:
            d = detector(f"crash-{len(runs)}.log", "--stats-interval-s", "0.1")
            runs.append(d)
            # Kills spread over the stream (both stages busy), each after a commit of this run's own
            # (its stats line counts committed records).
            target = COUNT * len(runs) // (kills + 2)
            deadline = time.monotonic() + 120
            while stats_committed(d.output()) == 0 or counter.poll(0.02) < target:
                assert d.alive(), f"detector exited early:\n{d.output()[-3000:]}"
                assert time.monotonic() < deadline, f"no progress in 120 s:\n{d.output()[-3000:]}"
            time.sleep(rnd.uniform(0.0, 0.2))  # somewhere inside a transaction
            d.signal(signal.SIGKILL)
            d.wait()
            assert counter.poll() < COUNT, f"the input was done before kill {len(runs)}: input too small"
        last = detector("crash-last.log")
        runs.append(last)
        wait_outputs(counter, COUNT, [last], timeout=180)
        last.signal(signal.SIGTERM)
        assert last.wait() == 0, last.output()[-3000:]
    finally:
        counter.close()
    _check_decisions(stack, t, txs, reference, runs[1:], every_restart_replays)


def _check_decisions(
    stack: Endpoints, t: Topics, txs: list[Tx], reference: dict[str, Decision], restarted: list[Detector],
    every_restart_replays: bool,
) -> None:
    fired = rule_counts(reference)
    assert all(fired[r] > 0 for r in RULES), f"the input does not exercise every rule: {dict(fired)}"
    written = (*t.outputs, f"{t.application_id}-by-target_account-amount-repartition")
    committed = read_all(stack.bootstrap_servers, written, "read_committed")  # asserts the end is reached
    uncommitted = read_all(stack.bootstrap_servers, written, "read_uncommitted")
    assert len(uncommitted) > len(committed), "no aborted transaction left records behind: kills missed"
    crashed, seen = decisions([o for o in committed if o.topic in t.outputs], t)
    duplicates = [i for i, n in seen.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} transactions decided twice, e.g. {duplicates[:3]}"
    assert set(crashed) == {tx.transaction_id for tx in txs}
    assert crashed == reference, describe_difference(reference, crashed)
    restored = [stats_restored(r.output()) for r in restarted]
    if every_restart_replays:
        assert all(n > 0 for n in restored), f"a restart restored no state: {restored}"
