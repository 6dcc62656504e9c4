"""The SQS send trigger: a batch of up to 10 records, sent concurrently, partial failures reported.

Powertools' AsyncBatchProcessor gathers the records; each runs on a thread of a
pool sized for a whole batch, so ten sends overlap instead of queueing. A record
whose send must be retried raises, and Powertools lists it in batchItemFailures
(the merge template sets ReportBatchItemFailures); SQS then redelivers it, and
after maxReceiveCount moves it to the DLQ.

After the batch, its status events go to EventBridge in one call and one poll
execution starts for the messages Twilio took (DESIGN §3.4).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib import events
from chalicelib.events import EventPublisher
from chalicelib.observability import logger, metrics
from chalicelib.services import RetryLater, SendOutcome, SendService
from chalicelib.workflow import PollTarget, PollWorkflow, WorkflowError

# The API (POST /messages) names the ledger record it already wrote with this attribute.
MESSAGE_ID_ATTRIBUTE = "connector_message_id"
BATCH_CONCURRENCY = 25  # sends in flight per invocation: a batch of 50 goes out in two rounds
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
        self.executor = executor or ThreadPoolExecutor(max_workers=BATCH_CONCURRENCY, thread_name_prefix="send")

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        outcomes: list[SendOutcome] = []
        loop_executor = self.executor
        budget = TimeBudget.of(context, self.service.one_send_seconds)

        # Powertools passes the record by keyword: the parameter must be named `record`.
        async def handle_record(record: SQSRecord) -> SendOutcome:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(loop_executor, self.send_one, record, budget)
            outcomes.append(outcome)
            return outcome

        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        result: dict[str, Any] = dict(async_process_partial_response(event, handle_record, processor, context))
        self._after_batch(outcomes)
        return result

    def send_one(self, record: SQSRecord, budget: TimeBudget | None = None) -> SendOutcome:
        attributes = record.raw_event.get("messageAttributes") or {}
        message_id = (attributes.get(MESSAGE_ID_ATTRIBUTE) or {}).get("stringValue")
        if budget is not None and time.monotonic() > budget.start_by:
            # Nothing claimed, nothing sent: SQS hands the record out again after its visibility timeout.
            metrics.add_metric(name="SendsDeferredForTime", unit="Count", value=1)
            raise RetryLater("the invocation is short of time; not started")
        try:
            finish_by = budget.finish_by if budget else None
            return self.service.send_record(record.body or "", record.message_id, message_id, finish_by)
        except Exception:
            logger.warning("record returned to the queue", extra={"sqs_message_id": record.message_id}, exc_info=True)
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
