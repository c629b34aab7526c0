"""A generic Kafka Streams-style topology engine in Python: plans, serdes, state, runtime, testing."""

from topology.build import select

select(__path__[0])
