"""Reading the YAML nodes of a topology file, every error naming file, line and key: the node checks
(mappings, typed values, names, fields) and one rule with its condition (expressions, aggregates, windows).

``RuleReader`` reads a rule alone (``topology.plan.rules``: a rules-topic record); ``topology.plan.loader``
reads a whole topology file with it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from topology.plan.expr import ExprError, Expression, FieldType, parse
from topology.plan.model import (
    AGGREGATE_FUNCTIONS,
    COMPARISONS,
    WINDOW_KINDS,
    Aggregate,
    AllOf,
    AnyOf,
    Condition,
    PlanError,
    Rule,
    Window,
    check_name,
    parse_duration,
)


class TopologyError(ValueError):
    """A topology file that is wrong: ``file:line: key: message``."""

    def __init__(self, file: str, line: int, key: str, message: str) -> None:
        super().__init__(f"{file}:{line}: {key}: {message}")
        self.file = file
        self.line = line
        self.key = key
        self.message = message


class RuleReader:
    """Checks YAML nodes and reads rules over the source's ``fields``.

    ``standalone``: a rule read alone, whose topology checks ``source.id`` when the rule joins it.
    """

    def __init__(self, file: str, fields: Mapping[str, FieldType] | None, *, standalone: bool = False) -> None:
        self.file = file
        self.fields: Mapping[str, FieldType] = fields or {}  # the source's (a topology sets them from its source)
        self.id_field: str | None = None  # source.id, once read (a related aggregate needs it)
        self.standalone = standalone

    # ------------------------------------------------------------ helpers

    def fail(self, line: int, key: str, message: str) -> NoReturn:
        raise TopologyError(self.file, line, key, message)

    @staticmethod
    def key_line(node: Any, key: Any) -> int:
        if isinstance(node, CommentedMap) and key in node:
            return int(node.lc.key(key)[0]) + 1
        if isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
            return int(node.lc.item(key)[0]) + 1
        return int(getattr(node, "lc", None).line) + 1 if hasattr(node, "lc") else 0  # type: ignore[union-attr]

    def mapping(self, node: Any, path: str, line: int, allowed: Collection[str], required: Collection[str]) -> Any:
        if not isinstance(node, CommentedMap):
            self.fail(line, path, f"expected a mapping, got {_kind(node)}")
        for k in node:
            if k not in allowed:
                self.fail(self.key_line(node, k), join_path(path, k), f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in node:
                self.fail(line, path, f"missing key {k!r}")
        return node

    def get(self, node: Any, key: str, path: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in node:
            return default
        v = node[key]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, (int, str))):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(self.key_line(node, key), join_path(path, key), f"expected {name}, got {_kind(v)}")
        return v

    def name(self, node: Any, key: str, path: str, what: str) -> str:
        v = self.get(node, key, path, str)
        try:
            return check_name(v, what)
        except PlanError as exc:
            self.fail(self.key_line(node, key), join_path(path, key), str(exc))

    def field_name(self, value: Any, line: int, path: str) -> str:
        if not isinstance(value, str):
            self.fail(line, path, f"expected a field name, got {_kind(value)}")
        if value not in self.fields:
            self.fail(line, path, f"unknown field {value!r} (fields: {', '.join(sorted(self.fields))})")
        return value

    # ------------------------------------------------------------ rules

    def rule(self, node: Any, path: str, line: int) -> Rule:
        self.mapping(node, path, line, ("id", "version", "description", "when"), ("id", "when"))
        rid = self.name(node, "id", path, "rule")
        version = self.get(node, "version", path, int, 1)
        if version < 1:
            self.fail(self.key_line(node, "version"), f"{path}.version", "version must be >= 1")
        description = self.get(node, "description", path, str, "")
        cond = self.condition(node["when"], f"{path}.when", self.key_line(node, "when"))
        return Rule(rid, cond, version, " ".join(description.split())).named()

    def condition(self, value: Any, path: str, line: int) -> Condition:
        if isinstance(value, str):
            return self.expression(value, path, line)
        if isinstance(value, CommentedMap):
            if len(value) != 1:
                self.fail(line, path, "a condition is an expression or one of aggregate, all, any")
            (k,) = value.keys()
            kline = self.key_line(value, k)
            if k == "aggregate":
                return self.aggregate(value[k], f"{path}.aggregate", kline)
            if k in ("all", "any"):
                items = value[k]
                if not isinstance(items, CommentedSeq) or not items:
                    self.fail(kline, f"{path}.{k}", "expected a non-empty list of conditions")
                conds = tuple(
                    self.condition(c, f"{path}.{k}[{i}]", self.key_line(items, i)) for i, c in enumerate(items)
                )
                return AllOf(conds) if k == "all" else AnyOf(conds)
            self.fail(kline, join_path(path, k), "unknown condition (aggregate, all or any)")
        self.fail(line, path, f"expected an expression or a mapping, got {_kind(value)}")

    def expression(self, text: str, path: str, line: int, boolean: bool = True) -> Expression:
        try:
            return parse(text, self.fields, boolean=boolean)
        except ExprError as exc:
            self.fail(line, path, f"{exc.message} (in {text.strip()!r} at column {exc.column})")

    def aggregate(self, node: Any, path: str, line: int) -> Aggregate:
        allowed = ("function", "field", "group_by", "window", "filter", "op", "threshold", "name", "related")
        self.mapping(node, path, line, allowed, ("function", "group_by", "window", "op", "threshold"))
        fn = self.get(node, "function", path, str)
        if fn not in AGGREGATE_FUNCTIONS:
            self.fail(self.key_line(node, "function"), f"{path}.function",
                      f"unknown aggregate function {fn!r} (one of {', '.join(AGGREGATE_FUNCTIONS)})")  # fmt: skip
        field = None
        if fn == "count":
            if "field" in node:
                self.fail(self.key_line(node, "field"), f"{path}.field", "count takes no field")
        else:
            if "field" not in node:
                self.fail(line, path, f"missing key 'field' ({fn} needs a field)")
            field = self.field_name(node["field"], self.key_line(node, "field"), f"{path}.field")
            if fn == "sum" and self.fields[field].type != "number":
                self.fail(self.key_line(node, "field"), f"{path}.field",
                          f"sum needs a number field, {field!r} is a {self.fields[field].type}")  # fmt: skip
        gb = node["group_by"]
        gline = self.key_line(node, "group_by")
        group: tuple[str, ...]
        if isinstance(gb, str):
            group = (self.field_name(gb, gline, f"{path}.group_by"),)
        elif isinstance(gb, CommentedSeq) and gb:
            group = tuple(self.field_name(v, self.key_line(gb, i), f"{path}.group_by[{i}]") for i, v in enumerate(gb))
        else:
            self.fail(gline, f"{path}.group_by", "expected a field name or a non-empty list of field names")
        window = self.window(node["window"], f"{path}.window", self.key_line(node, "window"))
        flt = None
        if "filter" in node:
            ftext = self.get(node, "filter", path, str)
            flt = self.expression(ftext, f"{path}.filter", self.key_line(node, "filter"))
        op = self.get(node, "op", path, str)
        if op not in COMPARISONS:
            known = " ".join(COMPARISONS)
            self.fail(self.key_line(node, "op"), f"{path}.op", f"unknown operator {op!r} (one of {known})")
        raw = node["threshold"]
        tline = self.key_line(node, "threshold")
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            self.fail(tline, f"{path}.threshold", f"expected a number, got {_kind(raw)}")
        try:
            threshold = Decimal(str(raw))
            if not threshold.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            self.fail(tline, f"{path}.threshold", f"expected a number, got {raw!r}")
        name = self.name(node, "name", path, "store") if "name" in node else ""
        related = bool(self.get(node, "related", path, bool, False))
        if related and window.kind != "sliding":
            self.fail(self.key_line(node, "related"), f"{path}.related",
                      f"only a sliding window can name related transactions, not {window.kind}")  # fmt: skip
        if related and self.id_field is None and not self.standalone:
            self.fail(self.key_line(node, "related"), f"{path}.related",
                      "a related aggregate names records by their id: declare it as source.id")  # fmt: skip
        return Aggregate(fn, group, window, op, threshold, field, flt, name, related)

    def window(self, node: Any, path: str, line: int) -> Window:
        self.mapping(node, path, line, ("kind", "size", "advance", "grace"), ("kind", "size"))
        kind = self.get(node, "kind", path, str)
        if kind not in WINDOW_KINDS:
            self.fail(self.key_line(node, "kind"), f"{path}.kind",
                      f"unknown window kind {kind!r} (one of {', '.join(WINDOW_KINDS)})")  # fmt: skip

        def dur(k: str) -> int | None:
            if k not in node:
                return None
            try:
                return parse_duration(self.get(node, k, path, (int, str)))
            except PlanError as exc:
                self.fail(self.key_line(node, k), f"{path}.{k}", str(exc))

        size, advance, grace = dur("size"), dur("advance"), dur("grace")
        if kind == "hopping" and advance is None:
            self.fail(line, path, "missing key 'advance' (a hopping window needs it)")
        if kind != "hopping" and advance is not None:
            self.fail(self.key_line(node, "advance"), f"{path}.advance", f"a {kind} window takes no advance")
        try:
            return Window(kind, size or 0, grace or 0, advance)
        except PlanError as exc:
            self.fail(line, path, str(exc))


def join_path(path: str, key: Any) -> str:
    """The path of ``key`` under ``path`` (``a.b``; ``b`` at the top level)."""
    return f"{path}.{key}" if path else str(key)


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, CommentedMap):
        return "a mapping"
    if isinstance(v, CommentedSeq):
        return "a list"
    return f"{type(v).__name__} {v!r}"
