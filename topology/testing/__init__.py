"""Testing without a broker: fake Kafka clients (``fakes``) and the ``TopologyTestDriver`` that runs
the real exactly-once runtime over them (``driver``)."""
