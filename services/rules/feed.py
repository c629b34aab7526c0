"""Read and write the compacted rules topic (``schemas/rule.avsc``, keyed by rule id)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas import schema_text
from services.config import KafkaSettings
from services.kafka import (
    admin_config,
    consumed_error,
    consumer_config,
    end_offsets,
    ensure_topics,
    not_at_end,
    producer_config,
    registry_client,
)
from topology.plan.model import Topology
from topology.plan.rules import RuleError, apply_rule
from topology.processor import TopologyProcessor
from topology.runtime.errors import kafka_error
from topology.runtime.outage import KafkaOutage, Outage
from topology.serde.decoder import AvroDecoder, AvroEncoder, DecodeError, RegistryError

log = logging.getLogger("fraudstream.rules")

RuleRecord = tuple[str, dict[str, Any] | None]


class RulesFeed:
    """Its own consumer on every partition of ``topic`` from the beginning (read_committed, no group commits)."""

    # While the broker is down, how often (and how long) an idle ``poll`` asks it for the topic's metadata:
    # with no rule record arriving, that answer is what ends the outage.
    PROBE_EVERY_S = 1.0
    PROBE_TIMEOUT_S = 0.5

    def __init__(
        self, kafka: KafkaSettings, topic: str, *, registry: Any = None, consumer: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.topic = topic
        self._decoder = AvroDecoder(registry or registry_client(kafka), schema_text("rule"))
        # group.id is required by the client; never joined nor committed.
        self._consumer = consumer or Consumer(
            consumer_config(kafka, f"{topic}-reader", **{"enable.partition.eof": False})
        )
        self._clock = clock
        self._assigned = False
        self._next_lookup = 0.0
        self.rejected = 0  # records that are not rules (undecodable)
        self.outage = KafkaOutage(log, clock)  # the broker's and the registry's outages, logged once
        self.registry_outage = Outage("the Schema Registry", log)

    def _assign(self) -> bool:
        if self._assigned or self._clock() < self._next_lookup:
            return self._assigned
        self._next_lookup = self._clock() + 5.0
        try:
            meta = self._consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
        except KafkaException as exc:
            self.outage.client_error(kafka_error(exc))
            return False
        self.outage.back()
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self._assigned = True
        return True

    def poll(self) -> list[RuleRecord]:
        """Records that arrived since the last call, in order (non-blocking). Undecodable ones are logged
        and counted in ``rejected``; while the registry cannot be reached, the feed stops at the record it
        could not decode and reads it again at the next call (a rule is never skipped)."""
        if not self._assign():
            return []
        out: list[RuleRecord] = []
        while True:
            messages = self._consumer.consume(500, timeout=0)
            if not messages:
                self._probe()
                return out
            for m in messages:
                if consumed_error(m, self.outage) is not None:  # raises on a fatal error
                    continue
                key = (m.key() or b"").decode("utf-8", "replace")
                if m.value() is None:
                    out.append((key, None))
                    continue
                try:
                    out.append((key, self._decoder.decode(m.value())))
                    self.registry_outage.back()
                except DecodeError as exc:
                    self.rejected += 1
                    log.warning("rule %s rejected (%s@%d): %s", key, self.topic, m.offset(), exc)
                except RegistryError as exc:  # rule ``key`` is read again at the next poll
                    self.registry_outage.lost(f"rules feed: {exc}")
                    self._consumer.seek(TopicPartition(self.topic, m.partition() or 0, m.offset() or 0))
                    return out

    def _probe(self) -> None:
        """During a broker outage, at most every ``PROBE_EVERY_S``: a metadata request whose answer ends it."""
        if not self.outage.probe_due(self.PROBE_EVERY_S):
            return
        try:
            self._consumer.list_topics(self.topic, timeout=self.PROBE_TIMEOUT_S)
        except KafkaException:
            return
        self.outage.back()

    def read_to_end(self, timeout_s: float = 15.0) -> list[RuleRecord]:
        """Every record up to the current end of the topic (empty if the topic does not exist)."""
        if not self._assign():
            return []
        parts = [tp.partition for tp in self._consumer.assignment()]
        ends = end_offsets(self._consumer, self.topic, parts, timeout_s=5.0)
        out: list[RuleRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out.extend(self.poll())
            if not not_at_end(self._consumer, self.topic, ends):
                return out
            time.sleep(0.05)
        raise TimeoutError(f"rules topic {self.topic}: not read to its end within {timeout_s:.0f} s")

    def close(self) -> None:
        self._consumer.close()


def _rule_set(topology: Topology) -> list[str]:
    return sorted(f"{b.name}:{r.ref}" for b in topology.branches for r in b.rules)


def rules_version(base: str, topology: Topology) -> str:
    """``base`` plus a digest of the rule set in force (each branch's ``id@version`` refs): the
    detector version of decisions made after a run-time rule change, so every output record names
    the rule set that decided it (and all records of one transaction name the same one)."""
    return f"{base}.rules-{hashlib.sha256(';'.join(_rule_set(topology)).encode()).hexdigest()[:8]}"


class RuleApplier:
    """Applies rules-topic records to a running processor; a rejected rule is logged and ignored.

    The processor's version is its starting one while the rule set in force is the starting one
    (again, after a rule is added and removed), else ``rules_version`` of it.
    """

    def __init__(self, processor: TopologyProcessor) -> None:
        self.processor = processor
        self._base_version = processor.version
        self._base_rules = _rule_set(processor.topology)
        self.rejected = 0  # rules refused (invalid, or a change the running topology cannot take)

    def apply(self, records: list[RuleRecord]) -> None:
        for rule_id, value in records:
            ref = rule_id if value is None else f"{rule_id}@{value.get('version')}"
            removing = value is None or value.get("enabled", True) is False
            try:
                topology = apply_rule(self.processor.topology, rule_id, value)
                version = self._base_version
                if _rule_set(topology) != self._base_rules:
                    version = rules_version(self._base_version, topology)
                self.processor.update(topology, version=version)
            except (RuleError, ValueError) as exc:
                self.rejected += 1
                log.warning("rule %s rejected (the rules in force stay as they are; %d rejected): %s",
                            ref, self.rejected, exc)  # fmt: skip
                continue
            log.info("rule %s %s", ref, "removed" if removing else "applied")


def ensure_topic(kafka: KafkaSettings, topic: str) -> None:
    """Create ``topic`` compacted (one partition) if it is missing."""
    admin = AdminClient(admin_config(kafka))
    ensure_topics(admin, [topic], partitions=1, replication_factor=-1, config={"cleanup.policy": "compact"})


def publish(kafka: KafkaSettings, topic: str, rule_id: str, value: Mapping[str, Any] | None) -> None:
    """Write one rule (or a tombstone for ``None``) keyed by ``rule_id`` and wait for the broker's ack."""
    ensure_topic(kafka, topic)
    payload = None
    if value is not None:
        payload = AvroEncoder(registry_client(kafka), schema_text("rule"), f"{topic}-value").encode(value)
    producer = Producer(producer_config(kafka, **{"linger.ms": 0}))
    errors: list[str] = []
    producer.produce(
        topic, key=rule_id.encode(), value=payload, on_delivery=lambda e, _m: errors.append(str(e)) if e else None
    )
    producer.flush(30)
    if errors:
        raise RuntimeError(f"rule {rule_id}: not written: {errors[0]}")
