"""One log line when a dependency (the broker, the registry) stops answering, one when it is back.

Kafka's clients retry through a broker outage on their own; what a long-running service owes its
operator is to say so once, not once per failed connection. ``Outage`` holds that state for one
dependency. ``KafkaOutage`` reads the clients' error callback, and ``CLIENT_LOGGER`` is the
librdkafka logger that drops the per-connection failure lines the callback already reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

# Error-callback codes meaning "no broker answers" (librdkafka keeps reconnecting by itself).
UNREACHABLE = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})

# librdkafka log facilities that repeat, per broker connection, what ``UNREACHABLE`` errors say.
# SESSTMOUT: a group member's session ran out while the coordinator could not be reached.
_CONNECTION_NOISE = frozenset({"FAIL", "ERROR", "REQTMOUT", "SESSTMOUT"})


class _ConnectionNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and args[0] in _CONNECTION_NOISE)


# The ``logger`` of every long-running client: librdkafka's own lines, without the connection noise.
# (confluent-kafka logs them as ``log(level, "%s [%s] %s", facility, client, message)``.)
CLIENT_LOGGER = logging.getLogger("fraudstream.librdkafka")
CLIENT_LOGGER.addFilter(_ConnectionNoise())


class Outage:
    """Whether ``what`` is unreachable, logging the change each way once.

    ``settle_s``: a success reported sooner after the outage began is not taken as its end, and a failure
    reported sooner after it ended does not begin another. Clients report both late (a delivery report
    or a prefetched record served after the connection dropped; an error callback queued while a call
    blocked), and each would otherwise log an outage of a fraction of a second.
    """

    def __init__(
        self, what: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic, settle_s: float = 0.0
    ) -> None:
        self.what = what
        self._log = log
        self._clock = clock
        self._settle_s = settle_s
        self._ended = float("-inf")  # clock time the last outage ended
        self.since: float | None = None  # clock time the current outage began (None: reachable)
        self.outages = 0  # outages begun so far
        self._next_probe = float("-inf")  # clock time from which ``probe_due`` says yes again

    @property
    def down(self) -> bool:
        return self.since is not None

    def lost(self, reason: str, since: float | None = None) -> None:
        """``what`` did not answer (in a call begun at clock time ``since``, if known): log the start of an
        outage unless one is going on."""
        if self.since is None and self._clock() - self._ended >= self._settle_s:
            self.since = self._clock() if since is None else since
            self.outages += 1
            self._log.warning("%s unreachable (%s): waiting for it, retrying", self.what, reason)

    def probe_due(self, every_s: float) -> bool:
        """Whether to ask ``what`` now if it answers: during an outage, at most once every ``every_s``. For a
        client with nothing to read, whose outage no answer would end otherwise; an answer is ``back()``."""
        if self.since is None or self._clock() < self._next_probe:
            return False
        self._next_probe = self._clock() + every_s
        return True

    def back(self) -> None:
        """``what`` answered: log the end of the outage, if there was one."""
        if self.since is not None and self._clock() - self.since >= self._settle_s:
            self._log.warning("%s reachable again after %.1f s", self.what, self._clock() - self.since)
            self.since, self._ended = None, self._clock()


class KafkaOutage(Outage):
    """The broker's outage state, fed by the clients' ``error_cb`` (``client_error``)."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic, settle_s: float = 1.0) -> None:
        super().__init__("the Kafka broker", log, clock, settle_s)

    def client_error(self, error: KafkaError) -> None:
        """A non-fatal client error: an outage begins, or a one-line warning (fatal ones are the caller's)."""
        if error.code() in UNREACHABLE:
            self.lost(error.str())
        elif not error.fatal():
            self._log.warning("kafka client: %s: %s", error.name(), error.str())
