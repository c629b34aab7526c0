"""The analyst's side of the dashboard's state: the alert queue and the transactions seen, both bounded.

``AlertQueue`` keeps one entry per fraud transaction (its fraud decision and its
``FraudAlert`` merged), far longer than the live list. ``SeenIndex`` keeps the
decisions seen by transaction id and, per account, the latest few, for the drill-down.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any

from services.dashboard.catalog import RuleCatalog, evidence_text

Event = dict[str, Any]

QUEUE_KINDS = ("fraud", "alert")
DECISION_KINDS = ("legit", "fraud")


def evidence_items(rules: list[str], evidence_header: str | None, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The evidence of a decision as a flat list, each item naming its rule (``id@version``).

    From a fraud record's ``fraudstream.evidence`` header (JSON, by rule ref), else from a decoded
    ``FraudAlert`` (``alert["evidence"]``, by rule id). Unreadable evidence is an empty list.
    """
    if evidence_header:
        try:
            doc = json.loads(evidence_header)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return [{"rule": str(ref), **item} for ref, items in doc.items() if isinstance(items, list)
                    for item in items if isinstance(item, dict)]
    refs = {ref.split("@", 1)[0]: ref for ref in rules}
    out = []
    for item in alert.get("evidence") or ():
        if isinstance(item, dict):
            rule_id = str(item.get("rule_id", ""))
            out.append({"rule": refs.get(rule_id, rule_id), **{k: v for k, v in item.items() if k != "rule_id"}})
    return out


def related_ids(evidence: list[dict[str, Any]]) -> list[str]:
    """The transaction ids the evidence names, each once, in order."""
    seen: dict[str, None] = {}
    for item in evidence:
        for tid in item.get("transactions") or ():
            seen[str(tid)] = None
    return list(seen)


def queue_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a queue entry the browser lists (no evidence)."""
    return {k: entry[k] for k in ("key", "tx", "rules", "kinds", "received_ms")}


class AlertQueue:
    """The last ``capacity`` fraud transactions, one entry each, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @staticmethod
    def key(event: Event) -> str:
        """Its transaction id (a fraud record and its alert share it), else where it was read."""
        tid = (event.get("tx") or {}).get("transaction_id")
        return str(tid) if tid is not None else str(event["id"])

    def add(self, event: Event) -> dict[str, Any] | None:
        """Take a fraud decision or an alert into the queue (merged with its twin); other kinds are ignored."""
        if event["kind"] not in QUEUE_KINDS:
            return None
        key = self.key(event)
        entry = self.entries.get(key)
        if entry is None:
            entry = {"key": key, "tx": dict(event["tx"]), "rules": [], "kinds": [], "evidence": [],
                     "events": [], "version": None, "received_ms": event["received_ms"]}
            self.entries[key] = entry
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        for ref in event["rules"]:
            if ref not in entry["rules"]:
                entry["rules"].append(ref)
        if event["kind"] not in entry["kinds"]:
            entry["kinds"].append(event["kind"])
        entry["events"].append(event["id"])
        entry["version"] = entry["version"] or event.get("version")
        if not entry["evidence"] and event.get("evidence"):
            entry["evidence"] = event["evidence"]
        for name, value in event["tx"].items():
            if entry["tx"].get(name) is None:
                entry["tx"][name] = value
        return entry

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def rows(self) -> list[dict[str, Any]]:
        """Every entry in compact form, newest first."""
        return [queue_row(e) for e in reversed(self.entries.values())]

    def __len__(self) -> int:
        return len(self.entries)


class SeenIndex:
    """Decisions seen, by transaction id (the last ``capacity``) and by source account (the last ``per_account``)."""

    def __init__(self, capacity: int, per_account: int = 20, accounts: int = 20_000) -> None:
        self.capacity = capacity
        self.per_account = per_account
        self.max_accounts = accounts
        self.by_id: OrderedDict[str, Event] = OrderedDict()
        self.by_account: OrderedDict[str, deque[str]] = OrderedDict()

    def add(self, event: Event) -> None:
        """Index a decision (other kinds are ignored)."""
        if event["kind"] not in DECISION_KINDS:
            return
        tx = event["tx"]
        tid, account = tx.get("transaction_id"), tx.get("source_account")
        if tid is None:
            return
        tid, by_id = str(tid), self.by_id
        if tid in by_id:
            by_id.move_to_end(tid)
        by_id[tid] = event
        if len(by_id) > self.capacity:
            by_id.popitem(last=False)
        if account is not None:
            self._by_account(str(account)).append(tid)

    def _by_account(self, account: str) -> deque[str]:
        """The account's id list, made the most recently used (the least recently used account goes)."""
        ids = self.by_account.get(account)
        if ids is None:
            ids = self.by_account[account] = deque(maxlen=self.per_account)
            if len(self.by_account) > self.max_accounts:
                self.by_account.popitem(last=False)
        else:
            self.by_account.move_to_end(account)
        return ids

    def lookup(self, ids: list[str]) -> list[dict[str, Any]]:
        """For each id, the decision seen (``event``) or only the id (``event: None``)."""
        return [{"transaction_id": tid, "event": self.by_id.get(tid)} for tid in ids]

    def account(self, account: str | None) -> list[Event]:
        """The account's decisions still indexed, newest first."""
        ids = self.by_account.get(account or "") or ()
        return [self.by_id[tid] for tid in reversed(ids) if tid in self.by_id]


def alert_detail(entry: dict[str, Any], catalog: RuleCatalog, seen: SeenIndex) -> dict[str, Any]:
    """Everything the drill-down shows: the rules with descriptions, the evidence as text, related and account rows."""
    rules = [catalog.describe(ref) for ref in entry["rules"]]
    windows = {name: w for rule in rules for name, w in rule["windows"].items()}
    evidence = [{**item, "text": evidence_text(item, windows)} for item in entry["evidence"]]
    related = [tid for tid in related_ids(entry["evidence"]) if tid != entry["key"]]
    account = entry["tx"].get("source_account")
    return {
        **queue_row(entry),
        "version": entry["version"],
        "events": entry["events"],
        "rules_fired": rules,
        "evidence": evidence,
        "related": seen.lookup(related),
        "account": account,
        "account_recent": seen.account(account),
    }
