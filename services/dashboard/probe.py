"""Every few seconds, off the event loop: the detector group's lag and members, and run-time rule changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.dashboard.catalog import RuleRecord
from services.dashboard.health import probe_group
from services.dashboard.hub import Hub
from services.rules.feed import RulesFeed
from topology.runtime.outage import KafkaOutage

log = logging.getLogger(__name__)


class Probe:
    """Asks the AdminClient about ``group_id`` and reads the rules topic (when set), for the hub.

    No admin request while the admin client's own broker outage lasts (``outage``, fed by its error
    callback): one that timed out in a 2-minute outage crashed the process in librdkafka (assertion in
    ``rd_kafka_enq_once_del_source_return``, confluent-kafka 2.16.0, seen here). Meanwhile a plain metadata
    request asks whether the broker is back.
    """

    def __init__(self, admin_config: dict[str, Any], group_id: str, hub: Hub, *, interval_s: float = 5.0,
                 rules: RulesFeed | None = None, admin: Any = None) -> None:  # fmt: skip
        self.outage = KafkaOutage(log)
        config: dict[str, Any] = {**admin_config, "error_cb": self.outage.client_error}
        self.admin = admin or AdminClient(config)
        self.group_id = group_id
        self.hub = hub
        self.interval_s = interval_s
        self.rules = rules

    def _once(self) -> tuple[dict[str, Any], list[RuleRecord]]:
        records: list[RuleRecord] = []
        if self.rules is not None:
            try:
                records = list(self.rules.poll())
            except Exception as exc:  # the rules topic is optional: log and go on
                log.warning("rules topic %s: %s", self.rules.topic, exc)
        now_ms = int(time.time() * 1000)
        if not self._reachable():
            return {"group_id": self.group_id, "probed_ms": now_ms, "error": "the Kafka broker is unreachable"}, records
        return probe_group(self.admin, self.group_id, now_ms), records

    def _reachable(self) -> bool:
        """Serve the admin client's error callback; during its outage, a metadata request (no admin request)
        whose answer ends it."""
        self.admin.poll(0)
        if not self.outage.down:
            return True
        try:
            self.admin.list_topics(timeout=5.0)
        except KafkaException:
            return False
        self.admin.poll(0)  # errors queued before that answer belong to the outage it ends
        self.outage.back()
        return not self.outage.down

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-probe")
        try:
            while not stop.is_set():
                group, records = await loop.run_in_executor(executor, self._once)
                self.hub.health.group = group
                self.hub.catalog.learn(records)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
        finally:
            if self.rules is not None:
                await loop.run_in_executor(executor, self.rules.close)
            executor.shutdown(wait=True)
