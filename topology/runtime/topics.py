"""The topics a runtime writes: missing sinks, changelogs and the dead-letter topic are created at start;
changelog and input partition counts are checked then, and again at every assignment."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from topology.records import TP, Processor
from topology.runtime.clients import ClientFactory
from topology.runtime.errors import PartitionCountError
from topology.runtime.settings import RuntimeSettings, admin_config

log = logging.getLogger("fraudstream.runtime")


def ensure_topics(clients: ClientFactory, s: RuntimeSettings, processor: Processor, dlq_topic: str | None) -> None:
    """Create missing sink topics with the sources' partition count and missing (compacted) changelogs with
    their input topic's; then check that every changelog has its input topic's partition count."""
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
    counts = dict(existing)
    wanted = [t for t in every if t not in existing]
    for t in wanted:  # sinks (repartition topics among them) first: a changelog takes its input topic's count
        if t not in changelogs:
            counts[t] = partitions
    inputs = changelog_inputs(processor)
    for t in wanted:
        if t in changelogs:
            counts[t] = counts.get(inputs.get(t, ""), partitions)
    check_partition_counts(processor, counts)
    if not wanted:
        return
    clients.create_topics(
        config,
        [
            NewTopic(
                t,
                num_partitions=counts[t],
                replication_factor=s.replication_factor,
                config={"cleanup.policy": "compact"} if t in changelogs else {},
            )
            for t in wanted
        ],
        s.kafka_timeout_s,
    )
    for t in wanted:
        log.info("created topic %s (%d partitions)", t, counts[t])


def changelog_inputs(processor: Processor) -> dict[str, str]:
    """Each changelog topic's input topic (partition N of the state is input partition N)."""
    return {c: t for t in processor.source_topics for c, _ in processor.changelog_partitions(t, 0)}


_WHILE_RUNNING = (
    "partitions were added to an input topic while the detector ran (the open transaction is aborted, what was "
    "committed stands, no record of a new partition was processed): "
)


def check_partition_counts(processor: Processor, counts: Mapping[str, int], *, running: bool = False) -> None:
    """Stop with a clear error (``PartitionCountError``) when a changelog's partition count differs from its
    input topic's: the state of input partition N is changelog partition N, so input partitions added later
    would write state to partitions that do not exist, and a key that moved partition would not find its
    state. ``running``: found at an assignment, after the runtime started."""
    bad = [
        f"{topic} has {counts[topic]} partitions but its changelog {changelog} has {counts[changelog]}"
        for changelog, topic in sorted(changelog_inputs(processor).items())
        if topic in counts and changelog in counts and counts[topic] != counts[changelog]
    ]
    if bad:
        found = (_WHILE_RUNNING if running else "") + "; ".join(bad)
        raise PartitionCountError(
            f"partition counts disagree: {found}. Keys are placed by partition count, so "
            "the state cannot follow a change of it: give the input its former partition count, or start the "
            "application anew (delete its changelog and repartition topics, or use another topology name; "
            "its state is then rebuilt from what the input topics still hold)"
        )


class AssignmentCheck:
    """The partition-count check at every assignment: an input topic that gained partitions while the
    runtime runs makes the group assign the new ones (and consumers see the new count in metadata).

    The counts come from a metadata request, raised by the partitions just assigned (metadata can lag);
    the changelogs' counts are remembered from the last answer, so a metadata request that fails (the
    broker is busy or away) still lets an assigned partition beyond its changelog's count be caught.
    """

    def __init__(self, clients: ClientFactory, s: RuntimeSettings, processor: Processor,
                 timeout_s: float = 5.0) -> None:  # fmt: skip
        self._clients = clients
        self._settings = s
        self._processor = processor
        self._timeout_s = timeout_s
        self._changelogs: dict[str, int] = {}  # changelog topic -> partitions, as last seen

    def __call__(self, assigned: Sequence[TP]) -> None:
        """Raise ``PartitionCountError`` if an input topic's partition count (now) differs from its changelog's."""
        inputs = changelog_inputs(self._processor)
        if not inputs:
            return
        topics = list(dict.fromkeys([*inputs.values(), *inputs]))
        try:
            counts = self._clients.partitions(admin_config(self._settings), topics, self._timeout_s)
        except KafkaException as exc:
            log.warning("partition counts not checked against metadata at this assignment: %s", exc)
            counts = {}
        self._changelogs.update((t, n) for t, n in counts.items() if t in inputs)
        counts = {**self._changelogs, **{t: n for t, n in counts.items() if t not in inputs}}
        for topic, partition in assigned:
            counts[topic] = max(counts.get(topic, 0), partition + 1)
        check_partition_counts(self._processor, counts, running=True)
