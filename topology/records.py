"""The records that cross the boundary between the pure topology and the runtimes.

A runtime (the exactly-once Kafka loop, or the in-memory test driver) hands a
``RawRecord`` (bytes as they came off a topic) to a processor and writes every
``OutRecord`` it gets back: output branches, dead letters, changelog and
repartition records alike, all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce. ``partition=None`` lets the producer's partitioner choose by key."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    timestamp_ms: int | None = None
    # What decided it (branch name, rule ids), for metrics and logs; not written to Kafka.
    tags: tuple[str, ...] = field(default=(), compare=False)
