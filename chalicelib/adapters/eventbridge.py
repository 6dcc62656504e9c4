"""Status events to EventBridge, for a deployment that subscribes to them (STATUS_EVENTS): a CDP can trigger on
"undelivered" or "opted out". The outbox consumer publishes them from the ledger's stream; an entry the bus
refuses is sent again, and one still refused is reported so the stream hands its record back."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.events import SOURCE
from chalicelib.observability import logger, metrics

TRIES = 3  # PutEvents refuses single entries under throttling or an internal failure: tried again briefly
BACKOFF_S = 0.2


class EventPublisher:
    def __init__(self, client: Any, bus_name: str, sleep: Any = time.sleep) -> None:
        self.client = client
        self.bus_name = bus_name
        self.sleep = sleep

    def publish(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> int | None:
        """Publish in order, 10 a call (PutEvents' limit); the index of the first entry still refused, or None."""
        for start in range(0, len(entries), 10):
            chunk = [
                {"Source": SOURCE, "DetailType": kind, "Detail": json.dumps(detail), "EventBusName": self.bus_name}
                for kind, detail in entries[start : start + 10]
            ]
            refused = self._put(chunk)
            if refused is not None:
                metrics.add_metric(name="EventsNotPublished", unit="Count", value=len(entries) - start - refused)
                return start + refused
            metrics.add_metric(name="EventsPublished", unit="Count", value=len(chunk))
        return None

    def _put(self, chunk: list[dict[str, Any]]) -> int | None:
        pending = list(range(len(chunk)))
        for attempt in range(TRIES):
            if attempt:
                self.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                result = self.client.put_events(Entries=[chunk[i] for i in pending])
                answers = result.get("Entries") or [{} for _ in pending]
                pending = [i for i, answer in zip(pending, answers, strict=False) if answer.get("ErrorCode")]
            except (ClientError, BotoCoreError) as exc:
                logger.warning("status events not published; trying again", extra={"error": str(exc)})
            if not pending:
                return None
        return min(pending)
