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

A rule and its condition are read by ``topology.plan.reader.RuleReader``, which this loader extends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from topology.plan.expr import FieldType, fields_from_avro
from topology.plan.model import Branch, DefaultBranch, PlanError, Rule, Topology, check_topic
from topology.plan.reader import RuleReader, TopologyError, join_path

__all__ = ["SchemaResolver", "TopologyError", "load_topology", "load_yaml", "loads_topology"]

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


class _Loader(RuleReader):
    """Reads a topology document: its source, topics, rules and branches (the rules: ``RuleReader``)."""

    def __init__(
        self, file: str, fields: Mapping[str, FieldType] | None, *, schemas: SchemaResolver | None = None,
        known_topics: Collection[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(file, fields)
        self.known_topics = None if known_topics is None else set(known_topics)
        self.given_fields = fields  # for a source that names no schema
        self.schemas = schemas

    def topic(self, node: Any, key: str, path: str) -> str:
        name = self.get(node, key, path, str)
        line = self.key_line(node, key)
        try:
            check_topic(name)
        except PlanError as exc:
            self.fail(line, join_path(path, key), str(exc))
        if self.known_topics is not None and name not in self.known_topics:
            known = ", ".join(sorted(self.known_topics))
            self.fail(line, join_path(path, key), f"unknown topic {name!r} (known: {known})")
        return str(name)

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
