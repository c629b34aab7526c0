"""The fraud detector service: the fraud topology on the exactly-once Kafka runtime (`fraudstream detect`)."""

from pathlib import Path

FRAUD_TOPOLOGY = Path(__file__).resolve().parent / "fraud.yaml"
"""The packaged fraud topology, the detector's default."""
