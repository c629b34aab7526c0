"""The topics a runtime writes: missing sinks, changelogs and the dead-letter topic are created at start."""

from __future__ import annotations

import logging

from confluent_kafka.admin import NewTopic

from topology.records import Processor
from topology.runtime.clients import ClientFactory
from topology.runtime.settings import RuntimeSettings, admin_config

log = logging.getLogger("fraudstream.runtime")


def ensure_topics(clients: ClientFactory, s: RuntimeSettings, processor: Processor, dlq_topic: str | None) -> None:
    """Create missing sink topics (and compacted changelog topics) with the sources' partition count."""
    changelogs = set(processor.changelog_topics)
    every = list(dict.fromkeys((*processor.sink_topics, *changelogs, *((dlq_topic,) if dlq_topic else ()))))
    config = admin_config(s)
    existing = clients.partitions(config, [*processor.source_topics, *every], s.kafka_timeout_s)
    partitions = s.topic_partitions
    if partitions is None:
        partitions = next((existing[t] for t in processor.source_topics if t in existing), None)
    if partitions is None:
        partitions = 6
        log.warning("no source topic exists yet; new sink topics get %d partitions", partitions)
    wanted = [t for t in every if t not in existing]
    if not wanted:
        return
    clients.create_topics(
        config,
        [
            NewTopic(t, num_partitions=partitions, replication_factor=s.replication_factor,
                     config={"cleanup.policy": "compact"} if t in changelogs else {})
            for t in wanted
        ],
        s.kafka_timeout_s,
    )
    for t in wanted:
        log.info("created topic %s (%d partitions)", t, partitions)
