"""The connection section: typed security fields, pass-through properties, secret files and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import RedactingStream, app
from services.client_properties import PropertiesError, load, redact_url
from services.config import KafkaSettings
from services.kafka import admin_config, consumer_config, producer_config


def test_typed_fields_and_pass_through_reach_every_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "detector")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE", "true")
    kafka = KafkaSettings()
    for config in (producer_config(kafka), consumer_config(kafka, "g"), admin_config(kafka)):
        assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "detector" and config["sasl.password"] == "s3cret-pw"
        assert config["socket.keepalive.enable"] == "true"
    assert "s3cret-pw" not in repr(kafka)


def test_properties_file_java_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# a Java client.properties\n"
        "bootstrap.servers=broker-1:9093\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="alice" password="pa\\"ss";\n'
        "socket.keepalive.enable=false\n"
    )
    monkeypatch.setenv("KAFKA_CLIENT_PROPERTIES", str(props))
    monkeypatch.setenv("KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE", "true")  # the environment wins over the file
    config = KafkaSettings().client_config()
    assert config["bootstrap.servers"] == "broker-1:9093"  # the file's: KAFKA_BOOTSTRAP_SERVERS is not set
    assert config["sasl.username"] == "alice" and config["sasl.password"] == 'pa"ss'
    assert config["socket.keepalive.enable"] == "true"
    assert KafkaSettings(bootstrap_servers="other:9092").client_config()["bootstrap.servers"] == "other:9092"
    assert 'pa"ss' in KafkaSettings().secrets()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("security.protocol=SASL_SSL\n\nssl.truststore.location=/x.jks\n", ":3: key 'ssl.truststore.location'"),
        ("acks=all\njust-a-word-without-value\n", ":2: key 'just-a-word-without-value'"),
        ("sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required;\n", ":1: key 'sasl.jaas.config'"),
        ("security.protocol=NOPE\n", ":1: key 'security.protocol'"),
    ],
)
def test_bad_properties_file_names_file_line_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    props = tmp_path / "bad.properties"
    props.write_text(text)
    with pytest.raises(PropertiesError, match=str(props)) as err:
        load(props)
    assert fragment in str(err.value)


def test_bad_properties_file_is_one_line_from_the_cli(tmp_path: Path) -> None:
    props = tmp_path / "bad.properties"
    props.write_text("foo.bar=1\n")
    result = CliRunner().invoke(app, ["consume", "--topic", "t"], env={"KAFKA_CLIENT_PROPERTIES": str(props)})
    assert result.exit_code != 0
    assert isinstance(result.exception, PropertiesError) and ":1: key 'foo.bar'" in str(result.exception)


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    (tmp_path / "sr").write_text("reader:sr-pass\n")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE", str(tmp_path / "sr"))
    monkeypatch.setenv("SCHEMA_REGISTRY_SSL_CA_LOCATION", "/etc/ca.pem")
    kafka = KafkaSettings()
    assert kafka.client_config()["sasl.password"] == "from-a-file"
    assert kafka.registry_config() == {
        "url": "http://127.0.0.1:8081", "basic.auth.user.info": "reader:sr-pass", "ssl.ca.location": "/etc/ca.pem",
    }
    assert kafka.redact("user reader:sr-pass, password from-a-file") == "user ***, password ***"


def test_missing_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="KAFKA_SASL_PASSWORD_FILE="):
        KafkaSettings()


def test_urls_are_redacted() -> None:
    assert redact_url("https://bob:pw@sr.example.com/x?token=abc&v=1") == "https://***@sr.example.com/x?token=***&v=1"
    assert redact_url("http://127.0.0.1:8081") == "http://127.0.0.1:8081"


def test_stderr_is_redacted() -> None:
    import io

    inner = io.StringIO()
    RedactingStream(inner, ["hunter2-secret"]).write("auth with hunter2-secret at http://u:p@h:1\n")
    assert inner.getvalue() == "auth with *** at http://***@h:1\n"


@pytest.mark.parametrize("command", [["consume"], ["produce"], ["generate"], ["detect"], ["evaluate"], ["stack", "up"]])
def test_help_shows_no_secret(command: list[str]) -> None:
    env = {"KAFKA_SASL_PASSWORD": "help-secret-1", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:help-secret-2"}
    result = CliRunner().invoke(app, [*command, "--help"], env=env)
    assert result.exit_code == 0 and "help-secret" not in result.output
