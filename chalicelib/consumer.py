"""The SQS send trigger: a batch of up to 10 records, sent concurrently, partial failures reported.

Powertools' AsyncBatchProcessor gathers the records; each runs on a thread of a
pool sized for a whole batch, so ten sends overlap instead of queueing. A record
whose send must be retried raises, and Powertools lists it in batchItemFailures
(the merge template sets ReportBatchItemFailures); SQS then redelivers it, and
after maxReceiveCount moves it to the DLQ.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.observability import logger, metrics
from chalicelib.services import SendOutcome, SendService

# The API (POST /messages) names the ledger record it already wrote with this attribute.
MESSAGE_ID_ATTRIBUTE = "connector_message_id"
BATCH_CONCURRENCY = 10


class SendConsumer:
    def __init__(self, service: SendService, executor: ThreadPoolExecutor | None = None) -> None:
        self.service = service
        self.executor = executor or ThreadPoolExecutor(max_workers=BATCH_CONCURRENCY, thread_name_prefix="send")

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        try:
            result: dict[str, Any] = dict(
                async_process_partial_response(event, self._handle_record, processor, context)
            )
            return result
        finally:
            metrics.flush_metrics()

    # Powertools passes the record by keyword: the parameter must be named `record`.
    async def _handle_record(self, record: SQSRecord) -> SendOutcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.send_one, record)

    def send_one(self, record: SQSRecord) -> SendOutcome:
        attributes = record.raw_event.get("messageAttributes") or {}
        message_id = (attributes.get(MESSAGE_ID_ATTRIBUTE) or {}).get("stringValue")
        try:
            return self.service.send_record(record.body or "", record.message_id, message_id)
        except Exception:
            logger.warning("record returned to the queue", extra={"sqs_message_id": record.message_id}, exc_info=True)
            raise
