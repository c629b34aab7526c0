"""Whole-batch paths: polars decoding of a batch of values and the stateless branch decision per row."""
