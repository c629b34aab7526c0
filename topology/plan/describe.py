"""Print a topology: text like Kafka Streams' ``Topology.describe()``, or a Mermaid flowchart."""

from __future__ import annotations

from dataclasses import dataclass

from topology.plan.model import Topology


@dataclass(frozen=True)
class Node:
    """One node of the described graph."""

    kind: str  # Source, Processor, Sink
    name: str
    detail: str
    successors: tuple[str, ...] = ()


def graph(t: Topology) -> list[list[Node]]:
    """The nodes of each sub-topology (stage), in order."""
    stages = t.stages
    out: list[list[Node]] = []
    for st in stages:
        i = st.index
        last = i == len(stages) - 1
        nodes: list[Node] = []
        src, dec, agg = f"source-{i}", f"decode-{i}", f"aggregate-{i}"
        key = ",".join(st.key_fields)
        nodes.append(Node("Source", src, f"topics: [{st.input_topic}], key: {key}", (dec,)))
        after = agg if st.stores else ("split" if last else f"repartition-{i + 1}")
        nodes.append(Node("Processor", dec, "Avro, Confluent wire format", (after, "dlq")))
        if st.stores:
            stores = ", ".join(s.name for s in st.stores)
            nxt = "split" if last else f"repartition-{i + 1}"
            nodes.append(Node("Processor", agg, f"windowed aggregates, stores: [{stores}]", (nxt, "dlq")))
        if not last:
            nxt_stage = stages[i + 1]
            detail = f"topic: {nxt_stage.input_topic}, key: {','.join(nxt_stage.key_fields)}"
            nodes.append(Node("Sink", f"repartition-{i + 1}", detail))
        else:
            names = [f"branch-{b.name}" for b in t.branches] + [f"branch-{t.default.name}"]
            nodes.append(Node("Processor", "split", "first match wins; each rule evaluated once", (*names, "dlq")))
            alert = ("sink-alerts",) if t.alerts is not None else ()
            for b in t.branches:
                rules = ", ".join(r.ref for r in b.rules)
                nodes.append(Node("Processor", f"branch-{b.name}", f"rules: [{rules}]", (f"sink-{b.name}", *alert)))
            nodes.append(
                Node("Processor", f"branch-{t.default.name}", "default branch", (f"sink-{t.default.name}",))
            )
            for b in t.branches:
                nodes.append(Node("Sink", f"sink-{b.name}", f"topic: {b.to}"))
            nodes.append(Node("Sink", f"sink-{t.default.name}", f"topic: {t.default.to}"))
            if t.alerts is not None:
                nodes.append(Node("Sink", "sink-alerts", f"topic: {t.alerts} (FraudAlert per decision)"))
        nodes.append(Node("Sink", "dlq", f"topic: {t.dlq}"))
        out.append(nodes)
    return out


def describe_text(t: Topology) -> str:
    """The topology as text, in the layout of Kafka Streams' ``Topology.describe()``."""
    lines = [f"Topology: {t.name}", "Topologies:"]
    for i, nodes in enumerate(graph(t)):
        lines.append(f"   Sub-topology: {i}")
        preds: dict[str, list[str]] = {}
        for n in nodes:
            for s in n.successors:
                preds.setdefault(s, []).append(n.name)
        for n in nodes:
            lines.append(f"    {n.kind}: {n.name} ({n.detail})")
            if n.successors:
                lines.append(f"      --> {', '.join(n.successors)}")
            if n.name in preds:
                lines.append(f"      <-- {', '.join(preds[n.name])}")
    stores = t.stores
    if stores:
        lines.append("State stores:")
        for store in stores:
            lines.append(f"    {store.name} (sub-topology {store.stage}): {store.aggregate}")
            lines.append(f"      changelog: {store.changelog_topic}")
    lines.append("Rules:")
    for b in t.branches:
        for r in b.rules:
            desc = f" -- {r.description}" if r.description else ""
            lines.append(f"    {r.ref} [{b.name}]: {r.condition}{desc}")
    return "\n".join(lines) + "\n"


def describe_mermaid(t: Topology) -> str:
    """The topology as a Mermaid flowchart (one subgraph per sub-topology)."""
    lines = ["flowchart LR"]
    topics: dict[str, str] = {}

    def topic_id(name: str) -> str:
        if name not in topics:
            topics[name] = f"T{len(topics)}"
        return topics[name]

    edges: list[str] = []
    for i, nodes in enumerate(graph(t)):
        lines.append(f'  subgraph S{i}["sub-topology {i}"]')
        for n in nodes:
            if n.name == "dlq":
                continue
            label = _escape(f"{n.name}<br/>{_short(n)}")
            lines.append(f'    N{i}_{_id(n.name)}["{label}"]')
        lines.append("  end")
        for n in nodes:
            if n.kind == "Source":
                edges.append(f"  {topic_id(_topic_of(n))} --> N{i}_{_id(n.name)}")
            for s in n.successors:
                if s == "dlq":
                    edges.append(f"  N{i}_{_id(n.name)} -. error .-> {topic_id(t.dlq)}")
                else:
                    edges.append(f"  N{i}_{_id(n.name)} --> N{i}_{_id(s)}")
            if n.kind == "Sink" and n.name != "dlq":
                edges.append(f"  N{i}_{_id(n.name)} --> {topic_id(_topic_of(n))}")
    for name, tid in topics.items():
        lines.append(f'  {tid}[("{_escape(name)}")]')
    lines.extend(dict.fromkeys(edges))
    return "\n".join(lines) + "\n"


def _topic_of(n: Node) -> str:
    d = n.detail
    if d.startswith("topics: ["):
        return d[len("topics: [") : d.index("]")]
    return d[len("topic: ") :].split(",")[0].split(" ")[0]


def _short(n: Node) -> str:
    return n.detail if len(n.detail) <= 80 else n.detail[:77] + "..."


def _id(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _escape(s: str) -> str:
    return s.replace('"', "#quot;")
