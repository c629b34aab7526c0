"""Java-style ``client.properties`` files, ``KAFKA_CONFIG_<NAME>`` pass-through, and secret redaction.

A properties file is read the way users already keep one for the Java tools:
``key=value`` (or ``key: value``) lines, ``#``/``!`` comments, ``\\`` line continuations.
``sasl.jaas.config`` of the PLAIN and SCRAM login modules becomes ``sasl.username``/``sasl.password``
(librdkafka has no JAAS). Every key is checked against librdkafka, so a bad file is one
error naming the file, the line and the key.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

ENV_PREFIX = "KAFKA_CONFIG_"

# Property names whose values are secrets (redacted wherever they could be printed).
_SECRET_NAME = re.compile(r"password|secret|jaas|user\.info|token(?!\.endpoint)|credential", re.IGNORECASE)
_JAAS = re.compile(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")
_URL_QUERY_SECRET = re.compile(r"([?&](?:[\w.-]*(?:token|secret|password|key|sig|signature))=)[^&\s]+", re.IGNORECASE)


class PropertiesError(ValueError):
    """A client properties file that cannot be used (the message names file, line and key)."""


def is_secret(name: str) -> bool:
    """Whether the client property ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(name))


def from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE=true`` -> ``{"socket.keepalive.enable": "true"}``."""
    return {
        name[len(ENV_PREFIX):].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }


@functools.lru_cache(maxsize=8)
def load(path: Path) -> dict[str, str]:
    """The librdkafka properties of a Java-style properties file (checked; raises ``PropertiesError``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PropertiesError(f"{path}: cannot read the client properties file ({exc.strerror})") from None
    entries = parse(text, str(path))
    properties = {key: value for key, (value, _line) in entries.items()}
    check(properties, {key: line for key, (_value, line) in entries.items()}, str(path))
    return properties


def parse(text: str, source: str) -> dict[str, tuple[str, int]]:
    """``key -> (value, line number)`` of properties ``text`` (JAAS config translated)."""
    entries: dict[str, tuple[str, int]] = {}
    for number, line in _logical_lines(text):
        match = re.match(r"\s*([^=:\s]+)\s*(?:[=:\s]\s*(.*?))?\s*$", line)
        if match is None:
            raise PropertiesError(f"{source}:{number}: expected key=value, got {_redact_line(line)!r}")
        key, value = match.group(1), match.group(2) or ""
        if key == "sasl.jaas.config":
            for name, found in _jaas_credentials(value, source, number).items():
                entries[name] = (found, number)
            continue
        entries[key] = (value, number)
    return entries


def check(properties: Mapping[str, str], lines: Mapping[str, int], source: str) -> None:
    """Raise ``PropertiesError`` naming the line and key librdkafka does not accept."""
    from confluent_kafka import KafkaException, Producer

    def refusal(config: Mapping[str, str]) -> str | None:
        # No broker: only the configuration is checked. Placeholders for what the typed fields
        # (KAFKA_SASL_*) may add; librdkafka's default mechanism, GSSAPI, is not built in.
        try:
            Producer({"sasl.mechanism": "PLAIN", "sasl.username": "-", "sasl.password": "-", **config, "log_level": 0})
        except KafkaException as exc:
            return str(exc.args[0].str())
        return None

    candidate = {k: v for k, v in properties.items() if k != "bootstrap.servers"}
    reason = refusal(candidate)
    if reason is None:
        return
    # The first key refused on its own (in file order), else the first whose removal makes the rest fine.
    key = next((k for k in candidate if refusal({k: candidate[k]}) is not None), None)
    key = key or next((k for k in candidate if refusal({o: v for o, v in candidate.items() if o != k}) is None), None)
    where = f"{source}:{lines[key]}" if key is not None and key in lines else source
    raise PropertiesError(f"{where}: key {key!r}: {reason}" if key else f"{where}: {reason}")


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        start = start if pending else number
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _jaas_credentials(value: str, source: str, number: int) -> dict[str, str]:
    if "ScramLoginModule" not in value and "PlainLoginModule" not in value:
        raise PropertiesError(
            f"{source}:{number}: key 'sasl.jaas.config': only the PLAIN and SCRAM login modules can be "
            "translated for librdkafka; set sasl.* properties instead"
        )
    found = {f"sasl.{name}": secret.replace('\\"', '"') for name, secret in _JAAS.findall(value)}
    if set(found) != {"sasl.username", "sasl.password"}:
        raise PropertiesError(f"{source}:{number}: key 'sasl.jaas.config': needs username=\"...\" password=\"...\"")
    return found


def _redact_line(line: str) -> str:
    return line if not is_secret(line.split("=", 1)[0]) else line.split("=", 1)[0] + "=***"


def redact_url(url: str) -> str:
    """``url`` without its user info and without secret-looking query values."""
    return _URL_QUERY_SECRET.sub(r"\1***", _URL_USERINFO.sub("***@", url))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value, URL user info and URL query token replaced by ``***``."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_url(text)
