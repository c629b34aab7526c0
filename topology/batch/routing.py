"""Stateless rules over a decoded batch: the branch decision of every row in one polars pass.

``BatchRouter.build`` compiles the rules of a stateless topology from their expression AST
(``topology.plan.expr`` nodes, never text) into polars expressions that reproduce the per-record
evaluator exactly, errors included: for every node it builds the value and a mask of the rows
where the per-record evaluator would raise (``None`` compared with ``<``, and short-circuit
``and``/``or`` that skip the right side). ``expression`` is then the decision code of each row:
``0`` the default branch, ``base[b] + mask`` branch ``b`` with the rules of bit mask ``mask``
fired (first matching branch wins, every rule of it evaluated), ``-1`` the per-record path (a
row the decoder flagged, a rule that would raise: the processor dead-letters it with the exact
message, or a branch decision that also needs an alert record).

Not compiled (the topology keeps the per-record path): Python predicates, aggregates,
arithmetic, unary minus, bare boolean fields, numbers compared with float columns or with a
different kind of number column, non-integral numbers compared with integer columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl

from topology.plan.expr import Field, InList, Literal_, Node, Unary
from topology.plan.model import AllOf, AnyOf, Condition, Topology
from topology.records import BatchRouting, Decision, Headers

__all__ = ["BatchRouter", "BatchRouting", "Decision", "Headers"]
_MAX_DECISIONS = 4096
_ORDER = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


class _Unsupported(Exception):
    """A construct the vectorised path does not reproduce: the per-record path takes the topology."""


@dataclass(frozen=True)
class _V:
    val: pl.Expr
    err: pl.Expr  # rows where the per-record evaluator raises
    kind: str  # bool (never null where err is false), string, decimal, int, number (a literal), null
    const: Any = None  # the literal's value
    dtype: pl.DataType | None = None  # a decimal column's type


_FALSE = pl.lit(False)


class BatchRouter:
    """Routes decoded batches of a stateless topology (see the module docstring)."""

    def __init__(self, branches: tuple[tuple[Condition, ...], ...], decisions: dict[int, Decision]) -> None:
        self._branches = branches
        self._decisions = decisions
        self._compiled: dict[Any, pl.Expr | None] = {}  # frame schema -> code expression

    @classmethod
    def build(
        cls,
        topology: Topology,
        decide: Callable[[int, tuple[int, ...]], tuple[Headers, tuple[str, ...]]],
        default: Decision,
        *,
        alerts: bool = False,
    ) -> BatchRouter | None:
        """A router of ``topology`` (``None`` if it is not vectorisable); ``decide(branch, fired)`` gives
        the headers and tags of a decision, as the processor writes them. With ``alerts`` every
        branch decision goes to the per-record path (it also writes an alert record)."""
        if topology.stores or sum((1 << len(b.rules)) for b in topology.branches) > _MAX_DECISIONS:
            return None
        for r in topology.rules:
            if not _expressions_only(r.condition):
                return None
        decisions: dict[int, Decision] = {0: default}
        base = 1
        for bi, branch in enumerate(topology.branches):
            k = len(branch.rules)
            if not alerts:
                for mask in range(1, 1 << k):
                    fired = tuple(i for i in range(k) if mask >> i & 1)
                    headers, tags = decide(bi, fired)
                    decisions[base + mask - 1] = (branch.to, headers, tags)
            base += (1 << k) - 1
        return cls(tuple(tuple(r.condition for r in b.rules) for b in topology.branches), decisions)

    @property
    def decisions(self) -> Mapping[int, Decision]:
        """Decision code -> (topic, extra headers, tags)."""
        return self._decisions

    def expression(self, schema: Mapping[str, pl.DataType]) -> pl.Expr | None:
        """The Int64 decision code of each row of a frame with ``schema`` (``None``: the rules need
        columns or types it does not have); a ``topology.batch.decode.Compile``."""
        key = tuple(schema.items())
        expr = self._compiled.get(key, _ABSENT)
        if expr is _ABSENT:
            expr = self._compiled[key] = self._compile(schema)
        return expr  # type: ignore[no-any-return]

    def _compile(self, schema: Mapping[str, pl.DataType]) -> pl.Expr | None:
        try:
            chain: Any = None
            base = 1
            for rules in self._branches:
                parts = [_condition(c, schema) for c in rules]
                err = pl.any_horizontal([p.err for p in parts]) if len(parts) > 1 else parts[0].err
                mask: pl.Expr = pl.lit(0, dtype=pl.Int64)
                for i, p in enumerate(parts):
                    mask = mask + p.val.cast(pl.Int64) * (1 << i)
                code = mask + (base - 1)
                if base not in self._decisions:  # decisions that also write an alert: per record
                    code = pl.lit(-1, dtype=pl.Int64)
                base += (1 << len(parts)) - 1
                chain = (pl.when(err) if chain is None else chain.when(err)).then(-1)
                chain = chain.when(mask > 0).then(code)
            if chain is None:
                return pl.lit(0, dtype=pl.Int64)
            return chain.otherwise(0).cast(pl.Int64)  # type: ignore[no-any-return]
        except _Unsupported:
            return None


_ABSENT: Any = object()


def _expressions_only(c: Condition) -> bool:
    if isinstance(c, AllOf | AnyOf):
        return all(_expressions_only(x) for x in c.conditions)
    return hasattr(c, "ast")  # an Expression (not a Predicate, not an Aggregate)


def _condition(c: Condition, schema: Mapping[str, pl.DataType]) -> _V:
    """A rule condition as a non-null boolean where it does not raise (``bool(...)`` of the evaluator)."""
    if isinstance(c, AllOf | AnyOf):
        parts = [_condition(x, schema) for x in c.conditions]
        out = parts[0]
        for p in parts[1:]:
            out = _and(out, p) if isinstance(c, AllOf) else _or(out, p)
        return out
    v = _node(c.ast, schema)  # type: ignore[union-attr]
    if v.kind != "bool":
        raise _Unsupported(f"condition of kind {v.kind}")
    return v


def _and(a: _V, b: _V) -> _V:
    return _V(a.val & b.val, a.err | (a.val.fill_null(False) & b.err), "bool")


def _or(a: _V, b: _V) -> _V:
    return _V(a.val | b.val, a.err | (~a.val.fill_null(True) & b.err), "bool")


def _node(node: Node, schema: Mapping[str, pl.DataType]) -> _V:
    if isinstance(node, Literal_):
        value = node.value
        if value is None:
            return _V(pl.lit(None), _FALSE, "null")
        if isinstance(value, bool):
            return _V(pl.lit(value), _FALSE, "bool", value)
        if isinstance(value, Decimal):
            return _V(pl.lit(value), _FALSE, "number", value)
        return _V(pl.lit(value, dtype=pl.String), _FALSE, "string", value)
    if isinstance(node, Field):
        dtype = schema.get(node.name)
        col = pl.col(node.name)
        if dtype is None:
            raise _Unsupported(f"no column {node.name}")
        if dtype == pl.String:
            return _V(col, _FALSE, "string")
        if isinstance(dtype, pl.Decimal):
            return _V(col, _FALSE, "decimal", dtype=dtype)
        if dtype == pl.Int64:
            return _V(col, _FALSE, "int")
        if isinstance(dtype, pl.Datetime):
            return _V(col.dt.epoch("ms"), _FALSE, "int")
        raise _Unsupported(f"column {node.name} of type {dtype}")
    if isinstance(node, Unary):
        inner = _node(node.operand, schema)
        if node.op != "not" or inner.kind != "bool":
            raise _Unsupported(f"unary {node.op}")
        return _V(~inner.val, inner.err, "bool")
    if isinstance(node, InList):
        return _in_list(node, schema)
    left, right = _node(node.left, schema), _node(node.right, schema)
    op = node.op
    if op in ("and", "or"):
        if left.kind != "bool" or right.kind != "bool":
            raise _Unsupported(f"{op} of {left.kind} and {right.kind}")
        return _and(left, right) if op == "and" else _or(left, right)
    if op in ("==", "!=") and "null" in (left.kind, right.kind):
        other = right if left.kind == "null" else left
        test = other.val.is_null() if op == "==" else other.val.is_not_null()
        return _V(test, other.err, "bool")
    if op not in ("==", "!=", *_ORDER):
        raise _Unsupported(f"operator {op}")
    lval, rval = _comparable(left, right)
    err = left.err | right.err
    if op == "==":
        return _V(lval.eq_missing(rval), err, "bool")
    if op == "!=":
        return _V(lval.ne_missing(rval), err, "bool")
    if left.kind == "bool":
        raise _Unsupported("ordering of booleans")
    val = getattr(lval, _ORDER[op])(rval)
    return _V(val, err | lval.is_null() | rval.is_null(), "bool")


def _comparable(left: _V, right: _V) -> tuple[pl.Expr, pl.Expr]:
    """Both sides as polars values that compare exactly as Python compares the per-record values."""
    kinds = {left.kind, right.kind}
    if len(kinds) == 1 and left.kind in ("string", "decimal", "int", "bool"):
        return left.val, right.val
    if kinds == {"number"}:
        return pl.lit(left.const), pl.lit(right.const)
    if kinds == {"number", "decimal"}:
        number, column = (left, right) if left.kind == "number" else (right, left)
        _check_decimal(number.const, column.dtype)
        return left.val, right.val
    if kinds == {"number", "int"}:
        number = left if left.kind == "number" else right
        as_int = _as_int(number.const)
        lit = pl.lit(as_int, dtype=pl.Int64)
        return (lit, right.val) if left.kind == "number" else (left.val, lit)
    raise _Unsupported(f"comparison of {left.kind} with {right.kind}")


def _in_list(node: InList, schema: Mapping[str, pl.DataType]) -> _V:
    operand = _node(node.operand, schema)
    tests: list[pl.Expr] = []
    for item in node.items:
        value = item.value
        if value is None:
            tests.append(operand.val.is_null())
            continue
        if operand.kind == "string" and isinstance(value, str):
            tests.append(operand.val.eq_missing(pl.lit(value, dtype=pl.String)))
        elif operand.kind == "decimal" and isinstance(value, Decimal):
            _check_decimal(value, operand.dtype)
            tests.append(operand.val.eq_missing(pl.lit(value)))
        elif operand.kind == "int" and isinstance(value, Decimal) and not isinstance(value, bool):
            if value == value.to_integral_value():
                tests.append(operand.val.eq_missing(pl.lit(_as_int(value), dtype=pl.Int64)))
            # a non-integral number never equals an integer
        elif operand.kind == "bool" and isinstance(value, bool):
            tests.append(operand.val.eq_missing(pl.lit(value)))
        else:
            raise _Unsupported(f"{operand.kind} in a list of {type(value).__name__}")
    val = pl.any_horizontal(tests) if tests else _FALSE
    return _V(~val if node.negated else val, operand.err, "bool")


def _as_int(value: Any) -> int:
    if not isinstance(value, Decimal) or value != value.to_integral_value():
        raise _Unsupported(f"{value!r} compared with an integer column")
    n = int(value)
    if not -(2**63) <= n < 2**63:
        raise _Unsupported(f"{value!r} out of the Int64 range")
    return n


def _check_decimal(value: Any, column: pl.DataType | None) -> None:
    """Polars decimals hold 38 digits: a number that does not fit next to the column stays per record."""
    if not isinstance(value, Decimal) or not value.is_finite() or not isinstance(column, pl.Decimal):
        raise _Unsupported(f"{value!r}")
    t = value.as_tuple()
    exponent = int(t.exponent)
    scale = max(-exponent, 0)
    integer_digits = max(len(t.digits) + exponent, 0)
    col_scale = column.scale or 0
    col_integer = (column.precision or 38) - col_scale
    if max(integer_digits, col_integer) + max(scale, col_scale) > 38:
        raise _Unsupported(f"{value!r} does not fit a polars decimal next to {column}")
