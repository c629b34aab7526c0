"""Restore: replay changelog partitions into the processor, a bounded slice of work at a time.

Kafka Streams' ``ProcessorStateManager``/``StoreChangelogReader`` are the model. For each input
partition to restore, every changelog partition of it is read ``read_committed`` from the
processor's ``restore_from`` offset (0, or a local checkpoint) to its last stable offset (LSO:
the end of what is decided; aborted records and markers are skipped). When a partition reaches
its end, the LSO is asked once more, so a transaction that a previous owner still had open and
that committed meanwhile is replayed too. ``step`` does at most ``budget_s`` of this work and
returns the input partitions that are done: the runtime calls it between transactions, so the
other partitions go on being processed, no rebalance callback is blocked, and a restore that
outlives ``restore_timeout_s`` stops the runtime with a clear error instead of hanging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaException, TopicPartition

from topology.records import TP, Processor, RawRecord
from topology.runtime.clients import ClientFactory, ConsumerClient, MessageLike
from topology.runtime.errors import FatalRuntimeError, kafka_error
from topology.runtime.partitions import end_offset
from topology.runtime.settings import RuntimeSettings, restore_config

log = logging.getLogger("fraudstream.runtime")

Progress = Callable[[str, int, int], None]


class Restorer:
    """Restores the changelog partitions of the input partitions handed to ``start``."""

    def __init__(
        self, clients: ClientFactory, settings: RuntimeSettings, processor: Processor, on_progress: Progress | None
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._processor = processor
        self._on_progress = on_progress
        self._reader: ConsumerClient | None = None
        self._tasks: dict[TP, set[TP]] = {}  # input partition -> changelog partitions still to read
        self._started: dict[TP, float] = {}
        self._ends: dict[TP, int] = {}  # changelog partition -> offset to reach
        self._rechecked: set[TP] = set()  # changelog partitions whose end was asked again
        self._positions: dict[TP, int] = {}  # changelog partitions being read -> offset they were assigned at
        self.restored = 0  # records replayed since start
        self._last_report = 0.0

    @property
    def pending(self) -> frozenset[TP]:
        """Input partitions whose restore has not finished."""
        return frozenset(self._tasks)

    def start(self, parts: Iterable[TP]) -> list[TP]:
        """Begin restoring ``parts`` (input partitions); returns those with nothing to replay (ready now)."""
        ready: list[TP] = []
        for tp in parts:
            todo: set[TP] = set()
            for cp in self._processor.changelog_partitions(*tp):
                begin = max(0, self._processor.restore_from(cp))
                end = self.end_offset(cp)
                if begin < end:
                    todo.add(cp)
                    self._ends[cp] = end
                    self._positions[cp] = begin
            if todo:
                self._tasks[tp] = todo
                self._started[tp] = time.monotonic()
                log.info("restoring %s[%d] from %s", tp[0], tp[1], _fmt_ranges(todo, self._positions, self._ends))
            else:
                ready.append(tp)
        if self._tasks:
            self._assign()
        return ready

    def cancel(self, parts: Iterable[TP]) -> None:
        """Stop restoring ``parts`` (revoked or lost mid-restore)."""
        changed = False
        for tp in parts:
            for cp in self._tasks.pop(tp, set()):
                self._forget(cp)
                changed = True
            self._started.pop(tp, None)
        if changed:
            self._assign()

    def step(self, budget_s: float) -> list[TP]:
        """Replay for up to ``budget_s``; returns the input partitions whose restore finished."""
        if not self._tasks:
            return []
        reader = self._open()
        deadline = time.monotonic() + budget_s
        while self._positions and time.monotonic() < deadline:
            for m in reader.consume(5000, 0.05):
                self._apply(m)
            self._advance(reader)
        self._report()
        self._check_timeout()
        return self._finished()

    def end_offset(self, cp: TP) -> int:
        """The last stable offset of changelog partition ``cp`` (waits out a leader election)."""
        try:
            return end_offset(self._open(), cp, self._settings.kafka_timeout_s)
        except KafkaException as exc:
            err = kafka_error(exc)
            raise FatalRuntimeError(f"cannot read the end offset of {cp[0]}[{cp[1]}]: {err.str()}") from exc

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # ------------------------------------------------------------ inside

    def _open(self) -> ConsumerClient:
        if self._reader is None:
            self._reader = self._clients.consumer(restore_config(self._settings))
        return self._reader

    def _assign(self) -> None:
        reader = self._open()
        current = dict(self._positions)
        if current:  # partitions read already go on from where they are (unread ones: -1001)
            for tp in reader.position([TopicPartition(*cp) for cp in current]):
                if tp.offset >= 0:
                    current[(tp.topic, tp.partition)] = tp.offset
        reader.assign([TopicPartition(t, p, off) for (t, p), off in sorted(current.items())])
        self._positions = current

    def _apply(self, m: MessageLike) -> None:
        error = m.error()
        if error is not None:
            if error.fatal():
                raise FatalRuntimeError(f"restore failed: {error}")
            return
        headers = m.headers()
        self._processor.restore(
            RawRecord(
                m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value(), m.timestamp()[1],
                tuple((k, v or b"") for k, v in headers) if headers else (),
            )
        )
        self.restored += 1

    def _advance(self, reader: ConsumerClient) -> None:
        """Changelog partitions that reached their end: ask the end once more, then they are done."""
        positions = reader.position([TopicPartition(*cp) for cp in self._positions])
        done: list[TP] = []
        for tp in positions:
            cp = (tp.topic, tp.partition)
            if tp.offset < 0 or tp.offset < self._ends[cp]:
                continue
            if cp not in self._rechecked:
                self._rechecked.add(cp)
                self._ends[cp] = max(self._ends[cp], self.end_offset(cp))
                if tp.offset < self._ends[cp]:
                    continue
            done.append(cp)
        if done:
            for cp in done:
                for todo in self._tasks.values():
                    todo.discard(cp)
                self._forget(cp)
            self._assign()

    def _forget(self, cp: TP) -> None:
        self._positions.pop(cp, None)
        self._ends.pop(cp, None)
        self._rechecked.discard(cp)

    def _finished(self) -> list[TP]:
        done = [tp for tp, todo in self._tasks.items() if not todo]
        for tp in done:
            del self._tasks[tp]
            took = time.monotonic() - self._started.pop(tp)
            log.info("restored %s[%d] in %.2f s (%d records replayed since start)", tp[0], tp[1], took, self.restored)
        return done

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < 1.0 and self._positions:
            return
        self._last_report = now
        remaining = sum(self._ends.values())
        if self._positions:
            log.info("restoring %d changelog partitions: %d records replayed", len(self._positions), self.restored)
        if self._on_progress is not None:
            topics = ",".join(sorted({cp[0] for cp in self._ends}))
            self._on_progress(topics, self.restored, remaining)

    def _check_timeout(self) -> None:
        limit = self._settings.restore_timeout_s
        for tp, started in self._started.items():
            if time.monotonic() - started > limit:
                raise FatalRuntimeError(
                    f"restoring the state of {tp[0]}[{tp[1]}] took more than {limit:.0f} s "
                    f"(still to read: {_fmt_ranges(self._tasks[tp], self._positions, self._ends)}); "
                    "raise restore_timeout_s, or use a store with local checkpoints"
                )


def _fmt_ranges(cps: Iterable[TP], starts: dict[TP, int], ends: dict[TP, int]) -> str:
    return ", ".join(f"{t}[{p}] {starts.get((t, p), '?')}..{ends.get((t, p), '?')}" for t, p in sorted(cps))
