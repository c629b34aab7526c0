"""The alert contract: with an ``alerts`` topic, every decision of a non-default branch also gets a
document, which the service's ``AlertWriter`` builds from what the processor knows (``AlertFacts``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from topology.plan.model import Rule


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """One decision of a non-default branch, as the processor knows it."""

    value: Mapping[str, Any]  # the decoded input (the writer's ``fields`` are always present)
    rules: tuple[Rule, ...]  # the rules that fired
    evidence: Mapping[str, Sequence[Mapping[str, Any]]]  # per rule ref: its aggregates against thresholds
    version: str  # the processor's version (rules in force)


class AlertWriter(Protocol):
    """Builds the alert record of a decision; raising ``EncodeError`` or a bad-data error dead-letters the
    input (reason ``alert``)."""

    @property
    def fields(self) -> frozenset[str]:
        """The input fields ``write`` reads (kept for it through decoding and repartition stages)."""
        ...

    def write(self, facts: AlertFacts) -> tuple[bytes | None, bytes]:
        """The alert record's key and value."""
        ...
