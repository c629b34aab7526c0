"""The safe expression language: parsing, typing, exact decimals, errors with columns."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas import schema_text
from services.detector import transaction_fields
from topology.plan.expr import ExprError, Expression, FieldType, fields_from_avro
from topology.plan.expr import parse as parse_with

TX = transaction_fields()


def parse(text: str) -> Expression:
    """``text`` over a Transaction's fields."""
    return parse_with(text, TX)


def rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "transaction_id": "t1",
        "source_account": "a",
        "target_account": "b",
        "amount": Decimal("100.00"),
        "currency": "EUR",
        "event_time": datetime(2024, 1, 1, tzinfo=UTC),
        "channel": None,
        "country": "NL",
        "merchant_category": None,
    }
    base.update(kw)
    return base


def test_fields_come_from_the_transaction_schema() -> None:
    assert fields_from_avro(schema_text("transaction")) == {
        "transaction_id": FieldType("string"),
        "source_account": FieldType("string"),
        "target_account": FieldType("string"),
        "amount": FieldType("number"),
        "currency": FieldType("string"),
        "event_time": FieldType("timestamp"),
        "channel": FieldType("string", nullable=True),
        "country": FieldType("string", nullable=True),
        "merchant_category": FieldType("string", nullable=True),
    }


@pytest.mark.parametrize("text", ['"string"', '{"type": "enum", "name": "E", "symbols": ["A"]}', "[1, 2]", "{"])
def test_fields_of_anything_but_an_avro_record_schema_are_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        fields_from_avro(text)


def test_an_expression_is_checked_against_the_fields_it_is_given() -> None:
    with pytest.raises(TypeError, match="fields"):
        parse_with("amount > 1")  # type: ignore[call-arg]
    with pytest.raises(ExprError, match="unknown field 'amount' \\(fields: none\\)"):
        parse_with("amount > 1", {})
    assert parse_with("celsius > 1", {"celsius": FieldType("number")}).evaluate({"celsius": 2}) is True


@pytest.mark.parametrize(
    ("amount", "expected"), [("899.99", False), ("900.00", True), ("900", True), ("900.01", True)]
)
def test_tutorial_rule_compares_exact_decimals(amount: str, expected: bool) -> None:
    assert parse("amount >= 900").evaluate(rec(amount=Decimal(amount))) is expected


def test_decimal_arithmetic_is_exact() -> None:
    # 0.1 + 0.2 == 0.3 is false for floats, true for decimals
    assert parse("amount == 0.1 + 0.2").evaluate(rec(amount=Decimal("0.30"))) is True
    assert parse("amount * 3 > 299.99 and amount / 4 == 25").evaluate(rec()) is True
    assert parse("amount % 7 == 2").evaluate(rec()) is True
    assert parse("-amount < -99.99").evaluate(rec()) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount > 50 and currency == 'EUR'", True),
        ("amount > 500 or currency == \"EUR\"", True),
        ("not amount > 50", False),
        ("not (amount > 50 and currency == 'USD')", True),
        ("amount > 500 or amount > 50 and currency == 'USD'", False),  # and binds tighter than or
        ("(amount > 500 or amount > 50) and currency == 'USD'", False),
        ("country in ['NL', 'BE']", True),
        ("country not in ['NL', 'BE']", False),
        ("amount in [1, 100, 1000]", True),
        ("channel == null", True),
        ("channel != null", False),
        ("country != null and country == 'NL'", True),
        ("source_account != target_account", True),
        ("currency >= 'EUR' and currency < 'EUS'", True),
        ("event_time >= 1704067200000", True),
        ("event_time < 1704067200000", False),
        ("transaction_id == 'it\\'s'", False),
        ("amount >= 10_000", False),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert parse(text).evaluate(rec()) is expected


def test_string_escapes() -> None:
    assert parse('transaction_id == "a\\"b\\n"').evaluate(rec(transaction_id='a"b\n')) is True


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("amout >= 900", "unknown field 'amout'", 1),
        ("amount = 900", "unknown operator '='", 8),
        ("amount >= 900 && currency == 'EUR'", "unknown operator '&&' (use 'and')", 15),
        ("amount =~ 900", "unknown operator '=~'", 8),
        ("amount ** 2 > 1", "unknown operator '**'", 8),
        ("amount >= ", "expected a value, found end of expression", 11),
        ("amount >= 900)", "unexpected ')'", 14),
        ("(amount >= 900", "expected ')'", 15),
        ("amount", "a condition must be true/false", 1),
        ("currency > 5", "cannot order a string against a number", 10),
        ("amount == 'EUR'", "cannot compare a number with a string", 8),
        ("amount > null", "cannot compare with null", 8),
        ("amount and currency == 'x'", "'and' needs true/false operands", 1),
        ("currency + 1 > 2", "'+' needs numbers", 1),
        ("country in [1, 2]", "membership", 13),
        ("country in [currency]", "list items must be literals", 13),
        ("'abc", "unexpected character", 1),
        ("__import__('os')", "function calls are not allowed", 1),
        ("amount.real > 1", "unknown operator '.'", 7),
        ("", "empty expression", 1),
    ],
)
def test_errors_name_problem_and_column(text: str, message: str, column: int) -> None:
    with pytest.raises(ExprError) as err:
        parse(text)
    assert message in err.value.message
    assert err.value.column == column


def test_null_field_in_ordering_or_arithmetic_raises_at_evaluation() -> None:
    # the processor dead-letters such records; `== null` guards make rules total
    with pytest.raises(TypeError):
        parse("channel < 'x'").evaluate(rec(channel=None))
    assert parse("channel != null and channel < 'x'").evaluate(rec(channel=None)) is False
    with pytest.raises(ArithmeticError):
        parse("amount / (amount - 100) > 1").evaluate(rec())


def test_missing_field_raises_key_error() -> None:
    e = parse("amount > 1")
    with pytest.raises(KeyError):
        e.evaluate({})


def test_expressions_compare_by_text_and_list_their_fields() -> None:
    a, b = parse("amount >= 900"), parse("  amount >= 900 ")
    assert a == b
    assert a.fields == frozenset({"amount"})
    assert parse("country in ['NL'] or amount > 1").fields == frozenset({"country", "amount"})
