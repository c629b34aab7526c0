"""A Kafka Streams-style topology engine in Python, and the fraud topology."""
