"""Helpers of the stateful exactly-once proofs: a tuned fraud topology, scenario input, decision maps.

The input is built so that an uninterrupted run and any crashed/rebalanced run over the same
topic must decide every transaction identically:

- stage 0 (rules keyed by the source account: velocity, card testing, fan-out, structuring,
  large amount) keeps per-partition state; a partition's records are read in offset order
  whatever happens, so its decisions depend only on the restored state being exact;
- stage 1 (fan-in, grouped by target account and amount) reads a repartition topic, where
  records of different input partitions interleave differently from run to run. Its
  decisions are run-independent only because every fan-in incident's sources live in ONE
  input partition (the input is produced with explicit partitions) and the fan-in grace
  covers the whole input's event-time span (no record is late in any interleaving).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from ruamel.yaml import YAML

from schemas import schema_text
from services.detector import FRAUD_TOPOLOGY
from tests.integration.eos_support import Detector, Output, Topics, read_all
from topology.serde.decoder import AvroEncoder

START_MS = 1_780_000_000_000
STEP_MS = 200  # event time between consecutive input transactions (5 tx per simulated second)


def stateful_topology(t: Topics, fan_in_grace: str | None = "7d") -> str:
    """``services/detector/fraud.yaml`` (its rules, windows and thresholds) on the test's topics.

    Topic names are the test's own (alerts included). One change unless ``fan_in_grace`` is None:
    the fan-in aggregate's grace becomes 7 days, longer than the input's event-time span, so no
    interleaving of input partitions on the repartition topic makes a record late (a rebalance or a
    crash changes that interleaving; event-time order only holds within one instance's partitions).
    """
    yaml = YAML(typ="rt")
    doc = yaml.load(FRAUD_TOPOLOGY.read_text(encoding="utf-8"))
    doc["topology"] = f"eos-{t.unique}"
    doc["source"]["topic"] = t.transactions
    doc["dlq"] = t.dlq
    if "alerts" in doc:
        doc["alerts"] = t.alerts  # never the canonical alerts topic
    fraud = [b for b in doc["branches"] if b["name"] == "fraud"]
    assert len(fraud) == 1, "fraud.yaml has no single 'fraud' branch"
    for b in doc["branches"]:
        b["to"] = t.fraud if b["name"] == "fraud" else f"eos-{t.unique}.{b['name']}"
    doc["default_branch"]["to"] = t.legit
    fan_in = [r for r in doc["rules"] if r["id"] == "fan-in"]
    assert len(fan_in) == 1, "fraud.yaml has no 'fan-in' rule"
    if fan_in_grace is not None:
        fan_in[0]["when"]["aggregate"]["window"]["grace"] = fan_in_grace
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Tx:
    """One input transaction and the input partition it is produced to."""

    partition: int
    record: dict[str, Any]

    @property
    def transaction_id(self) -> str:
        return str(self.record["transaction_id"])


def scenario_transactions(count: int, seed: int, partitions: int, accounts: int = 600) -> list[Tx]:
    """``count`` deterministic transactions: legit traffic plus incidents that fire fraud.yaml's rules.

    Account ``acct-N`` is produced to partition ``N % partitions``. Incidents: velocity bursts
    (12-16 payments in 3 minutes), card testing (5-8 amounts under 2.00), fan-out (13-16 new
    targets), structuring (3-5 amounts of 700-899.99), fan-in (10-13 sources of ONE partition
    paying exactly 1000.00 to one mule) and single large amounts. Event times rise with the index.
    """
    rnd = random.Random(seed)
    slots: list[tuple[float, str, str, int]] = []  # (position, source, target, cents)

    def acct(i: int) -> str:
        return f"acct-{i:05d}"

    favourites = [[rnd.randrange(accounts) for _ in range(4)] for _ in range(accounts)]
    for _ in range(count):
        pos = rnd.uniform(0, count)
        src = rnd.randrange(accounts)
        dst = rnd.choice(favourites[src])  # legit accounts pay a few usual payees
        cents = rnd.randint(200, 69_999) if rnd.random() < 0.97 else rnd.randint(90_000, 300_000)
        slots.append((pos, acct(src), acct(dst), cents))
    incidents = max(1, count // 250)
    span = 900.0  # positions (= 3 simulated minutes at STEP_MS)
    for n in range(incidents):
        kind = n % 5
        start = rnd.uniform(0, max(0.0, count - span * 10))
        src = rnd.randrange(accounts)
        if kind == 0:  # velocity
            for _ in range(rnd.randint(12, 16)):
                slots.append(
                    (start + rnd.uniform(0, span), acct(src), acct(rnd.randrange(accounts)), rnd.randint(500, 20_000))
                )
        elif kind == 1:  # card testing
            for _ in range(rnd.randint(5, 8)):
                slots.append(
                    (start + rnd.uniform(0, span), acct(src), f"merchant-{rnd.randrange(50):03d}", rnd.randint(1, 199))
                )
        elif kind == 2:  # fan-out
            for k in range(rnd.randint(13, 16)):
                slots.append(
                    (start + rnd.uniform(0, span * 4), acct(src), f"new-{n:05d}-{k:02d}", rnd.randint(10_000, 89_999))
                )
        elif kind == 3:  # structuring
            for _ in range(rnd.randint(3, 5)):
                slots.append(
                    (
                        start + rnd.uniform(0, span * 10),
                        acct(src),
                        acct(rnd.randrange(accounts)),
                        rnd.randint(70_000, 89_999),
                    )
                )
        else:  # fan-in: distinct sources of one partition pay 1000.00 to one mule
            p = rnd.randrange(partitions)
            pool = [i for i in range(accounts) if i % partitions == p]
            for member in rnd.sample(pool, rnd.randint(10, 13)):
                slots.append((start + rnd.uniform(0, span * 5), acct(member), f"mule-{n:05d}", 100_000))
    slots.sort(key=lambda slot: slot[0])
    out: list[Tx] = []
    for i, (_, payer, payee, cents) in enumerate(slots[:count]):
        record = {
            "transaction_id": f"{seed:08x}{i:024x}",
            "source_account": payer,
            "target_account": payee,
            "amount": Decimal(cents).scaleb(-2),
            "currency": "EUR",
            "event_time": START_MS + i * STEP_MS,
            "channel": "online" if cents >= 90_000 else "card",  # fraud.yaml's large-amount@2: online only
            "country": "NL",
            "merchant_category": None,
        }
        out.append(Tx(int(payer.rsplit("-", 1)[1]) % partitions, record))
    return out


class Sender:
    """Produces ``Tx`` values as Avro to their partitions (key = source account)."""

    def __init__(self, bootstrap: str, registry: Any, topic: str) -> None:
        self.topic = topic
        self._encoder = AvroEncoder(registry, schema_text("transaction"), f"{topic}-value")
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "enable.idempotence": True,
                "queue.buffering.max.messages": 1_000_000,
            }
        )

    def send(self, txs: Iterable[Tx]) -> int:
        """Produce ``txs`` and wait until the broker has them all; the number produced."""
        n = 0
        for tx in txs:
            value = self._encoder.encode(tx.record)
            while True:
                try:
                    self._producer.produce(self.topic, value, tx.record["source_account"].encode(), tx.partition)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            n += 1
        assert self._producer.flush(60) == 0
        return n


def produce(bootstrap: str, registry: Any, topic: str, txs: Iterable[Tx]) -> int:
    """Produce ``txs`` as Avro to their partitions (key = source account); the number produced."""
    return Sender(bootstrap, registry, topic).send(txs)


Decision = tuple[str, str, str]  # (branch, rules "id@version,...", evidence JSON of the aggregates that fired)


def decisions(outputs: Iterable[Output], t: Topics) -> tuple[dict[str, Decision], Counter[str]]:
    """Per transaction id: its branch and why; plus how often each id was seen (to check exactly once).

    Also checks that each record is on its branch's topic and that nothing was dead-lettered.
    """
    topics = {"fraud": t.fraud, "legit": t.legit}
    seen: Counter[str] = Counter()
    out: dict[str, Decision] = {}
    for o in outputs:
        assert o.topic != t.dlq, f"unexpected dead letter: {o.headers}"
        branch = o.headers.get("fraudstream.branch", b"").decode()
        assert topics.get(branch) == o.topic, f"branch {branch!r} record on {o.topic}"
        tid = o.transaction_id()
        seen[tid] += 1
        out[tid] = (
            branch,
            o.headers.get("fraudstream.rules", b"").decode(),
            o.headers.get("fraudstream.evidence", b"").decode(),
        )
    return out, seen


def rule_counts(decided: dict[str, Decision]) -> Counter[str]:
    """How many transactions each rule id fired for."""
    c: Counter[str] = Counter()
    for _, rules, _ in decided.values():
        for ref in filter(None, rules.split(",")):
            c[ref.split("@", 1)[0]] += 1
    return c


def describe_difference(a: dict[str, Decision], b: dict[str, Decision], limit: int = 5) -> str:
    """A short text naming the first differing transaction ids (for assertion messages)."""
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    lines = [f"{len(diff)} transactions decided differently"]
    for k in diff[:limit]:
        lines.append(f"  {k}: {a.get(k)} != {b.get(k)}")
    return "\n".join(lines) + ("\n" + json.dumps(diff[limit : limit + 20]) if len(diff) > limit else "")


class OutputCounter:
    """Counts records of ``topics`` as a read_committed reader sees them (incrementally, from the start)."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...], partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "eos-counter",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
        self.count = 0

    def poll(self, timeout: float = 0.2) -> int:
        """Read what became visible; the total so far."""
        for m in self._consumer.consume(10_000, timeout):
            if m.error() is None:
                self.count += 1
        return self.count

    def close(self) -> None:
        self._consumer.close()


def wait_outputs(counter: OutputCounter, at_least: int, detectors: Iterable[Detector], timeout: float) -> int:
    """Poll ``counter`` until it reaches ``at_least``; fail if a detector exits or time runs out."""
    deadline = time.monotonic() + timeout
    while counter.poll() < at_least:
        for d in detectors:
            assert d.proc.poll() is None, f"detector exited early (rc {d.proc.returncode}):\n{d.output()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"only {counter.count} of {at_least} outputs after {timeout}s:\n"
            + "\n".join(d.output()[-2000:] for d in detectors)
        )
    return counter.count


def run_until(
    d: Detector, bootstrap: str, topics: tuple[str, ...], partitions: int, at_least: int, timeout: float
) -> str:
    """Wait until ``topics`` hold ``at_least`` committed records (the detector must not exit meanwhile),
    then stop it with SIGTERM: it must exit 0. Returns its output."""
    counter = OutputCounter(bootstrap, topics, partitions)
    try:
        wait_outputs(counter, at_least, [d], timeout=timeout)
    finally:
        counter.close()
        d.signal(signal.SIGTERM)
        rc = d.wait()
    assert rc == 0, d.output()[-3000:]
    return d.output()


def run_reference(
    bootstrap: str, registry_url: str, t: Topics, topology: Path, total: int, partitions: int, log: Path
) -> dict[str, Decision]:
    """One detector, never interrupted, over the whole input (its own application id); its decisions."""
    app = f"{t.application_id}-reference"
    outputs = Topics(
        t.unique, t.transactions, f"{t.legit}-reference", f"{t.fraud}-reference", f"{t.dlq}-reference", app
    )
    text = topology.read_text(encoding="utf-8")
    ref_topology = topology.with_name("reference.yaml")
    ref_topology.write_text(
        text.replace(t.legit, outputs.legit).replace(t.fraud, outputs.fraud).replace(t.dlq, outputs.dlq),
        encoding="utf-8",
    )
    d = Detector(bootstrap, registry_url, ref_topology, app, "reference", log)
    run_until(d, bootstrap, outputs.outputs, partitions, total, timeout=180)
    decided, seen = decisions(read_all(bootstrap, outputs.outputs, "read_committed"), outputs)
    assert len(decided) == total and max(seen.values()) == 1, "the reference run itself is not exactly once"
    return decided


def stats_records_in(log_text: str, *, staged: bool = False) -> int:
    """``in N`` of the last stats line of one detector process's log (committed inputs); with ``staged``,
    the records it re-read from repartition topics instead."""
    found = re.findall(r"\bin ([\d,]+)(?: \([\d,]+/s\))?(?: \(\+([\d,]+) re-read[^)]*\))? \| decided",
                       re.sub(r"\s+", " ", log_text))  # fmt: skip
    return int((found[-1][1 if staged else 0] or "0").replace(",", "")) if found else 0


def stats_committed(log_text: str) -> int:
    """Records one detector process committed, both stages (inputs plus repartition records re-read)."""
    return stats_records_in(log_text) + stats_records_in(log_text, staged=True)


def stats_restored(log_text: str) -> int:
    """The largest count of changelog records one detector process logged as restored (0: none)."""
    found = re.findall(r"(\d+) records replayed", re.sub(r"\s+", " ", log_text))
    return max((int(n) for n in found), default=0)


@dataclass(frozen=True)
class StatefulInput:
    """One stateful proof's input on the broker and what an uninterrupted detector decided for it."""

    topics: Topics
    transactions: list[Tx]
    topology: Path
    reference: dict[str, Decision]


def stateful_input(
    bootstrap: str, registry_url: str, unique: str, tmp_path: Path, count: int, seed: int, partitions: int
) -> StatefulInput:
    """Scenario input produced to a new topic, fraud.yaml on the test's topics, and the reference run."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from tests.integration.eos_support import create_topics

    t = Topics.make(unique)
    create_topics(bootstrap, [t.transactions], partitions)
    txs = scenario_transactions(count, seed=seed, partitions=partitions)
    produce(bootstrap, SchemaRegistryClient({"url": registry_url}), t.transactions, txs)
    topology = tmp_path / "topology.yaml"
    topology.write_text(stateful_topology(t), encoding="utf-8")
    reference = run_reference(bootstrap, registry_url, t, topology, count, partitions, tmp_path / "reference.log")
    return StatefulInput(t, txs, topology, reference)


@dataclass(frozen=True)
class Generated:
    """What `fraudstream generate` is asked for: how many, over how many partitions, with which seed."""

    count: int
    partitions: int
    seed: int


def generate_detect_evaluate(
    stack: Any, t: Topics, topology_text: str, tmp_path: Path, gen: Generated, fraud: list[str],
    detector_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Generate labelled transactions (a backlog: all before the detector starts), run a detector over
    them until every one is decided, and return `fraudstream evaluate --json`."""
    labels = f"{t.transactions}.labels"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "SCHEMA_REGISTRY_URL": stack.registry_url}
    done = subprocess.run(
        [sys.executable, "-m", "services", "generate", "--count", str(gen.count), "--rate", "0",
         "--seed", str(gen.seed), "--topic", t.transactions, "--labels-topic", labels,
         "--partitions", str(gen.partitions), *(arg for f in fraud for arg in ("--fraud", f))],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    topology = tmp_path / "topology.yaml"
    topology.write_text(topology_text)
    detector = Detector(stack.bootstrap_servers, stack.registry_url, topology, t.application_id, "eval",
                        tmp_path / "detector.log", env=detector_env)  # fmt: skip
    counter = OutputCounter(stack.bootstrap_servers, (t.legit, t.fraud), gen.partitions)
    try:  # every transaction decided (a repartitioned stage decides after the input offsets are committed)
        wait_outputs(counter, gen.count, [detector], timeout=180)
    finally:
        counter.close()
    detector.signal(signal.SIGTERM)
    assert detector.wait() == 0
    out = subprocess.run(
        [sys.executable, "-m", "services", "evaluate", "--json", "--labels-topic", labels,
         "--legit-topic", t.legit, "--fraud-topic", t.fraud, "--alerts-topic", t.alerts],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report
