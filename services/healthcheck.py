"""``python -m services.healthcheck SERVICE``: the Docker HEALTHCHECK of one service's container.

Exit 0 when the service answers over HTTP on the port its settings (environment) give it:
the dashboard's ``/healthz``, the alerts' ``/healthz``, the detector's and the generator's
``/metrics`` (each image sets its port). A
service without a metrics port configured falls back to checking that the Kafka broker
it depends on answers a metadata request (weaker: it says the dependency is up, not the
process; the container's main process exiting is what Docker sees for the rest).
"""

from __future__ import annotations

import sys
import urllib.request

from confluent_kafka.admin import AdminClient
from pydantic_settings import BaseSettings

from services.config import AlertsSettings, DashboardSettings, DetectorSettings, GeneratorSettings, KafkaSettings
from services.kafka import admin_config

TIMEOUT_S = 4.0


def probe_url(service: str) -> str | None:
    """The URL that says ``service`` is healthy, or ``None`` when it serves no HTTP endpoint."""
    if service == "dashboard":
        return f"http://127.0.0.1:{DashboardSettings().port}/healthz"
    sections: dict[str, tuple[type[BaseSettings], str]] = {
        "alerts": (AlertsSettings, "/healthz"),
        "detector": (DetectorSettings, "/metrics"),
        "generator": (GeneratorSettings, "/metrics"),
    }
    if service not in sections:
        raise SystemExit(f"unknown service {service!r}: one of dashboard, {', '.join(sections)}")
    section, path = sections[service]
    port = getattr(section(), "metrics_port", None)
    return None if port is None else f"http://127.0.0.1:{port}{path}"


def check(service: str) -> str:
    """What answered; raises ``OSError``/``RuntimeError`` when nothing healthy did."""
    url = probe_url(service)
    if url is not None:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # non-2xx raises HTTPError (an OSError)
            return f"{url} -> HTTP {resp.status}"
    kafka = KafkaSettings()
    bootstrap = kafka.bootstrap_servers
    metadata = AdminClient(admin_config(kafka)).list_topics(timeout=TIMEOUT_S)
    if not metadata.brokers:
        raise RuntimeError(f"no broker in the metadata from {bootstrap}")
    return f"Kafka at {bootstrap}: {len(metadata.brokers)} broker(s)"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m services.healthcheck dashboard|alerts|detector|generator", file=sys.stderr)
        return 2
    try:
        print(check(argv[1]))
    except Exception as exc:  # any failure means unhealthy; say why in `docker inspect`
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
