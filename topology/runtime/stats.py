"""What the runtime counts: per committed transaction (``CommitReport``) and since start (``RuntimeStats``)."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from topology.records import Kind

OutKey = tuple[str, Kind, tuple[str, ...]]
"""What produced records are counted by: (topic, kind, labels)."""


@dataclass(frozen=True)
class CommitReport:
    """What one committed transaction carried (for metrics)."""

    records_in: Mapping[str, int]  # per source topic
    records_out: Mapping[OutKey, int]
    dead_letters: Mapping[str, int]  # per error class
    seconds: float  # send offsets + commit


@dataclass
class RuntimeStats:
    """Committed counts since start, and recent commit latencies."""

    records_in: int = 0
    records_in_by_topic: Counter[str] = field(default_factory=Counter)
    records_out: Counter[str] = field(default_factory=Counter)  # per topic
    decisions: Counter[str] = field(default_factory=Counter)  # per branch ("" when the processor names none)
    by_kind: Counter[Kind] = field(default_factory=Counter)
    dead_letters: int = 0
    transactions_committed: int = 0
    transactions_aborted: int = 0
    retries: int = 0
    restored: int = 0
    first_record_at: float | None = None  # time.monotonic() of the first record consumed
    last_commit_at: float | None = None
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def commit_latency_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1, nearest rank) of recent commit latencies, in ms."""
        return quantile([s * 1000.0 for s in self.commit_seconds], q)

    def add(self, report: CommitReport, at: float) -> None:
        """Count one committed transaction."""
        self.transactions_committed += 1
        self.last_commit_at = at
        self.commit_seconds.append(report.seconds)
        self.records_in += sum(report.records_in.values())
        self.records_in_by_topic.update(report.records_in)
        for (topic, kind, labels), n in report.records_out.items():
            self.records_out[topic] += n
            self.by_kind[kind] += n
            if kind is Kind.DECISION:
                self.decisions[labels[0] if labels else ""] += n
        self.dead_letters += sum(report.dead_letters.values())


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of ``values`` (``None`` when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
