"""services.metrics: counting from record headers, librdkafka stats, exposition over HTTP."""

from __future__ import annotations

import json
import urllib.request

from services.metrics import Metrics, header, rule_ids
from topology.records import OutRecord


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics("a"), Metrics("b")
    a.generated.inc(3)
    assert value(a, "fraudstream_generator_records_total") == 3
    assert value(b, "fraudstream_generator_records_total") == 0


def test_header_and_rule_ids() -> None:
    hdrs = [("x", b"1"), ("fraudstream.rules", b"big_amount@2, night@1"), ("bad", b"\xff")]
    assert header(hdrs, "fraudstream.rules") == "big_amount@2, night@1"
    assert header(hdrs, "bad") == "\ufffd"
    assert header(hdrs, "missing") is None
    assert header(None, "x") is None
    assert rule_ids("big_amount@2, night@1") == ["big_amount@2", "night@1"]
    assert rule_ids("") == [] and rule_ids(None) == []


def test_count_outputs_by_branch_rule_and_dlq() -> None:
    m = Metrics("detector")
    out = [
        OutRecord("fraud", b"k", b"v", (("fraudstream.branch", b"fraud"), ("fraudstream.rules", b"r1@1,r2@3"))),
        OutRecord("fraud", b"k", b"v", (("fraudstream.branch", b"fraud"), ("fraudstream.rules", b"r1@1"))),
        OutRecord("legit", b"k", b"v", (("fraudstream.branch", b"legit"), ("fraudstream.rules", b""))),
        OutRecord("dlq", b"k", b"v", (("error.class", b"DecodeError"),)),
    ]
    m.count_outputs(out, dlq_topic="dlq")
    assert value(m, "fraudstream_records_out_total", topic="fraud", branch="fraud") == 2
    assert value(m, "fraudstream_records_out_total", topic="legit", branch="legit") == 1
    assert value(m, "fraudstream_rule_hits_total", rule="r1@1") == 2
    assert value(m, "fraudstream_rule_hits_total", rule="r2@3") == 1
    assert value(m, "fraudstream_dlq_records_total", error_class="DecodeError") == 1
    assert value(m, "fraudstream_records_out_total", topic="dlq", branch="dead-letter") == 1


def test_on_stats_sets_known_lags_only() -> None:
    m = Metrics("detector")
    stats = {
        "topics": {
            "t": {"partitions": {"0": {"consumer_lag": 7}, "1": {"consumer_lag": -1}, "-1": {"consumer_lag": 9}}}
        }
    }
    m.on_stats(json.dumps(stats))
    assert value(m, "fraudstream_consumer_lag", topic="t", partition="0") == 7
    assert value(m, "fraudstream_consumer_lag", topic="t", partition="1") is None
    assert value(m, "fraudstream_consumer_lag", topic="t", partition="-1") is None


def test_commit_latency_histogram_and_render() -> None:
    m = Metrics("detector", instance="host-1")
    with m.commit_latency.time():
        pass
    body, content_type = m.render()
    text = body.decode()
    assert "fraudstream_transaction_commit_seconds_count 1.0" in text
    assert 'fraudstream_service_info{instance="host-1",service="detector"} 1.0' in text
    assert content_type.startswith("text/plain")


def test_serve_answers_on_loopback_and_stops() -> None:
    m = Metrics("generator")
    m.generated.inc(5)
    with m.serve(0, addr="127.0.0.1") as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "fraudstream_generator_records_total 5.0" in text
    assert not server.thread.is_alive()
