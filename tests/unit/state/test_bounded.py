"""Bounded state decides as the unbounded reference store (tests/unit/state/reference_store.py, the
store as it was before bounds) over random seeded streams, and stays bounded for a hot key."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import pytest

from services.config import GeneratorSettings
from services.detector import FRAUD_TOPOLOGY, load_topology
from services.generator.produce import stream_config
from services.generator.scenarios import TransactionStream
from tests.unit.state import reference_store as ref
from tests.unit.topology_support import TX_KEY, serde
from topology.plan.model import Aggregate, PlanError, Window
from topology.processor import COMPARE, TopologyProcessor
from topology.records import H_RULES
from topology.state import StateBackend, StateGroup, WindowStore
from topology.state.bounds import EXACT, Bounds
from topology.testing.driver import TopologyTestDriver

OPS = COMPARE
S = 1000


def _aggregate(rng: random.Random, function: str, kind: str) -> Aggregate:
    size = rng.choice([10 * S, 60 * S, 180 * S])
    grace = rng.choice([0, 5 * S, 30 * S])
    advance = size // rng.choice([2, 3, 5]) if kind == "hopping" else None
    threshold = {
        "count": [1, 2, 5, 10, 63, 64, 100, 130],
        "sum": [50, 1200, 5000],
        "distinct_count": [2, 3, 5, 64, 100],
    }[function]
    return Aggregate(
        function,  # type: ignore[arg-type]
        ("k",),
        Window(kind, size, grace, advance),  # type: ignore[arg-type]
        rng.choice(list(OPS)),  # type: ignore[arg-type]
        Decimal(rng.choice(threshold)),
        None if function == "count" else "f",
        name="a",
        related=kind == "sliding" and rng.random() < 0.5,
    )


@dataclass
class Tally:
    decisions: int = 0
    differing: int = 0
    evidence_checked: int = 0


def _stream(
    rng: random.Random, n: int, agg: Aggregate, *, hot: bool, disorder: float, negative: bool
) -> Iterable[tuple[bytes, int, Any, str]]:
    w = agg.window
    step = max(1, w.size_ms // (3_000 if hot else 30))
    pool = rng.choice([5, 50, 5_000])
    t = 0
    for i in range(n):
        t += rng.randint(0, 2 * step)
        key = b"hot" if hot and rng.random() < 0.9 else f"k{rng.randint(0, 9)}".encode()
        when = t - rng.randint(0, w.grace_ms + w.grace_ms // 4 + 1) if rng.random() < disorder else t
        if agg.function == "sum":
            value: Any = Decimal(rng.randint(-5_000 if negative else 100, 50_000)) / 100
        else:
            value = f"v{rng.randint(0, pool)}"
        yield key, when, value, f"tx-{i}"


def _compare(
    agg: Aggregate, events: Iterable[tuple[bytes, int, Any, str]], tally: Tally, *, exact_evidence: bool = True
) -> WindowStore:
    old = ref.WindowStore("a", agg, "c")
    new = WindowStore("a", agg, "c")
    bounds, op, threshold = new.bounds, OPS[agg.op], agg.threshold
    for key, t, v, ident in events:
        want, got = old.add(0, key, t, v, ident), new.add(0, key, t, v, ident)
        assert len(want) == len(got)
        for a, b in zip(want, got, strict=True):
            tally.decisions += 1
            tally.differing += op(a, threshold) != op(b, threshold)
            if not exact_evidence:
                continue
            if agg.function == "count" and agg.window.kind != "sliding":
                assert b == a, (a, b)  # a window's count is kept as it is
                tally.evidence_checked += 1
            elif agg.function != "sum":
                assert b == min(a, bounds.cap), (a, b)
                tally.evidence_checked += 1
            elif a <= bounds.sum_cap and new.inexact == 0:
                assert b == a, (a, b)
                tally.evidence_checked += 1
    return new


CASES = [(f, k) for f in ("count", "sum", "distinct_count") for k in ("sliding", "tumbling", "hopping")]


@pytest.mark.parametrize(("function", "kind"), CASES)
def test_every_decision_matches_the_unbounded_store_in_order_and_out_of_order(function: str, kind: str) -> None:
    tally = Tally()
    for seed in range(12):
        rng = random.Random(seed * 31 + len(function) + len(kind))
        agg = _aggregate(rng, function, kind)
        hot = seed % 3 == 0  # a hot key in order (reductions), or out of order with no crowded grace period
        disorder = 0.0 if hot else 0.3 * (seed % 2)
        stream = _stream(rng, 6_000 if hot else 2_000, agg, hot=hot, disorder=disorder, negative=seed == 4)
        _compare(agg, stream, tally)
    assert tally.differing == 0
    assert tally.decisions > 10_000 and tally.evidence_checked > tally.decisions // 5


def test_a_hot_key_in_order_is_exact_through_many_reductions() -> None:
    rng = random.Random(3)
    for function in ("count", "sum", "distinct_count"):
        tally = Tally()
        agg = Aggregate(
            function,
            ("k",),
            Window("sliding", 180 * S, 30 * S),
            ">=",
            Decimal(10 if function != "sum" else 1200),
            None if function == "count" else "f",
            name="a",
        )
        store = _compare(agg, _stream(rng, 20_000, agg, hot=True, disorder=0.0, negative=False), tally)
        assert tally.differing == 0 and tally.decisions == 20_000
        assert store.entry(0, b"hot") is not None
        assert len(store.entry(0, b"hot")[1]) <= store.bounds.high  # type: ignore[index]


@pytest.mark.parametrize("function", ["count", "distinct_count", "sum"])
def test_out_of_order_with_a_crowded_grace_period_is_the_one_inexact_case_and_is_counted(function: str) -> None:
    """More than 2 * ``cap`` events of one key within the grace period, and records arriving out of
    order among them: the grace part is reduced, and a late record's window may be undercounted."""
    tally = Tally()
    inexact = 0
    for seed in range(4):
        rng = random.Random(seed)
        threshold = Decimal(1200 if function == "sum" else 40)
        field = None if function == "count" else "f"
        window = Window("sliding", 60 * S, 30 * S)
        agg = Aggregate(function, ("k",), window, ">=", threshold, field, name="a")  # type: ignore[arg-type]
        # ~ 3,000 events per minute, 90% of them for one key, 30% of them up to 37 s late
        events = _stream(rng, 5_000, agg, hot=True, disorder=0.3, negative=False)
        inexact += _compare(agg, events, tally, exact_evidence=False).inexact
    assert inexact > 0
    assert tally.differing < tally.decisions // 100, tally  # rare even in this adversarial stream
    print(f"crowded grace period, {function}: {tally.differing} of {tally.decisions} decisions differ")


def test_tiny_amounts_are_bucketed_within_one_bucket_width_of_the_window() -> None:
    agg = Aggregate("sum", ("k",), Window("sliding", 60 * S, 10 * S), ">=", Decimal(10_000), "f", name="a")
    new = WindowStore("a", agg, "c")
    events: list[tuple[int, Decimal]] = []
    width = new.bounds.bucket_ms
    for i in range(12_000):
        t, v = i * 10, Decimal("0.01")  # 100 events a second, 60 in a window: never reaches the cap
        (got,) = new.add(0, b"k", t, v)
        events.append((t, v))
        if i % 7:
            continue
        window = sum((x for s, x in events if t - 60 * S < s <= t), Decimal(0))
        wider = sum((x for s, x in events if t - 60 * S - width < s <= t), Decimal(0))
        assert window <= got <= wider
        events = [(s, x) for s, x in events if s > t - 61 * S - width]
    assert new.inexact > 0
    assert len(new.entry(0, b"k")[1]) <= new.bounds.high  # type: ignore[index]


def test_a_million_events_in_one_window_keep_state_and_the_changelog_document_bounded() -> None:
    aggs = [
        Aggregate("count", ("k",), Window("sliding", 3_600 * S, 30 * S), ">=", Decimal(10), name="c", related=True),
        Aggregate("sum", ("k",), Window("sliding", 3_600 * S, 30 * S), ">=", Decimal(1200), "f", name="s"),
        Aggregate("distinct_count", ("k",), Window("sliding", 3_600 * S, 30 * S), ">=", Decimal(5), "f", name="d"),
    ]
    stores = [WindowStore(a.name, a, "c") for a in aggs]
    group = StateGroup("c", stores)
    limit = group.max_document_bytes()
    biggest = 0
    for i in range(1_000_000):  # all within one hour: one window holds them all
        t = i * 3
        stores[0].add(0, b"hot", t, True, f"transaction-{i:012d}")
        stores[1].add(0, b"hot", t, Decimal(i % 1000) / 10)
        stores[2].add(0, b"hot", t, f"target-{i}")
        if i % 50_000 == 0:
            (entry,) = group.flush()
            assert entry[2] is not None
            biggest = max(biggest, len(entry[2]))
    assert stores[0].add(0, b"hot", 3_000_000, True, "last") == (stores[0].bounds.cap,)
    assert biggest <= limit < 200_000
    for s in stores:
        assert len(s.entry(0, b"hot")[1]) <= s.bounds.high  # type: ignore[index]


def test_caps_are_in_the_state_id_and_saturate_every_comparison() -> None:
    def agg(t: int) -> Aggregate:
        return Aggregate("count", ("k",), Window("sliding", 60 * S), ">=", Decimal(t), name="a")

    assert Bounds.of(agg(10)).cap == EXACT and Bounds.of(agg(64)).cap == 128 and Bounds.of(agg(100)).cap == 128
    store = WindowStore("a", agg(10), "c")
    assert store.with_aggregate(agg(63)).state_id == store.state_id  # within the cap: same state
    with pytest.raises(ValueError, match="keeps other state"):
        store.with_aggregate(agg(64))  # beyond it: fresh state
    with pytest.raises(PlanError):
        Aggregate("count", ("k",), Window("tumbling", 60 * S), ">=", Decimal(1), name="a", related=True)


def test_a_topology_whose_changelog_records_could_be_too_large_is_refused() -> None:
    s = serde("bounded")
    topology = load_topology(FRAUD_TOPOLOGY)
    TopologyProcessor(topology, s.decoder.decode, version="v")  # fits in 1 MB
    with pytest.raises(ValueError, match=r"stage 0 .*velocity-count.* max_record_bytes=100,000"):
        TopologyProcessor(topology, s.decoder.decode, version="v", max_record_bytes=100_000)


# ---------------------------------------------------------------- fraud.yaml on the generator's default mix


class _ReferenceGroup(ref.StateGroup):
    def committed(self, *, confirmed: bool = True) -> None:
        """The reference keeps no undo log."""

    def aborted(self) -> int:
        raise AssertionError("not used")

    def restore_from(self, partition: int) -> int:
        return 0

    def checkpoint(self, partition: int, offset: int) -> None:
        """The reference keeps nothing locally."""


class _ReferenceState:
    """A ``StateBackend`` of the reference (unbounded) stores."""

    def store(self, name: str, aggregate: Aggregate, changelog_topic: str) -> WindowStore:
        return cast(WindowStore, ref.WindowStore(name, aggregate, changelog_topic))

    def group(self, changelog_topic: str, stores: Iterable[WindowStore]) -> StateGroup:
        return cast(StateGroup, _ReferenceGroup(changelog_topic, cast(Any, stores)))


@pytest.mark.python_sources  # the reference stores are duck-typed
def test_fraud_yaml_decides_as_the_unbounded_stores_on_the_default_mix() -> None:
    s = serde("bounded-mix")
    topology = load_topology(FRAUD_TOPOLOGY)
    settings = GeneratorSettings.with_overrides(seed=7, rate=0)
    txs = [g.record for g in TransactionStream(stream_config(settings)).take(30_000)]

    def decisions(state: StateBackend | None) -> dict[str, tuple[str, bytes | None]]:
        processor = TopologyProcessor(topology, s.decoder.decode, version="v", state=state)
        d = TopologyTestDriver(processor, partitions=3, encoder=s.encoder.encode, commit_every=100, key_fields=TX_KEY)
        d.pipe_all(txs)
        d.commit()
        return {
            s.decoder.decode(w.value)["transaction_id"]: (t, dict(w.headers).get(H_RULES))
            for t in topology.sinks
            for w in d.records(t)
        }

    want, got = decisions(cast(StateBackend, _ReferenceState())), decisions(None)
    assert len(want) == len(got) == len(txs)
    differing = sum(want[tx] != got[tx] for tx in want)
    assert differing == 0
    assert sum(1 for t, _ in got.values() if t == topology.branches[0].to) > 100  # rules fired
