"""The engine's JSON documents: the same bytes as the standard library's compact ``json`` for what the
engine writes, so changelogs written before still restore under the same keys."""

from __future__ import annotations

import json
import math
import random

import pytest

from topology.processor.stages import pack_fields
from topology.serde.documents import dumps, dumps_text, loads
from topology.state.window import encode_group_key

STDLIB = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
TEXTS = [chr(c) for c in range(0x800)] + ["\u2028", "\u2029", "\ufeff", "\U0001f600", 'a"b\\c', "</script>", ""]


def test_text_is_written_as_json_writes_it() -> None:
    for text in TEXTS:
        for value in (text, [text, "x"], {text: [1, text]}):
            assert dumps(value) == STDLIB(value).encode(), repr(text)
            assert dumps_text(value) == STDLIB(value), repr(text)
            assert loads(dumps(value)) == value, repr(text)


def test_changelog_shaped_documents_are_byte_identical() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        times = sorted(rng.randrange(-(2**63), 2**63) for _ in range(rng.randrange(6)))
        ids = ["".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12))) for _ in times]
        doc = {
            f"velocity-count.{rng.randrange(2**32):08x}": [max(times, default=0), times, ids],
            "sum": [0, times, [str(rng.randrange(10**6)) + ".25" for _ in times]],
            "buckets": [0, [[t, rng.randrange(100), "1.5"] for t in times]],
        }
        assert dumps(doc) == STDLIB(doc).encode()
        assert loads(STDLIB(doc).encode()) == doc


def test_group_keys_keep_their_bytes() -> None:
    for values in (["mule", "1000.00"], ['quo"te', "x"], ["tab\there", "\x00"], ["ünïcode", "€"]):
        assert encode_group_key(values) == STDLIB(values).encode()


def test_what_it_refuses_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        dumps(2**64)
    with pytest.raises(TypeError):
        dumps("\ud800")


def test_non_finite_floats_are_not_packed() -> None:
    """JSON has no NaN: such a field is not carried, the next stage decodes the value instead."""
    names = frozenset({"score"})
    assert pack_fields({"score": 0.5}, names, frozenset()) == {"fscore": 0.5}
    for v in (math.nan, math.inf, -math.inf):
        assert pack_fields({"score": v}, names, frozenset()) is None
