"""Pure benchmarks (no Kafka): ``python -m bench.processor``."""
