"""Status events to EventBridge, so a CDP can trigger on "undelivered" or "opted out" (and the forward
rule can hand them to their platform). Publishing never fails the caller: a lost event is logged and
counted, while the message record, the source of truth, is already written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.events import SOURCE
from chalicelib.observability import logger, metrics


class EventPublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, detail_type: str, details: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(details), 10):  # PutEvents takes at most 10 entries
            chunk = details[start : start + 10]
            entries = [
                {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(d), "EventBusName": self.bus_name}
                for d in chunk
            ]
            try:
                result = self.client.put_events(Entries=entries)
                failed = int(result.get("FailedEntryCount") or 0)
            except (ClientError, BotoCoreError) as exc:
                failed = len(entries)
                logger.warning("status events not published", extra={"error": str(exc)})
            if failed:
                metrics.add_metric(name="EventsNotPublished", unit="Count", value=failed)
            metrics.add_metric(name="EventsPublished", unit="Count", value=len(entries) - failed)
