"""How the runtime classifies Kafka errors, and its own fatal errors."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTION_COORDINATOR_FENCED,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class FatalRuntimeError(Exception):
    """The runtime cannot go on (fatal Kafka error, or a record failed under ``on_error="fail"``)."""

    exit_code = 2


class PartitionCountError(FatalRuntimeError):
    """An input topic's partition count differs from its changelog's (found at start, or at an assignment
    after partitions were added to the input while running): an operator has to decide, so not restarted
    into the same error by a supervisor that tells exit codes apart."""

    exit_code = 4


class FencedError(FatalRuntimeError):
    """Another instance with the same ``transactional.id`` (or group instance id) took over."""

    exit_code = 3


def is_fenced(error: KafkaError) -> bool:
    """Whether ``error`` means another instance took over this one's identity."""
    return error.code() in _FENCED_CODES


def kafka_error(exc: KafkaException) -> KafkaError:
    """The ``KafkaError`` inside a ``KafkaException``."""
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, KafkaError):
        return arg
    return KafkaError(KafkaError._FAIL, str(exc), fatal=True)


def fatal_error(error: KafkaError, where: str, transactional_id: str) -> FatalRuntimeError:
    """The runtime error that stops the loop for ``error`` (a ``FencedError`` when fenced)."""
    if is_fenced(error):
        return FencedError(
            f"{transactional_id} was fenced ({where}: {error.name()}: {error.str()}): another "
            "instance with the same transactional.id took over; this instance stops without committing"
        )
    return FatalRuntimeError(f"fatal Kafka error in {where}: {error.name()}: {error.str()}")


def backoff_seconds(failures: int, base_ms: int, cap_ms: int) -> float:
    """Exponential backoff before retry number ``failures`` (1-based): base, 2*base, ... up to cap."""
    return float(min(base_ms * (2 ** max(0, failures - 1)), cap_ms)) / 1000.0
