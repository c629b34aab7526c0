"""setuptools' entry point. ``pyproject.toml`` holds the project; this file only adds the compiled engine.

With ``FRAUDSTREAM_COMPILE=1`` (``make install`` sets it) the modules of ``COMPILED`` are also built as
C extensions by mypyc, from the same typed Python, in place beside their sources: Python imports the
extension where one exists. They run the same code as the sources; ``topology.build`` refuses to run
an extension older than its source, and ``make install COMPILE=0`` removes them (pure Python). The group's
shared library is ``topology/engine__mypyc``: inside the package, where console scripts find it.
Measured (docs/benchmarks.md, run 9, 2026-12-07): fraud.yaml in process 46.8-48.8 -> 33.0-33.7 µs per record
(1.45x); on Kafka 56-62 -> 44-54 µs CPU per record. Compiling the runtime loop measured +2 % (run 11), so it
stays interpreted. The Avro writer (the FraudAlert of every fraud decision) is compiled since run 12: one hot
payer's traffic in process 39.6-40.0 -> 35.7-36.2 µs per record (its hot records alone 1.74x -> 1.42x a normal
one), normal traffic unchanged.
"""

from __future__ import annotations

import os

from setuptools import setup

# The per-record path of a stateful topology. They are compiled together: a compiled module calls another
# one's classes natively, so one of them left interpreted would meet the others' native type checks.
COMPILED = [
    "topology/plan/expr.py",
    "topology/processor/compiled.py",
    "topology/processor/decisions.py",
    "topology/processor/lookahead.py",
    "topology/processor/processor.py",
    "topology/processor/stages.py",
    "topology/processor/stores.py",
    "topology/serde/scan.py",
    "topology/serde/writer.py",
    "topology/state/bounds.py",
    "topology/state/group.py",
    "topology/state/keys.py",
    "topology/state/partitions.py",
    "topology/state/rocksdb.py",
    "topology/state/window.py",
]

ext_modules = []
if os.environ.get("FRAUDSTREAM_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3", group_name="topology.engine")

setup(ext_modules=ext_modules)
