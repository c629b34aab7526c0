"""The fraud detector service: the fraud topology on the exactly-once Kafka runtime (`fraudstream detect`)."""
