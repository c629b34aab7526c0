"""A small, safe expression language over record fields.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum | ["not"] "in" list)?
    sum     := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | "null" | FIELD | "(" expr ")"
    list    := "[" [literal ("," literal)*] "]"

Text is parsed once into an AST, type-checked against the record's fields (the caller's: e.g.
``fields_from_avro`` of the source's Avro schema), and compiled into nested closures; nothing is
ever passed to ``eval``. Numbers are ``Decimal`` (so ``price >= 900.10`` compares exactly against a decimal);
timestamp fields read as epoch milliseconds. A comparison or arithmetic on a
null field raises ``TypeError`` at evaluation time: the processor dead-letters it.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Record = Mapping[str, Any]
Evaluator = Callable[[Record], Any]
Type = Literal["number", "string", "bool", "timestamp", "null"]


class ExprError(ValueError):
    """An expression that does not parse or does not type-check; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column})")
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True)
class FieldType:
    """The static type of one record field."""

    type: Type
    nullable: bool = False


_AVRO_PRIMITIVES: Mapping[str, Type] = {
    "string": "string",
    "int": "number",
    "long": "number",
    "float": "number",
    "double": "number",
    "boolean": "bool",
}


def fields_from_avro(schema_text: str) -> dict[str, FieldType]:
    """Field types of an Avro record schema (decimals are numbers, timestamp-millis are timestamps).

    Raises ``ValueError`` for text that is not an Avro record schema."""
    schema = json.loads(schema_text)
    if not isinstance(schema, dict) or schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        raise ValueError("not an Avro record schema")
    out: dict[str, FieldType] = {}
    for f in schema["fields"]:
        t = f["type"]
        nullable = False
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            nullable = len(non_null) < len(t)
            if len(non_null) != 1:
                continue  # multi-branch unions are not addressable by expressions
            t = non_null[0]
        ftype: Type | None
        if isinstance(t, dict):
            logical = t.get("logicalType")
            if logical == "decimal":
                ftype = "number"
            elif logical in ("timestamp-millis", "timestamp-micros"):
                ftype = "timestamp"
            else:
                ftype = _AVRO_PRIMITIVES.get(t.get("type", ""))
        else:
            ftype = _AVRO_PRIMITIVES.get(t)
        if ftype is not None:
            out[f["name"]] = FieldType(ftype, nullable)
    return out


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<bad2>&&|\|\||=~|=>|=<|\*\*|//|<>)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,)
  | (?P<bad>[=!&|^~@$#?:;.{}\\`])
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_HINTS = {"&&": "and", "||": "or", "!": "not", "=": "==", "<>": "!=", "=>": ">=", "=<": "<="}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number, string, name, keyword, op, end
    text: str
    col: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos + 1
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", col)
        kind = m.lastgroup or ""
        s = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        if kind in ("bad", "bad2"):
            hint = _HINTS.get(s)
            raise ExprError(f"unknown operator {s!r}" + (f" (use {hint!r})" if hint else ""), col)
        if kind == "name" and s in _KEYWORDS:
            kind = "keyword"
        toks.append(_Tok(kind, s, col))
    toks.append(_Tok("end", "", len(text) + 1))
    return toks


def _unquote(s: str, col: int) -> str:
    out: list[str] = []
    i = 1
    while i < len(s) - 1:
        c = s[i]
        if c == "\\":
            e = s[i + 1]
            if e not in _ESCAPES:
                raise ExprError(f"unknown escape \\{e} in string", col + i)
            out.append(_ESCAPES[e])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Literal_:
    value: Decimal | str | bool | None
    col: int


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" | "-"
    operand: Node
    col: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # and or == != < <= > >= + - * / %
    left: Node
    right: Node
    col: int


@dataclass(frozen=True, slots=True)
class InList:
    operand: Node
    items: tuple[Literal_, ...]
    negated: bool
    col: int


Node = Literal_ | Field | Unary | Binary | InList

_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at(self, kind: str, *texts: str) -> bool:
        t = self.peek()
        return t.kind == kind and (not texts or t.text in texts)

    def expect(self, kind: str, text: str) -> _Tok:
        t = self.peek()
        if t.kind != kind or t.text != text:
            found = "end of expression" if t.kind == "end" else repr(t.text)
            raise ExprError(f"expected {text!r}, found {found}", t.col)
        return self.take()

    def parse(self) -> Node:
        node = self.or_()
        t = self.peek()
        if t.kind != "end":
            raise ExprError(f"unexpected {t.text!r}", t.col)
        return node

    def chain(self, operand: Callable[[], Node], kind: str, *ops: str) -> Node:
        """``operand (op operand)*``, left-associative: one level of binary operators."""
        node = operand()
        while self.at(kind, *ops):
            t = self.take()
            node = Binary(t.text, node, operand(), t.col)
        return node

    def or_(self) -> Node:
        return self.chain(self.and_, "keyword", "or")

    def and_(self) -> Node:
        return self.chain(self.not_, "keyword", "and")

    def not_(self) -> Node:
        if self.at("keyword", "not"):
            t = self.take()
            return Unary("not", self.not_(), t.col)
        return self.compare()

    def compare(self) -> Node:
        left = self.sum_()
        if self.at("op", *_COMPARE):
            t = self.take()
            return Binary(t.text, left, self.sum_(), t.col)
        if self.at("keyword", "in"):
            t = self.take()
            return InList(left, self.list_(), False, t.col)
        if self.at("keyword", "not") and self.toks[self.i + 1].text == "in":
            t = self.take()
            self.take()
            return InList(left, self.list_(), True, t.col)
        return left

    def sum_(self) -> Node:
        return self.chain(self.term, "op", "+", "-")

    def term(self) -> Node:
        return self.chain(self.unary, "op", "*", "/", "%")

    def unary(self) -> Node:
        if self.at("op", "-"):
            t = self.take()
            operand = self.unary()
            if isinstance(operand, Literal_) and isinstance(operand.value, Decimal):
                return Literal_(-operand.value, t.col)
            return Unary("-", operand, t.col)
        return self.atom()

    def atom(self) -> Node:
        t = self.take()
        if t.kind == "number":
            try:
                return Literal_(Decimal(t.text), t.col)
            except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
                raise ExprError(f"bad number {t.text!r}", t.col) from None
        if t.kind == "string":
            return Literal_(_unquote(t.text, t.col), t.col)
        if t.kind == "keyword" and t.text in ("true", "false"):
            return Literal_(t.text == "true", t.col)
        if t.kind == "keyword" and t.text == "null":
            return Literal_(None, t.col)
        if t.kind == "name":
            if self.at("op", "("):
                raise ExprError(f"function calls are not allowed ({t.text}(...))", t.col)
            return Field(t.text, t.col)
        if t.kind == "op" and t.text == "(":
            node = self.or_()
            self.expect("op", ")")
            return node
        found = "end of expression" if t.kind == "end" else repr(t.text)
        raise ExprError(f"expected a value, found {found}", t.col)

    def list_(self) -> tuple[Literal_, ...]:
        self.expect("op", "[")
        items: list[Literal_] = []
        if not self.at("op", "]"):
            while True:
                item = self.unary()
                if not isinstance(item, Literal_):
                    raise ExprError("list items must be literals", _col(item))
                items.append(item)
                if not self.at("op", ","):
                    break
                self.take()
        self.expect("op", "]")
        return tuple(items)


def _col(node: Node) -> int:
    return node.col


# ---------------------------------------------------------------- type check


_LITERAL_TYPES: Mapping[type, Type] = {type(None): "null", bool: "bool", Decimal: "number", str: "string"}


def _literal_type(value: Decimal | str | bool | None) -> Type:
    return _LITERAL_TYPES[type(value)]


def _comparable(a: Type, b: Type) -> bool:
    num = {"number", "timestamp"}
    return a == b or (a in num and b in num) or "null" in (a, b)


class _Checker:
    def __init__(self, fields: Mapping[str, FieldType]) -> None:
        self.fields = fields
        self.used: set[str] = set()

    def check(self, node: Node) -> Type:
        if isinstance(node, Literal_):
            return _literal_type(node.value)
        if isinstance(node, Field):
            ft = self.fields.get(node.name)
            if ft is None:
                known = ", ".join(sorted(self.fields)) or "none"
                raise ExprError(f"unknown field {node.name!r} (fields: {known})", node.col)
            self.used.add(node.name)
            return ft.type
        if isinstance(node, Unary):
            t = self.check(node.operand)
            want: Type = "bool" if node.op == "not" else "number"
            if t != want and not (want == "number" and t == "timestamp"):
                raise ExprError(f"'{node.op}' needs a {want}, got a {t}", node.col)
            return want
        if isinstance(node, InList):
            t = self.check(node.operand)
            for item in node.items:
                it = _literal_type(item.value)
                if not _comparable(t, it):
                    raise ExprError(f"cannot test a {t} for membership of a {it}", item.col)
            return "bool"
        lt, rt = self.check(node.left), self.check(node.right)
        op = node.op
        if op in ("and", "or"):
            for side, t in ((node.left, lt), (node.right, rt)):
                if t != "bool":
                    raise ExprError(f"'{op}' needs true/false operands, got a {t}", _col(side))
            return "bool"
        if op in ("==", "!="):
            if not _comparable(lt, rt):
                raise ExprError(f"cannot compare a {lt} with a {rt}", node.col)
            return "bool"
        if op in _COMPARE:
            if "null" in (lt, rt):
                raise ExprError(f"'{op}' cannot compare with null (use == or !=)", node.col)
            if lt == "bool" or rt == "bool" or not _comparable(lt, rt):
                raise ExprError(f"cannot order a {lt} against a {rt}", node.col)
            return "bool"
        for side, t in ((node.left, lt), (node.right, rt)):
            if t not in ("number", "timestamp"):
                raise ExprError(f"'{op}' needs numbers, got a {t}", _col(side))
        return "number"


# ---------------------------------------------------------------- compile

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_OPS: Mapping[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "%": operator.mod,
}


def to_epoch_ms(value: Any) -> Any:
    """Epoch milliseconds of a timestamp value (datetime, or already a number)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _MS
    return value


def _compile(node: Node, fields: Mapping[str, FieldType]) -> Evaluator:
    if isinstance(node, Literal_):
        v = node.value
        return lambda r: v
    if isinstance(node, Field):
        name = node.name
        if fields[name].type == "timestamp":
            return lambda r: to_epoch_ms(r[name])
        return operator.itemgetter(name)
    if isinstance(node, Unary):
        inner = _compile(node.operand, fields)
        if node.op == "not":
            return lambda r: not inner(r)
        return lambda r: -inner(r)
    if isinstance(node, InList):
        values = [i.value for i in node.items]
        inner = _compile(node.operand, fields)
        members = frozenset(values)
        if node.negated:
            return lambda r: inner(r) not in members
        return lambda r: inner(r) in members
    op = node.op
    left, right = _compile(node.left, fields), _compile(node.right, fields)
    if op == "and":
        return lambda r: left(r) and right(r)
    if op == "or":
        return lambda r: left(r) or right(r)
    # null tests: identity, so `x == null` never raises
    if op in ("==", "!=") and (_is_null(node.left) or _is_null(node.right)):
        other = right if _is_null(node.left) else left
        if op == "==":
            return lambda r: other(r) is None
        return lambda r: other(r) is not None
    if op == "/":
        return lambda r: Decimal(left(r)) / right(r)
    fn = _OPS[op]
    # The common case `field OP constant`: one closure, no call for the constant.
    if isinstance(node.right, Literal_) and isinstance(node.left, Field) and fields[node.left.name].type != "timestamp":
        name, const = node.left.name, node.right.value
        return lambda r: fn(r[name], const)
    if isinstance(node.right, Literal_):
        const = node.right.value
        return lambda r: fn(left(r), const)
    return lambda r: fn(left(r), right(r))


def _is_null(node: Node) -> bool:
    return isinstance(node, Literal_) and node.value is None


@dataclass(frozen=True)
class Expression:
    """A parsed, checked and compiled expression. Call ``evaluate(record)``."""

    text: str
    ast: Node = field(compare=False, repr=False)
    fields: frozenset[str] = field(compare=False, repr=False)
    evaluate: Evaluator = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.text


def parse(text: str, fields: Mapping[str, FieldType], *, boolean: bool = True) -> Expression:
    """Parse, type-check against ``fields`` (the record's) and compile ``text``; raises ``ExprError`` with
    the column of the problem."""
    if not text.strip():
        raise ExprError("empty expression", 1)
    node = _Parser(text).parse()
    checker = _Checker(fields)
    t = checker.check(node)
    if boolean and t != "bool":
        raise ExprError(f"a condition must be true/false, this is a {t}", _col(node))
    return Expression(text.strip(), node, frozenset(checker.used), _compile(node, fields))
