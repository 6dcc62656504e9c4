"""The SQS send trigger: a batch of up to 50 records, sent 25 at a time, partial failures reported.

Each record runs on a thread of a pool, so sends overlap instead of queueing. A
record whose send must be retried raises, and is listed in batchItemFailures (the
merge template sets ReportBatchItemFailures); SQS then redelivers it, and after
maxReceiveCount moves it to the DLQ. (Powertools' AsyncBatchProcessor did the same
with asyncio; the twenty lines here cost ~30 ms less cold start than its imports.)

After the batch, its status events go to EventBridge in one call and one poll
execution starts for the messages Twilio took (DESIGN §3.4).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chalicelib import events
from chalicelib.events import EventPublisher
from chalicelib.observability import logger, metrics
from chalicelib.services import RetryLater, SendOutcome, SendService
from chalicelib.workflow import PollTarget, PollWorkflow, WorkflowError

# The API (POST /messages) names the ledger record it already wrote with this attribute.
MESSAGE_ID_ATTRIBUTE = "connector_message_id"
FINISH_MARGIN_S = 2.0  # what the invocation keeps after the last Twilio call: recording, events, poll start


@dataclass(frozen=True)
class TimeBudget:
    """When the invocation must stop: no send starts after `start_by`, no Twilio retry runs past `finish_by`
    (both time.monotonic()). Records not started go back to the queue as batch item failures."""

    start_by: float
    finish_by: float

    @classmethod
    def of(cls, context: Any, one_send_s: float) -> TimeBudget | None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        finish_by = time.monotonic() + remaining() / 1000 - FINISH_MARGIN_S
        return cls(start_by=finish_by - one_send_s, finish_by=finish_by)


class SendConsumer:
    def __init__(
        self,
        service: SendService,
        publisher: EventPublisher,
        workflow: PollWorkflow | None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.workflow = workflow
        # SEND_CONCURRENCY sends in flight: part of the account's budget of requests to Twilio (README, Limits)
        workers = service.settings.send_concurrency
        self.executor = executor or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send")

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        records = list(event.get("Records") or [])
        budget = TimeBudget.of(context, self.service.one_send_seconds)
        running = [(record, self.executor.submit(self.send_one, record, budget)) for record in records]
        outcomes: list[SendOutcome] = []
        failures: list[dict[str, str]] = []
        for record, future in running:
            try:
                outcomes.append(future.result())
            except Exception:  # send_one logged it; SQS hands the record out again
                failures.append({"itemIdentifier": str(record.get("messageId"))})
        self._after_batch(outcomes)
        return {"batchItemFailures": failures}

    def send_one(self, record: Mapping[str, Any], budget: TimeBudget | None = None) -> SendOutcome:
        delivery_id = str(record.get("messageId"))
        attributes = record.get("messageAttributes") or {}
        message_id = (attributes.get(MESSAGE_ID_ATTRIBUTE) or {}).get("stringValue")
        if budget is not None and time.monotonic() > budget.start_by:
            # Nothing claimed, nothing sent: SQS hands the record out again after its visibility timeout.
            metrics.add_metric(name="SendsDeferredForTime", unit="Count", value=1)
            raise RetryLater("the invocation is short of time; not started")
        try:
            finish_by = budget.finish_by if budget else None
            return self.service.send_record(str(record.get("body") or ""), delivery_id, message_id, finish_by)
        except Exception:
            logger.warning("record returned to the queue", extra={"sqs_message_id": delivery_id}, exc_info=True)
            raise

    def _after_batch(self, outcomes: list[SendOutcome]) -> None:
        changed = [o.record for o in outcomes if o.record is not None]
        if changed:
            self.publisher.publish(events.STATUS_CHANGED, [events.status_detail(r) for r in changed])
        targets = [PollTarget(o.message_id, o.record.twilio_sid) for o in outcomes if o.needs_polling and o.record]
        if targets and self.workflow is not None:
            try:
                self.workflow.start(targets)
            except WorkflowError as exc:
                # The messages are sent; callbacks still report their status. Count it, don't fail the batch.
                metrics.add_metric(name="PollStartFailed", unit="Count", value=1)
                logger.error("poll execution not started", extra={"error": str(exc), "messages": len(targets)})
