"""Load a topology from YAML; every error names file, line and key.

Format::

    topology: plant-monitor             # application id
    source: {topic: plant.readings, schema: reading, key: [sensor], time: at, id: reading_id}
    dlq: plant.readings.dlq
    alerts: plant.alerts                # optional: an alert per decision of a (non-default) branch
    rules:
      - id: overheat
        version: 1
        description: Too hot.
        when: celsius > 90              # an expression, or {aggregate: ...}, {all: [...]}, {any: [...]}
    branches:
      - {name: alarm, to: plant.alarms, rules: [overheat]}
    default_branch: {name: normal, to: plant.normal}

``source.schema`` names the Avro schema of the source's values; the caller's ``schemas`` resolves the
name to the schema's text, whose fields every key, time field and expression is checked against (a
caller may instead give ``fields`` for a source that names no schema). An aggregate::

    aggregate:
      function: distinct_count          # count | sum | distinct_count
      field: sensor                     # sum / distinct_count only
      group_by: [site]
      window: {kind: sliding, size: 1h, grace: 1m}    # tumbling | hopping (+ advance) | sliding
      filter: celsius > 70              # optional
      op: ">="
      threshold: 3
      related: true                     # optional, sliding only: the alert names the earlier records (source.id)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from topology.plan.expr import ExprError, Expression, FieldType, fields_from_avro, parse
from topology.plan.model import (
    AGGREGATE_FUNCTIONS,
    COMPARISONS,
    WINDOW_KINDS,
    Aggregate,
    AllOf,
    AnyOf,
    Branch,
    Condition,
    DefaultBranch,
    PlanError,
    Rule,
    Topology,
    Window,
    check_name,
    check_topic,
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


SchemaResolver = Callable[[str], str]
"""The Avro schema text of a schema name (``source.schema``); raises ``LookupError``, ``OSError`` or
``ValueError`` for a name it does not know."""


def load_topology(
    path: str | Path,
    *,
    schemas: SchemaResolver | None = None,
    fields: Mapping[str, FieldType] | None = None,
    known_topics: Collection[str] | None = None,
) -> Topology:
    """The topology in ``path``; see ``loads_topology``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(str(p), 0, "-", f"cannot read: {exc.strerror or exc}") from exc
    return loads_topology(text, filename=str(p), schemas=schemas, fields=fields, known_topics=known_topics)


def loads_topology(
    text: str,
    *,
    filename: str = "<string>",
    schemas: SchemaResolver | None = None,
    fields: Mapping[str, FieldType] | None = None,
    known_topics: Collection[str] | None = None,
) -> Topology:
    """The topology in YAML ``text`` (``filename`` is used in error messages).

    ``schemas`` resolves ``source.schema``; ``fields`` are the source's field types when it names no
    schema (neither: an error). With ``known_topics``, every topic must be one of them.
    """
    doc = load_yaml(text, filename)
    try:
        return _Loader(filename, fields, schemas=schemas, known_topics=known_topics).topology(doc)
    except RecursionError:
        raise TopologyError(filename, 0, "-", "nested too deeply") from None


def load_yaml(text: str, filename: str) -> Any:
    """The YAML document in ``text`` (round-trip, with line numbers); ``TopologyError`` for anything that is
    not YAML: bad syntax, a control character, nesting too deep to walk."""
    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise TopologyError(filename, line, "-", f"not valid YAML: {exc.problem or exc}") from exc
    except ReaderError as exc:  # a character YAML does not allow (a control character)
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        ch = exc.character
        shown = f"U+{ch:04X}" if isinstance(ch, int) else repr(ch)
        raise TopologyError(filename, line, "-", f"not valid YAML: control character {shown} is not allowed") from exc
    except YAMLError as exc:
        raise TopologyError(filename, 0, "-", f"not valid YAML: {exc}") from exc
    except RecursionError:
        raise TopologyError(filename, 0, "-", "not valid YAML: nested too deeply") from None


class _Loader:
    def __init__(
        self, file: str, fields: Mapping[str, FieldType] | None, *, schemas: SchemaResolver | None = None,
        known_topics: Collection[str] | None = None, standalone: bool = False,
    ) -> None:  # fmt: skip
        self.file = file
        self.known_topics = None if known_topics is None else set(known_topics)
        self.given_fields = fields  # for a source that names no schema
        self.fields: Mapping[str, FieldType] = fields or {}  # the source's, once read
        self.schemas = schemas
        self.id_field: str | None = None  # source.id, once read (a related aggregate needs it)
        self.standalone = standalone  # a rule read alone: its topology checks the id when the rule joins it

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
                self.fail(self.key_line(node, k), _join(path, k), f"unknown key (allowed: {', '.join(allowed)})")
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
            self.fail(self.key_line(node, key), _join(path, key), f"expected {name}, got {_kind(v)}")
        return v

    def topic(self, node: Any, key: str, path: str) -> str:
        name = self.get(node, key, path, str)
        line = self.key_line(node, key)
        try:
            check_topic(name)
        except PlanError as exc:
            self.fail(line, _join(path, key), str(exc))
        if self.known_topics is not None and name not in self.known_topics:
            self.fail(line, _join(path, key), f"unknown topic {name!r} (known: {', '.join(sorted(self.known_topics))})")
        return str(name)

    def name(self, node: Any, key: str, path: str, what: str) -> str:
        v = self.get(node, key, path, str)
        try:
            return check_name(v, what)
        except PlanError as exc:
            self.fail(self.key_line(node, key), _join(path, key), str(exc))

    def field_name(self, value: Any, line: int, path: str) -> str:
        if not isinstance(value, str):
            self.fail(line, path, f"expected a field name, got {_kind(value)}")
        if value not in self.fields:
            self.fail(line, path, f"unknown field {value!r} (fields: {', '.join(sorted(self.fields))})")
        return value

    # ------------------------------------------------------------ document

    def topology(self, doc: Any) -> Topology:
        root = self.mapping(
            doc, "(top level)", 1,
            ("topology", "source", "dlq", "alerts", "rules", "branches", "default_branch"),
            ("topology", "source", "dlq", "rules", "branches", "default_branch"),
        )  # fmt: skip
        name = self.name(root, "topology", "", "topology")
        source, key, time_field = self.source(root["source"], self.key_line(root, "source"))
        dlq = self.topic(root, "dlq", "")
        alerts = self.topic(root, "alerts", "") if "alerts" in root else None

        rules = self.rules(root)
        used: set[str] = set()
        topics: dict[str, str] = {source: "source.topic", dlq: "dlq"}
        if alerts is not None:
            if alerts in topics:
                what = topics[alerts]
                self.fail(self.key_line(root, "alerts"), "alerts", f"duplicate topic {alerts!r}: it is {what}")
            topics[alerts] = "alerts"
        branches: list[Branch] = []
        names: set[str] = set()
        bnodes = self.get(root, "branches", "", list)
        for i, bn in enumerate(bnodes):
            path = f"branches[{i}]"
            self.mapping(bn, path, self.key_line(bnodes, i), ("name", "to", "rules"), ("name", "to", "rules"))
            bname = self.name(bn, "name", path, "branch")
            if bname in names:
                self.fail(self.key_line(bn, "name"), f"{path}.name", f"duplicate branch name {bname!r}")
            names.add(bname)
            to = self.sink(bn, path, topics, source, dlq)
            branches.append(Branch(bname, self.branch_rules(bn, path, rules, used), to))
        unused = [r for r in rules if r not in used]
        if unused:
            self.fail(self.key_line(root, "rules"), "rules", f"rule(s) used by no branch: {', '.join(unused)}")

        dn = self.mapping(
            root["default_branch"], "default_branch", self.key_line(root, "default_branch"), ("name", "to"), ("to",)
        )
        dname = self.name(dn, "name", "default_branch", "branch") if "name" in dn else "default"
        if dname in names:
            self.fail(self.key_line(dn, "name"), "default_branch.name", f"duplicate branch name {dname!r}")
        default = DefaultBranch(dname, self.sink(dn, "default_branch", topics, source, dlq))
        try:
            return Topology(
                name, source, tuple(branches), default, dlq, key, time_field, alerts, self.id_field, fields=self.fields
            )
        except PlanError as exc:  # anything the checks above did not name
            self.fail(1, "(top level)", str(exc))

    def rules(self, root: Any) -> dict[str, Rule]:
        """The rules by id, in file order."""
        nodes = self.get(root, "rules", "", list)
        rules: dict[str, Rule] = {}
        for i, rn in enumerate(nodes):
            r = self.rule(rn, f"rules[{i}]", self.key_line(nodes, i))
            if r.id in rules:
                self.fail(self.key_line(rn, "id"), f"rules[{i}].id", f"duplicate rule id {r.id!r}")
            rules[r.id] = r
        return rules

    def branch_rules(self, node: Any, path: str, rules: Mapping[str, Rule], used: set[str]) -> tuple[Rule, ...]:
        """The rules a branch names; each rule serves one branch (``used`` collects them)."""
        refs = self.get(node, "rules", path, list)
        if not refs:
            self.fail(self.key_line(node, "rules"), f"{path}.rules", "a branch needs at least one rule")
        out = []
        for j, ref in enumerate(refs):
            line = self.key_line(refs, j)
            if ref not in rules:
                self.fail(line, f"{path}.rules[{j}]", f"unknown rule {ref!r} (rules: {', '.join(rules)})")
            if ref in used:
                self.fail(line, f"{path}.rules[{j}]", f"rule {ref!r} is already used by a branch")
            used.add(ref)
            out.append(rules[ref])
        return tuple(out)

    def source(self, node: Any, line: int) -> tuple[str, tuple[str, ...], str]:
        """The source's topic, key fields and time field; sets ``fields`` (its records') and ``id_field``."""
        src = self.mapping(node, "source", line, ("topic", "schema", "key", "time", "id"), ("topic", "key", "time"))
        topic = self.topic(src, "topic", "source")
        self.fields = self.source_fields(src, line)
        seq = self.get(src, "key", "source", list)
        key = tuple(self.field_name(v, self.key_line(seq, i), f"source.key[{i}]") for i, v in enumerate(seq))
        time_field = self.field_name(src["time"], self.key_line(src, "time"), "source.time")
        if self.fields[time_field].type != "timestamp":
            self.fail(self.key_line(src, "time"), "source.time", f"{time_field!r} is not a timestamp field")
        self.id_field = self.field_name(src["id"], self.key_line(src, "id"), "source.id") if "id" in src else None
        return topic, key, time_field

    def source_fields(self, src: Any, line: int) -> Mapping[str, FieldType]:
        """The fields of the schema ``source.schema`` names, else those the caller gave."""
        if "schema" not in src:
            if self.given_fields is None:
                self.fail(line, "source", "missing key 'schema' (the Avro schema of the source's values)")
            return self.given_fields
        name = self.get(src, "schema", "source", str)
        sline = self.key_line(src, "schema")
        if self.schemas is None:
            self.fail(sline, "source.schema", f"unknown schema {name!r} (no schemas were given to resolve it)")
        try:
            text = self.schemas(name)
        except (LookupError, OSError, ValueError):
            self.fail(sline, "source.schema", f"unknown schema {name!r}")
        try:
            return fields_from_avro(text)
        except (ValueError, LookupError, TypeError):
            self.fail(sline, "source.schema", f"schema {name!r} is not an Avro record schema")

    def sink(self, node: Any, path: str, topics: dict[str, str], source: str, dlq: str) -> str:
        to = self.topic(node, "to", path)
        if to in (source, dlq):
            what = "the source topic" if to == source else "the dead-letter topic"
            self.fail(self.key_line(node, "to"), f"{path}.to", f"duplicate topic {to!r}: it is {what}")
        topics.setdefault(to, f"{path}.to")
        return to

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
            self.fail(kline, _join(path, k), "unknown condition (aggregate, all or any)")
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


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, CommentedMap):
        return "a mapping"
    if isinstance(v, CommentedSeq):
        return "a list"
    return f"{type(v).__name__} {v!r}"
