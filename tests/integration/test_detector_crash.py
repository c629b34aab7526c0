"""Exactly-once under crashes: the detector is SIGKILLed mid-stream at random moments and restarted.

Afterwards read_committed readers of legit + fraud + DLQ see every input exactly once, in the
branch the rule dictates (``amount >= 900`` -> fraud), in per-key input order; aborted
transactions really happened (read_uncommitted sees more); nothing hangs (read_committed reaches
the end offsets).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import Endpoints
from tests.integration.eos_support import (
    Detector,
    GroupProgress,
    Output,
    Sent,
    Topics,
    create_topics,
    produce_transactions,
    read_all,
    stateless_topology,
)

pytestmark = pytest.mark.integration

COUNT = 200_000
PARTITIONS = 3
KILLS = 6


def _wait_progress(progress: GroupProgress, above: int, d: Detector, timeout: float) -> int:
    """Wait until the group's committed offsets pass ``above``; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = progress.committed()
        if done > above:
            return done
        assert d.proc.poll() is None, f"detector exited early:\n{d.output()[-3000:]}"
        time.sleep(0.01)
    raise AssertionError(f"no progress past {above} in {timeout}s:\n{d.output()[-3000:]}")


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    stack: Endpoints, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Static membership (one group.instance.id across restarts, as a StatefulSet pod keeps its name): each
    # restart takes the dead instance's place at once instead of waiting out its session timeout, and
    # init_transactions still fences its open transaction. The stateful crash tests keep dynamic membership.
    monkeypatch.setenv("FRAUDSTREAM_DETECTOR_STATIC_MEMBERSHIP", "true")
    t = Topics.make(unique)
    create_topics(stack.bootstrap_servers, [t.transactions], PARTITIONS)
    registry = SchemaRegistryClient({"url": stack.registry_url})
    sent, poison = produce_transactions(
        stack.bootstrap_servers, registry, t.transactions, COUNT, seed=7, poison_every=20_000
    )
    total = len(sent) + len(poison)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateless_topology(t))
    log = tmp_path / "detector.log"
    rnd = random.Random(unique)

    with GroupProgress(stack.bootstrap_servers, t.application_id, t.transactions) as progress:
        for kills in range(KILLS):
            d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "crash", log)
            # Each run commits something of its own, then dies at a random point of its share of what
            # is left, so that KILLS runs never reach the end of the input however fast they are.
            done = progress.committed()
            share = (total - done) / (KILLS - kills + 1)
            _wait_progress(progress, done + int(rnd.uniform(0.2, 1.0) * share), d, timeout=120)
            time.sleep(rnd.uniform(0.0, 0.05))  # somewhere inside the next transaction
            d.signal(signal.SIGKILL)
            d.wait()
        assert progress.committed() < total, "a killed run finished the input: its kill was not mid-stream"
        # The last run finishes the input and stops cleanly on SIGTERM (Detector.signal waits until it
        # runs: the input may have been committed already, by a killed run's last transaction completing late).
        d = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "crash", log)
        deadline = time.monotonic() + 180
        while progress.committed() < total:
            assert time.monotonic() < deadline, f"detector did not finish:\n{d.output()[-3000:]}"
            assert d.proc.poll() is None, f"detector exited early:\n{d.output()[-3000:]}"
            time.sleep(0.5)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0, d.output()[-3000:]

    committed = read_all(stack.bootstrap_servers, t.outputs, "read_committed")  # asserts the end is reached
    uncommitted = read_all(stack.bootstrap_servers, t.outputs, "read_uncommitted")
    assert len(uncommitted) > len(committed), "no aborted transaction left records behind: kills missed"
    _assert_exactly_once(t, sent, poison, committed)


def _assert_exactly_once(t: Topics, sent: list[Sent], poison: list[bytes], outputs: list[Output]) -> None:
    dead = [o for o in outputs if o.topic == t.dlq]
    routed = [o for o in outputs if o.topic != t.dlq]
    # Every malformed input once in the DLQ, byte for byte.
    sources = Counter((o.headers["source.partition"], o.headers["source.offset"]) for o in dead)
    assert len(dead) == len(poison) and max(sources.values(), default=1) == 1
    assert Counter(o.value for o in dead) == Counter(poison)
    # Every transaction once, in its branch.
    by_id = {s.transaction_id: s for s in sent}
    seen = Counter(o.transaction_id() for o in routed)
    duplicates = [i for i, n in seen.items() if n > 1]
    missing = set(by_id) - set(seen)
    assert not duplicates, f"{len(duplicates)} duplicated, e.g. {duplicates[:3]}"
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:3]}"
    assert set(seen) == set(by_id)
    for o in routed:
        expected = t.fraud if by_id[o.transaction_id()].amount >= 900 else t.legit
        assert o.topic == expected
        assert o.headers["fraudstream.branch"] == (b"fraud" if expected == t.fraud else b"legit")
    # Per key, each branch's records come out in input order.
    order: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for s in sent:
        order[(t.fraud if s.amount >= 900 else t.legit, s.key)].append(s.transaction_id)
    got: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for o in sorted(routed, key=lambda o: (o.topic, o.partition, o.offset)):
        assert o.key is not None
        got[(o.topic, o.key)].append(o.transaction_id())
    assert got == order
