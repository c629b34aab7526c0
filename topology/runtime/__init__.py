"""The exactly-once Kafka runtime (see ``topology.runtime.loop`` for the loop and its guarantees).

- ``loop``: ``ExactlyOnceRuntime``, the consume-process-produce loop and its rebalance callbacks;
- ``batch``: one consumed batch through the processor (the hot path);
- ``commit``: how the open transaction ends (commit, abort, recovery after a producer failure);
- ``transaction``: the transactional producer and what one transaction read and wrote;
- ``restore``: changelog replay into the processor, a bounded slice at a time;
- ``order``: event-time order across the source partitions of a topology with a later stage;
- ``clients``: the client protocols and the factory (real clients, or ``topology.testing`` fakes);
- ``collector``: the garbage collector's young threshold while the loop runs;
- ``settings``, ``errors``, ``failures``, ``partitions``, ``stats``, ``topics``.
"""

from topology.records import TP, Processor, ProcessorBase
from topology.runtime.clients import ClientFactory, KafkaClients
from topology.runtime.errors import (
    FatalRuntimeError,
    FencedError,
    PartitionCountError,
    backoff_seconds,
    is_fenced,
    kafka_error,
)
from topology.runtime.failures import dead_letter
from topology.runtime.loop import ExactlyOnceRuntime
from topology.runtime.settings import RuntimeSettings, consumer_config, producer_config
from topology.runtime.stats import CommitReport, RuntimeStats, quantile

__all__ = [
    "TP",
    "ClientFactory",
    "CommitReport",
    "ExactlyOnceRuntime",
    "FatalRuntimeError",
    "FencedError",
    "KafkaClients",
    "PartitionCountError",
    "Processor",
    "ProcessorBase",
    "RuntimeSettings",
    "RuntimeStats",
    "backoff_seconds",
    "consumer_config",
    "dead_letter",
    "is_fenced",
    "kafka_error",
    "producer_config",
    "quantile",
]
