"""The exactly-once loop: consume, process, produce and commit offsets in one transaction.

It knows nothing about fraud: it feeds every input record, as a ``RawRecord``, to a
``Processor`` (``topology.records``) and writes what comes back. One loop, no hidden threads::

    init_transactions()                       # fences a zombie with the same transactional.id
    subscribe(sources, on_assign/on_revoke/on_lost)
    loop:
        restore a slice of any newly assigned state (those partitions stay paused until done)
        consume(batch)                        # read_committed, no auto commit
        begin_transaction() on the first record of a transaction
        process + produce every record        # outputs, dead letters, repartition records
        every commit_interval_ms or max_batch records:
            produce processor.flush()         # changelog records of the state changed
            send_offsets_to_transaction(offsets, consumer_group_metadata())
            commit_transaction(); processor.committed()

A topology with a later stage reads its source partitions in event-time order
(``topology.runtime.order``): the records consumed are held per partition and processed lowest event
time first, so the repartition topic is written in event time even from a backlog.

Rebalancing uses the **cooperative-sticky** assignor (``topology.runtime.rebalance``): ``on_revoke``
commits the open transaction and checkpoints the partitions' state, ``on_lost`` aborts it, and
``on_assign`` pauses the new partitions that have state until the loop has restored them
(``topology.runtime.restore``), while the other partitions go on.

Errors: a processing error aborts the transaction: ``processor.aborted()`` puts the state back
to the last commit (no changelog replay), every partition of the transaction is sought back to
the first offset it read, and after a backoff the records are read again; after
``max_retries`` failures of the same record it is dead-lettered (``on_error="dead-letter"``) or
the runtime stops (``on_error="fail"``). Abortable Kafka errors abort and rewind; retriable ones
retry the call; a fatal producer error that is not fencing replaces the producer; fencing and
other fatal errors raise ``FatalRuntimeError`` without committing anything.
The end of a transaction (commit, abort, recovery) is ``topology.runtime.commit``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topology.records import TP, Processor
from topology.runtime.batch import BatchProcessing
from topology.runtime.clients import ClientFactory, ConsumerClient, KafkaClients, MessageLike
from topology.runtime.collector import young_threshold
from topology.runtime.commit import Committer
from topology.runtime.errors import FatalRuntimeError, fatal_error, kafka_error
from topology.runtime.failures import Failures, Refusals
from topology.runtime.order import TimeOrder
from topology.runtime.outage import KafkaOutage
from topology.runtime.partitions import Partitions
from topology.runtime.producers import Producers
from topology.runtime.rebalance import Rebalance
from topology.runtime.restore import Progress, Restorer
from topology.runtime.settings import RuntimeSettings, consumer_config
from topology.runtime.stats import CommitReport, RuntimeStats
from topology.runtime.topics import ensure_topics
from topology.runtime.transaction import Transaction, TransactionalProducer

log = logging.getLogger("fraudstream.runtime")


class Abort(Exception):
    """The open transaction was aborted and its input will be read again (control flow inside a step)."""


class ExactlyOnceRuntime:
    """Runs one processor on Kafka with exactly-once semantics (see the module docstring)."""

    def __init__(
        self,
        processor: Processor,
        settings: RuntimeSettings,
        *,
        clients: ClientFactory | None = None,
        on_commit: Callable[[CommitReport], None] | None = None,
        on_restore_progress: Progress | None = None,
    ) -> None:
        self.processor = processor
        self.settings = settings
        self.stats = RuntimeStats()
        self.clients: ClientFactory = clients or KafkaClients()
        self.dlq_topic = settings.dlq_topic or processor.dlq_topic
        if settings.on_error == "dead-letter" and self.dlq_topic is None:
            raise ValueError("on_error='dead-letter' needs a dlq_topic (setting or processor attribute)")
        self._stop = False
        self._fatal: KafkaError | None = None  # from the clients' error callback
        self.outage = KafkaOutage(log)  # one line when the broker stops answering, one when it is back
        self._callback_error: BaseException | None = None  # raised in a rebalance callback
        self.partitions = Partitions()
        self.failures = Failures(settings)
        self.refusals = Refusals(settings, self.failures)  # commits refused for a record in them: bisect
        self.txn: Transaction | None = None
        self._consumer: ConsumerClient | None = None
        self.restorer = Restorer(self.clients, settings, processor, on_restore_progress)
        self._batch = BatchProcessing(self)
        self.order = TimeOrder.of(processor, settings.max_task_idle_ms)  # None: fetch order is fine
        self._rebalance = Rebalance(self)
        self.producers = Producers(self.clients, settings, self.outage, self._on_error)
        self.committer = Committer(self, on_commit)

    # ------------------------------------------------------------------ public

    @property
    def transactional_id(self) -> str:
        return self.settings.transactional_id

    def request_stop(self) -> None:
        """Ask the loop to commit the open transaction, leave the group and return (signal-safe)."""
        self._stop = True

    def run(
        self,
        stop: Callable[[], bool] | None = None,
        on_tick: Callable[[RuntimeStats], None] | None = None,
        tick_interval_s: float = 10.0,
        between_transactions: Callable[[], None] | None = None,
    ) -> None:
        """Run until ``request_stop()`` or ``stop()`` is true; raise ``FatalRuntimeError`` on fatal errors.

        ``between_transactions`` runs after every loop step that leaves no transaction open (after a
        commit or an abort, or while idle), never while one is open: the place for changes that must
        not split a transaction, such as run-time rule changes. ``on_tick`` may run in either state.
        """
        with young_threshold(self.settings.gc_threshold):
            self._run(stop, on_tick, tick_interval_s, between_transactions)

    def _run(
        self,
        stop: Callable[[], bool] | None,
        on_tick: Callable[[RuntimeStats], None] | None,
        tick_interval_s: float,
        between_transactions: Callable[[], None] | None,
    ) -> None:
        self.open()
        next_tick = time.monotonic() + tick_interval_s
        failed: BaseException | None = None
        try:
            try:
                while not self._stop and not (stop is not None and stop()):
                    self.step()
                    if between_transactions is not None and self.txn is None:
                        between_transactions()
                    if on_tick is not None and time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + tick_interval_s
                        on_tick(self.stats)
                self.commit()
            except KafkaException as exc:  # raised by a client call not handled where it is made (e.g. poll)
                raise fatal_error(kafka_error(exc), "kafka client", self.transactional_id) from exc
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self.close(failed)

    def open(self) -> None:
        """Create missing topics, start the transactional producer, subscribe."""
        s = self.settings
        if s.create_topics:
            ensure_topics(self.clients, s, self.processor, self.dlq_topic)
        self.producers.start()
        consumer = self.clients.consumer(consumer_config(s, self._on_error))
        self._consumer = consumer
        r = self._rebalance
        consumer.subscribe(
            list(self.processor.source_topics), on_assign=r.on_assign, on_revoke=r.on_revoke, on_lost=r.on_lost
        )
        log.info(
            "runtime %s started: sources %s, sinks %s", self.transactional_id,
            ",".join(self.processor.source_topics), ",".join(self.processor.sink_topics),
        )  # fmt: skip

    def step(self) -> None:
        """One turn of the loop: restore a slice, consume a batch, process it, commit when due."""
        if self.txn is None and self.producers.stale:  # librdkafka may hang after an outage: start afresh
            log.info("replacing the producer after a broker outage")
            self.replace_producer()
        consumer, producer = self.clients_in_use()
        s = self.settings
        self._rebalance.restore_step(consumer)
        timeout = 0.0 if self.restorer.pending else 0.1  # restoring: the restore step is the wait
        if self.txn is not None:
            timeout = min(max(self.txn.started + s.commit_interval_ms / 1000.0 - time.monotonic(), 0.0), 0.1)
        max_batch = self.refusals.max_batch
        want = max(1, min(s.consume_batch, max_batch - (self.txn.records if self.txn else 0)))
        # consume(n, t) blocks until n messages or t have passed, which at low input rates delays every
        # record by t: take what is fetched already, else wait for the first record only.
        messages: list[MessageLike] = []
        if self.order is None or not self.order.full:
            messages = list(consumer.consume(want, 0))
            if not messages:
                first = consumer.poll(timeout)
                messages = [] if first is None else [first]
        if self.order is not None:  # held back until every partition of the order has its turn
            messages = self.order.take(messages, self.partitions.assigned, self.partitions.restoring, consumer, want)
        producer.producer.poll(0)  # serve the producer's error callback (delivery reports are errors only)
        self._check_async_errors()
        if messages:
            try:
                self._batch.process(messages, producer)
            except Abort:
                return
        if self.txn is not None and self.txn.expired(s.commit_interval_ms / 1000.0, max_batch):
            self.commit()

    def commit(self) -> bool:
        """Commit the open transaction (if any) with its offsets and state; on an abortable error abort and rewind."""
        return self.committer.commit()

    def abort(self, reason: str, level: int = logging.INFO) -> None:
        """Abort the open transaction: state back to the last commit, its partitions back to their first
        offset; logged at ``level``."""
        self.committer.abort(reason, level)

    def close(self, failed: BaseException | None = None) -> None:
        """Leave the group (a clean stop commits and checkpoints first) and close the clients."""
        consumer, producer = self._consumer, self.producers.current
        if failed is not None:
            # Commit nothing more: on_revoke (called by close) sees this and skips its commit.
            self._fatal = self._fatal or KafkaError(KafkaError._FATAL, repr(failed), fatal=True)
        elif self.processor.changelog_topics:
            with contextlib.suppress(Exception):
                self.checkpoint(self.partitions.active())
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()  # leaves the group
        if producer is not None:
            if not isinstance(failed, FatalRuntimeError) and producer.in_flight:
                with contextlib.suppress(Exception):
                    producer.abort()
            if failed is None:
                producer.producer.flush(self.settings.kafka_timeout_s)
        self.restorer.close()
        log.info(
            "runtime %s stopped: %d in, %d out, %d dead letters, %d commits, %d aborts", self.transactional_id,
            self.stats.records_in, sum(self.stats.records_out.values()), self.stats.dead_letters,
            self.stats.transactions_committed, self.stats.transactions_aborted,
        )  # fmt: skip

    def checkpoint(self, parts: list[TP]) -> None:
        """Tell the processor which changelog offsets its committed state of ``parts`` covers (no txn open)."""
        if self.txn is not None or not parts:
            return
        cps = {cp for tp in parts for cp in self.processor.changelog_partitions(*tp)}
        if cps:
            self.processor.checkpoint({cp: self.restorer.end_offset(cp) for cp in sorted(cps)})

    # ------------------------------------------------------------- inside

    def clients_in_use(self) -> tuple[ConsumerClient, TransactionalProducer]:
        """The consumer and the current producer (``open()`` first)."""
        producer = self.producers.current
        assert self._consumer is not None and producer is not None, "open() first"
        return self._consumer, producer

    def begin(self) -> Transaction:
        """The open transaction, begun now if none is."""
        if self.txn is None:
            _, producer = self.clients_in_use()
            try:
                producer.begin()
            except KafkaException as exc:
                raise fatal_error(kafka_error(exc), "begin_transaction", self.transactional_id) from exc
            self.txn = Transaction()
        return self.txn

    def can_commit(self) -> bool:
        """Whether a commit (or abort) may be tried: a producer exists and no fatal error was reported."""
        return self.producers.current is not None and self._fatal is None

    def callback_failed(self, exc: BaseException) -> None:
        """A rebalance callback failed: the loop raises ``exc`` at its next step (never into librdkafka)."""
        self._callback_error = exc

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        else:
            self.outage.client_error(error)

    def _check_async_errors(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            if isinstance(error, FatalRuntimeError):
                raise error
            raise FatalRuntimeError(f"rebalance callback failed: {error!r}") from error
        if self._fatal is not None:
            raise fatal_error(self._fatal, "kafka client", self.transactional_id)

    def fatal(self, error: KafkaError | None, where: str) -> FatalRuntimeError | None:
        """The fatal error to stop with, if ``error`` or the clients' callback reported one."""
        err = self._fatal or error
        if err is None or not (err.fatal() or self._fatal is not None):
            return None
        return fatal_error(err, where, self.transactional_id)

    def replace_producer(self) -> None:
        """A new producer in place of the current one (its fatal error, if any, goes with it)."""
        self.producers.replace()
        self._fatal = None  # the fatal error was the old producer's

    def seek(self, consumer: ConsumerClient, tp: TP, offset: int) -> None:
        """Go on from ``offset`` in ``tp`` (what was fetched or held beyond it is read again)."""
        if self.order is not None:
            self.order.drop([tp], consumer)
        for attempt in range(50):
            try:
                consumer.seek(TopicPartition(tp[0], tp[1], offset))
                break
            except KafkaException as exc:
                if attempt == 49:
                    raise FatalRuntimeError(f"cannot rewind {tp[0]}[{tp[1]}] to {offset}: {exc}") from exc
                time.sleep(0.1)
        self.partitions.expected[tp] = offset
