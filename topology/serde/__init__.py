"""Avro in the Confluent wire format: the registry-backed decoder, the fast writer, the projected reader."""
