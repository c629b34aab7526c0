"""topology.batch.routing + the processor's batch path: the same OutRecords as the per-record path.

Property test with a seeded generator: random stateless topologies (1-3 branches of 1-3 rules,
conditions drawn from comparisons, null tests, ``in`` lists, ``and``/``or``/``not``) over random
transactions (nulls, decimals at the thresholds, unicode strings) with poison values interleaved;
``process_batch`` must return exactly ``[process(r) for r in records]``, and most records must
really take the batch path (so the test cannot pass by falling back).
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

import schemas
from tests.unit.topology_support import TOPIC, Serde, serde, stream, tx
from tests.unit.topology_support import TX as TX_STREAM
from topology.batch.decode import ColumnarDecoder
from topology.plan.model import AllOf, AnyOf, Condition, Rule, Topology
from topology.processor import TopologyProcessor
from topology.records import RawRecord
from topology.serde.decoder import wire_header

AMOUNTS = ["0.01", "1.27", "1.28", "899.99", "900.00", "900.01", "1000", "0.00", "-0.01", "9999999999999999.99"]
LITERALS = ["900", "900.005", "899.999", "1000", "0", "-0.01", "1e3", "123456789012345678"]
TX = schemas.schema_text("transaction")
STRINGS = ["online", "card", "", "m", "é", "z", "XX", "DE"]


@pytest.fixture(scope="module")
def s() -> Serde:
    return serde("vectorized")


def _atom(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"amount {rng.choice(['>=', '>', '<', '<=', '==', '!='])} {rng.choice(LITERALS)}"
    if kind == 1:
        field = rng.choice(["channel", "country", "merchant_category", "currency"])
        return f"{field} {rng.choice(['==', '!=', '<', '>='])} '{rng.choice(STRINGS)}'"
    if kind == 2:
        return f"{rng.choice(['channel', 'country'])} {rng.choice(['==', '!='])} null"
    if kind == 3:
        items = ", ".join(repr(x) if x != "null" else x for x in rng.sample([*STRINGS, "null"], rng.randint(0, 3)))
        return f"{rng.choice(['channel', 'country'])} {rng.choice(['in', 'not in'])} [{items}]"
    if kind == 4:
        items = ", ".join(rng.sample(LITERALS, rng.randint(1, 3)))
        return f"amount in [{items}]"
    if kind == 5:
        return f"event_time {rng.choice(['>=', '<', '=='])} {rng.choice(['1709294400000', '1709294460000', '0'])}"
    if kind == 6:
        return "source_account == target_account" if rng.random() < 0.5 else "amount > amount"
    return rng.choice(["true", "false"])


def _expr(rng: random.Random, depth: int = 0) -> str:
    if depth > 2 or rng.random() < 0.4:
        return _atom(rng)
    op = rng.choice(["and", "or", "not"])
    if op == "not":
        return f"not ({_expr(rng, depth + 1)})"
    return f"({_expr(rng, depth + 1)}) {op} ({_expr(rng, depth + 1)})"


def _condition(rng: random.Random) -> Condition:
    if rng.random() < 0.2:
        parts = tuple(TX_STREAM.expr(_expr(rng)) for _ in range(rng.randint(2, 3)))
        return AllOf(parts) if rng.random() < 0.5 else AnyOf(parts)
    return TX_STREAM.expr(_expr(rng))


def _topology(rng: random.Random) -> Topology:
    builder = stream(TOPIC, dlq="dlq", name="prop").split()
    n = 0
    for b in range(rng.randint(1, 3)):
        rules = []
        for _ in range(rng.randint(1, 3)):
            n += 1
            rules.append(Rule(f"r{n}", _condition(rng), version=rng.randint(1, 3)))
        builder = builder.branch(rules, to=f"out-{b}", name=f"b{b}")
    return builder.default_branch(to="legit", name="legit")


def _records(s: Serde, rng: random.Random, n: int) -> list[RawRecord]:
    out = []
    for i in range(n):
        rec = tx(
            i,
            rng.choice(AMOUNTS) if rng.random() < 0.7 else str(Decimal(rng.randint(1, 200000)).scaleb(-2)),
            source=rng.choice(["acc-1", "acc-2", "shop-1"]),
            target=rng.choice(["shop-1", "acc-1"]),
            minutes=rng.choice([0, 1, -1]),
            channel=rng.choice([None, *STRINGS]),
            country=rng.choice([None, "DE", "XX"]),
            merchant_category=rng.choice([None, "5411"]),
        )
        value: bytes | None = s.encoder.encode(rec)
        r = rng.random()
        if r < 0.02:
            value = value[:-3]  # type: ignore[index]
        elif r < 0.04:
            value = value + b"\x00"  # type: ignore[operator]
        elif r < 0.05:
            value = None
        elif r < 0.06:
            value = wire_header(424242) + value[5:]  # type: ignore[index]
        elif r < 0.07:
            value = b"not avro at all"
        headers = (("trace", b"t")) if rng.random() < 0.1 else ()
        out.append(RawRecord(TOPIC, i % 3, i, rec["source_account"].encode(), value, 1000 + i, headers))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("seed", range(12))
def test_batch_path_gives_exactly_the_per_record_outputs(s: Serde, seed: int) -> None:
    rng = random.Random(seed)
    topology = _topology(rng)
    processor = TopologyProcessor(
        topology, s.decoder.decode, version="v", columnar=ColumnarDecoder(s.registry, TX)
    )
    records = _records(s, rng, 400)
    expected = [processor.process(r) for r in records]
    routing = processor.route_batch([r.value for r in records])
    assert processor.process_batch(records) == expected, [str(r.condition) for r in topology.rules]
    if routing is not None:  # the rules compiled: records took the batch path
        assert sum(c >= 0 for c in routing.codes) > 0


def test_most_random_topologies_compile(s: Serde) -> None:
    """The property test above exercises the vectorised path, not only the fallback."""
    compiled = fast = total = 0
    for seed in range(12):
        rng = random.Random(seed)
        topology = _topology(rng)
        processor = TopologyProcessor(
            topology, s.decoder.decode, version="v", columnar=ColumnarDecoder(s.registry, TX)
        )
        routing = processor.route_batch([r.value for r in _records(s, rng, 400)])
        total += 400
        if routing is not None:
            compiled += 1
            fast += sum(c >= 0 for c in routing.codes)
    assert compiled >= 9
    assert fast > 0.3 * total


def test_unsupported_constructs_keep_the_per_record_path(s: Serde) -> None:
    columnar = ColumnarDecoder(s.registry, schemas.schema_text("transaction"))
    for text in ("amount * 2 > 900", "-amount < 0", "event_time > 1.5"):
        topology = stream(TOPIC, dlq="dlq").split().branch(text, to="f").default_branch(to="legit")
        processor = TopologyProcessor(topology, s.decoder.decode, version="v", columnar=columnar)
        values = [s.encoder.encode(tx(1, "950"))]
        assert processor.route_batch(values) is None, text
        records = [RawRecord(TOPIC, 0, 0, b"k", values[0], 1, ())]
        assert processor.process_batch(records) == [processor.process(records[0])]


def test_rule_changes_recompile_the_batch_path_and_the_projection(s: Serde) -> None:
    from topology.serde.projection import ProjectionDecoder

    text = schemas.schema_text("transaction")
    first = stream(TOPIC, dlq="dlq").split().branch("amount >= 900", to="f").default_branch(to="legit")
    decoder = ProjectionDecoder.for_topology(s.registry, first, text)
    processor = TopologyProcessor(first, decoder, version="v", columnar=ColumnarDecoder(s.registry, text))
    value = s.encoder.encode(tx(1, "10", country="XX"))
    record = RawRecord(TOPIC, 0, 0, b"k", value, 1, ())
    assert processor.process_batch([record])[0][0].topic == "legit"
    second = stream(TOPIC, dlq="dlq").split().branch("country == 'XX'", to="f").default_branch(to="legit")
    processor.update(second)
    assert processor.process_batch([record])[0][0].topic == "f"
    routing = processor.route_batch([value])
    assert routing is not None and routing.codes[0] > 0
    before = decoder.full_reads
    assert processor.process(record)[0].topic == "f"
    assert decoder.full_reads == before  # country is in the new projection: no full decode
