"""The store benchmark's pure parts (no broker): workloads, the same-values check, the report, the documents."""

from __future__ import annotations

import json

from services.bench.stores import KINDS, StoresReport, run_updates, template_documents, workloads
from topology.state import StateGroup, WindowStore


def test_workloads_cover_window_kinds_and_functions_and_end_with_all_of_fraud_yaml() -> None:
    loads = workloads()
    kinds = {(s.aggregate.window.kind, s.aggregate.function) for _, slots in loads[:-1] for s in slots}
    assert {("sliding", "count"), ("sliding", "sum"), ("sliding", "distinct_count")} <= kinds
    assert {("tumbling", "count"), ("tumbling", "sum"), ("hopping", "distinct_count")} <= kinds
    name, every = loads[-1]
    assert name.startswith("fraud.yaml")
    assert {s.stage for s in every} == {0, 1}


def test_every_store_returns_the_window_values_of_the_in_memory_store() -> None:
    lines: list[str] = []
    updates = run_updates(600, 50, 3, KINDS, lines.append, repeat=1)
    assert len(updates) == len(workloads()) * len(KINDS)
    assert all(u.same_values for u in updates), [(u.workload, u.store) for u in updates if not u.same_values]
    assert {u.store for u in updates} == set(KINDS)
    assert all(u.records == 600 and u.flushes == 12 for u in updates)
    assert any(u.adds > 0 and u.flushed_keys > 0 for u in updates)
    report = StoresReport({"cpus": 2}, 600, 50, 1, 0, 3, updates=updates)
    doc = json.loads(json.dumps(report.as_json()))
    assert {"add_us_per_record", "flush_us_per_key", "us_per_record", "same_values"} <= doc["updates"][0].keys()
    assert doc["restores"] == []


def test_template_documents_are_changelog_values_the_first_stage_restores() -> None:
    docs = template_documents(2_000)
    (_, slots) = workloads()[-1]
    first = [s for s in slots if s.stage == 0]
    stores = [WindowStore(s.name, s.aggregate, "c") for s in first]
    group = StateGroup("c", stores)
    for i, doc in enumerate(docs):
        group.restore(0, f"k{i}".encode(), doc)
    assert len({k for s in stores for k in s.keys(0)}) == len(docs) > 100
