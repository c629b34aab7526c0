"""services.schemas.compat and the offline check: evolution rules per mode, reasons naming the field."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from typer.testing import CliRunner

import schemas
from services.cli import app
from services.config import CompatibilityLevel, SchemaSettings
from services.schemas import check_offline
from services.schemas.compat import Version, can_read, check, missing_docs

V1 = schemas.schema_text("transaction")


def evolve(change: Callable[[dict[str, Any]], None]) -> str:
    schema = json.loads(V1)
    change(schema)
    return json.dumps(schema)


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


ADD_WITH_DEFAULT = evolve(
    lambda s: s["fields"].append({"name": "device", "type": ["null", "string"], "default": None, "doc": "d"})
)
ADD_WITHOUT_DEFAULT = evolve(lambda s: s["fields"].append({"name": "device", "type": "string", "doc": "d"}))
REMOVE_WITHOUT_DEFAULT = evolve(lambda s: s["fields"].remove(field(s, "currency")))
RENAME = evolve(lambda s: field(s, "source_account").update(name="payer"))
RENAME_WITH_ALIAS = evolve(lambda s: field(s, "source_account").update(name="payer", aliases=["source_account"]))
TYPE_CHANGE = evolve(lambda s: field(s, "currency").update(type="int"))
SCALE_CHANGE = evolve(lambda s: field(s, "amount")["type"].update(scale=3))


def problems(new: str, level: CompatibilityLevel) -> list[str]:
    return [str(p) for p in check(Version("v2", new), [Version("v1", V1)], level, "transaction")]


@pytest.mark.parametrize("level", ["BACKWARD", "FORWARD", "FULL"])
def test_adding_a_field_with_a_default_passes(level: CompatibilityLevel) -> None:
    assert problems(ADD_WITH_DEFAULT, level) == []


def test_adding_a_field_without_default_fails_backward_naming_it() -> None:
    [problem] = problems(ADD_WITHOUT_DEFAULT, "BACKWARD")
    assert "field 'device'" in problem and "no default" in problem
    assert problems(ADD_WITHOUT_DEFAULT, "FORWARD") == []  # old readers skip the new field


def test_removing_a_field_without_default_fails_when_old_readers_must_read_new_data() -> None:
    for level in ("FORWARD", "FULL", "FULL_TRANSITIVE"):
        [problem] = problems(REMOVE_WITHOUT_DEFAULT, level)
        assert "v1 cannot read data written with v2: field 'currency'" in problem
    assert problems(REMOVE_WITHOUT_DEFAULT, "BACKWARD") == []  # as BACKWARD promises: new reads old


def test_renaming_without_alias_fails_and_hints_the_alias() -> None:
    [problem] = problems(RENAME, "BACKWARD")
    assert "field 'payer'" in problem and "'source_account'" in problem and "aliases" in problem
    assert problems(RENAME_WITH_ALIAS, "BACKWARD") == []
    assert problems(RENAME_WITH_ALIAS, "FULL") != []  # old readers do not know the new name


@pytest.mark.parametrize("level", ["BACKWARD", "FORWARD", "FULL"])
def test_changing_a_type_fails(level: CompatibilityLevel) -> None:
    found = problems(TYPE_CHANGE, level)
    assert found and all("field 'currency'" in p for p in found)
    assert any("int" in p and "string" in p for p in found)


def test_changing_a_decimal_scale_fails_although_avro_resolution_allows_it() -> None:
    [problem] = problems(SCALE_CHANGE, "BACKWARD")
    assert "field 'amount'" in problem and "decimal(18,3)" in problem and "decimal(18,2)" in problem


def test_none_accepts_anything_and_transitive_checks_every_version() -> None:
    assert problems(TYPE_CHANGE, "NONE") == []
    history = [Version("v1", V1), Version("v2", ADD_WITH_DEFAULT)]
    # v3 drops a required field: the latest (v2) cannot read it under FORWARD
    v3 = evolve(lambda s: s["fields"].remove(field(s, "currency")))
    assert check(Version("v3", v3), history, "FORWARD") != []
    v3_ok_latest = ADD_WITH_DEFAULT.replace('"doc": "d"', '"doc": "changed"')
    assert check(Version("v3", v3_ok_latest), history, "FORWARD_TRANSITIVE") == []
    # ...and a v3 that v1 cannot read is caught only transitively
    v1_breaker = [Version("v1", ADD_WITHOUT_DEFAULT), Version("v2", V1)]
    assert check(Version("v3", V1), v1_breaker, "FORWARD") == []
    assert check(Version("v3", V1), v1_breaker, "FORWARD_TRANSITIVE") != []


def _roundtrip(writer: str, reader: str, record: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(json.loads(writer)), record)
    buf.seek(0)
    result = schemaless_reader(buf, parse_schema(json.loads(writer)), parse_schema(json.loads(reader)))
    assert isinstance(result, dict)
    return result


RECORD = {
    "transaction_id": "t",
    "source_account": "ACC1",
    "target_account": "ACC2",
    "amount": Decimal("1000.00"),
    "currency": "EUR",
    "event_time": 1_767_225_600_000,
}


def test_what_the_checker_accepts_really_decodes_both_ways() -> None:
    """Under FULL, adding a defaulted field: a v1 reader decodes v2 data and a v2 reader decodes v1 data."""
    assert problems(ADD_WITH_DEFAULT, "FULL") == []
    old_reads_new = _roundtrip(ADD_WITH_DEFAULT, V1, {**RECORD, "device": "pos-1"})
    assert "device" not in old_reads_new and old_reads_new["amount"] == Decimal("1000.00")
    assert _roundtrip(V1, ADD_WITH_DEFAULT, RECORD)["device"] is None
    # BACKWARD rename with alias: the new reader reads old data under the new name
    assert _roundtrip(V1, RENAME_WITH_ALIAS, RECORD)["payer"] == "ACC1"


def test_what_the_checker_rejects_really_fails_to_decode() -> None:
    assert can_read(Version("v1", V1), Version("v2", REMOVE_WITHOUT_DEFAULT)) != []
    with pytest.raises(Exception, match="currency"):
        _roundtrip(REMOVE_WITHOUT_DEFAULT, V1, {k: v for k, v in RECORD.items() if k != "currency"})


def test_repository_schemas_are_documented_and_compatible_with_their_history() -> None:
    """What CI's offline check runs: every .avsc parses, has docs, and fits its history."""
    findings = check_offline(SchemaSettings())
    assert [f.text for f in findings if f.error] == []
    assert set(schemas.schema_names()) >= {"transaction", "transaction_label"}
    for name in schemas.schema_names():
        assert schemas.history(name), f"{name} has no history"
        assert missing_docs(schemas.schema_text(name)) == []


def _schema_dir(tmp_path: Path, current: str) -> Path:
    shutil.copytree(schemas.SCHEMA_DIR / "history", tmp_path / "history", dirs_exist_ok=True)
    (tmp_path / "transaction.avsc").write_text(current)
    (tmp_path / "transaction_label.avsc").write_text(schemas.schema_text("transaction_label"))
    return tmp_path


def test_offline_check_cli_exits_non_zero_naming_the_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["schemas", "check", "--offline", "--schemas-dir", str(_schema_dir(tmp_path, TYPE_CHANGE))]
    )
    assert result.exit_code == 1, result.output
    assert "field 'currency'" in result.output
    ok = CliRunner().invoke(
        app, ["schemas", "check", "--offline", "--schemas-dir", str(_schema_dir(tmp_path, ADD_WITH_DEFAULT))]
    )
    assert ok.exit_code == 0, ok.output
    assert "differs from history v1" in ok.output


def test_offline_check_reports_missing_docs_and_unparsable_schemas(tmp_path: Path) -> None:
    undocumented = evolve(lambda s: field(s, "country").pop("doc"))
    findings = check_offline(SchemaSettings(), schema_dir=_schema_dir(tmp_path, undocumented))
    assert any("field 'country' has no doc" in f.text for f in findings if f.error)
    broken = _schema_dir(tmp_path, '{"type": "record", "name": "T", "fields": [{"name": "a", "type": "strin"}]}')
    findings = check_offline(SchemaSettings(), schema_dir=broken)
    assert any("does not parse" in f.text and "strin" in f.text for f in findings if f.error)


def test_per_subject_level_is_used() -> None:
    settings = SchemaSettings(subject_compatibility={"queueing.transactions-value": "FORWARD"})
    assert settings.level("queueing.transactions-value") == "FORWARD"
    assert settings.level("queueing.transactions.labels-value") == "BACKWARD"
