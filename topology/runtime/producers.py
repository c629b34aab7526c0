"""The runtime's transactional producer: made, replaced when it cannot go on, the replaced ones kept a while."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from confluent_kafka import KafkaException

from topology.runtime.clients import ClientFactory
from topology.runtime.errors import fatal_error, kafka_error
from topology.runtime.outage import KafkaOutage
from topology.runtime.settings import ErrorCallback, RuntimeSettings, producer_config
from topology.runtime.transaction import TransactionalProducer


@dataclass(eq=False, repr=False)  # identity, and no repr of the settings (client secrets)
class Producers:
    """The current ``TransactionalProducer`` of one runtime, and the ones it replaced.

    The runtime replaces its producer after a fatal error that is not fencing, after a transactional call
    that timed out or lost the broker, and before the next transaction after any broker outage since the
    producer was made (``stale``): librdkafka may hang in a transactional call then (seen here after a
    broker SIGKILL and restart). The new producer has the same ``transactional.id``: its
    ``init_transactions`` waits the outage out and completes or aborts what the old one left open. The
    replaced handles stay alive a while: destroying one with a call still hanging could block too.
    """

    clients: ClientFactory
    settings: RuntimeSettings
    outage: KafkaOutage
    on_error: ErrorCallback
    current: TransactionalProducer | None = field(default=None, init=False)
    _retired: list[TransactionalProducer] = field(default_factory=list, init=False)

    @property
    def stale(self) -> bool:
        """Whether a broker outage began since the current producer was made."""
        return self.current is not None and self.current.outages != self.outage.outages

    def start(self) -> TransactionalProducer:
        """A new producer, its transactions initialised (``FatalRuntimeError`` when that fails)."""
        s = self.settings
        producer = TransactionalProducer(
            self.clients.producer(producer_config(s, self.on_error)), s.kafka_timeout_s, s.outage_patience_s,
            self.outage,
        )  # fmt: skip
        try:
            producer.init()
        except KafkaException as exc:
            raise fatal_error(kafka_error(exc), "init_transactions", s.transactional_id) from exc
        self.current = producer
        return producer

    def replace(self) -> TransactionalProducer:
        """A new producer in place of the current one, whose queued records are purged."""
        old = self.current
        if old is not None:
            with contextlib.suppress(Exception):
                old.producer.purge()
            self._retired = [*self._retired[-4:], old]
        return self.start()
