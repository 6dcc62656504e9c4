"""The SQS send trigger: a batch of up to 50 records, SEND_CONCURRENCY at a time, partial failures reported.

Each record runs on a thread of a pool, so sends overlap instead of queueing. A
record whose send must be retried raises, and is listed in batchItemFailures (the
merge template sets ReportBatchItemFailures); SQS then redelivers it, and after
maxReceiveCount moves it to the DLQ. A record deferred for reasons not its own (Twilio
throttling, a full sender queue, time short) is put back as a new message instead, so
it burns no receive. (Powertools' AsyncBatchProcessor did the partial-batch part with
asyncio; the lines here cost ~30 ms less cold start than its imports.)

After the batch, one poll execution starts for the messages Twilio took (docs/architecture.md,
"Architecture"); their status events follow from the ledger's stream (usecases/outbox.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.polling import PollPlan, PollStarter, WorkflowError
from chalicelib.domain.queued import QueuedRequest, QueueError, Requeue
from chalicelib.observability import logger, metrics, where
from chalicelib.usecases.send import Deferred, SendOutcome, SendService

MAX_DEFERRALS = 100  # a record put back this often (throttling for days) goes the usual way, to the DLQ
THROTTLE_BACKOFF_S = 5.0  # first wait after a throttled send; doubles with each deferral, up to SQS's 900 s
FINISH_MARGIN_S = 2.0  # what the invocation keeps after the last Twilio call: recording, events, poll start


@dataclass(frozen=True)
class TimeBudget:
    """When the invocation must stop: no send starts after `start_by`, no Twilio retry runs past `finish_by`
    (both time.monotonic()). Records not started are put back on the queue untouched."""

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
        workflow: PollStarter | None,
        queue: Requeue | None = None,
        executor: ThreadPoolExecutor | None = None,
        plans: Callable[[str | None], PollPlan] | None = None,
    ) -> None:
        self.service = service
        self.workflow = workflow
        self.plans = plans  # each connection's Retry Interval and Attempts (None: the state machine's defaults)
        self.queue = queue
        # SEND_CONCURRENCY sends in flight: part of the account's budget of requests to Twilio
        # (docs/deploy.md, "Twilio's limits, and how the connector lives within them")
        workers = service.settings.send_concurrency
        self.executor = executor or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send")

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        queued = [QueuedRequest.from_record(record) for record in event.get("Records") or []]
        budget = TimeBudget.of(context, self.service.one_send_seconds)
        running = [(request, self.executor.submit(self.send_one, request, budget)) for request in queued]
        outcomes: list[SendOutcome] = []
        failures: list[dict[str, str]] = []
        for request, future in running:
            try:
                outcomes.append(future.result())
            except Deferred as deferred:
                if not self._put_back(request, deferred):
                    failures.append({"itemIdentifier": request.delivery_id})
            except Exception:  # send_one logged it; SQS hands the record out again
                failures.append({"itemIdentifier": request.delivery_id})
        self._after_batch(outcomes)
        return {"batchItemFailures": failures}

    def send_one(self, queued: QueuedRequest, budget: TimeBudget | None = None) -> SendOutcome:
        if budget is not None and time.monotonic() > budget.start_by:
            # Nothing claimed, nothing sent: the record goes back for the next invocation.
            metrics.add_metric(name="SendsDeferredForTime", unit="Count", value=1)
            raise Deferred("the invocation is short of time; not started", 0, "Time")
        try:
            finish_by = budget.finish_by if budget else None
            if not queued.keyed:
                # Keyed by the SQS messageId, which a DLQ redrive replaces: worth an alarm (docs/operations.md).
                metrics.add_metric(name="RecordsWithoutIdempotencyKey", unit="Count", value=1)
            return self.service.send(queued.message_id, queued.request, finish_by)
        except Deferred:
            raise
        except Exception as exc:
            # Type, text (numbers masked by the log filter) and where: a traceback's locals and messages could
            # carry a full number past the filter.
            extra = {
                "sqs_message_id": queued.delivery_id,
                "kind": type(exc).__name__,
                "error": str(exc),
                "frames": where(exc),
            }
            logger.warning("record returned to the queue", extra=extra)
            raise

    def _put_back(self, queued: QueuedRequest, deferred: Deferred) -> bool:
        """Requeue a deferred record as a new message naming the same ledger record; False to let SQS
        redeliver it instead (no queue, too many deferrals, or SQS refused)."""
        deferrals = queued.deferrals + 1
        if self.queue is None or deferrals > MAX_DEFERRALS:
            return False
        delay = deferred.delay_seconds
        if deferred.kind == "Throttling":
            delay = max(delay, THROTTLE_BACKOFF_S * 2 ** min(deferrals - 1, 8) * (0.5 + random.random()))  # noqa: S311
        try:
            self.queue.defer(queued.message_id, queued.body, delay, deferrals)
        except QueueError as exc:
            logger.warning("deferred record not put back; SQS redelivers it", extra={"error": str(exc)})
            return False
        metrics.add_metric(name=f"RequeuedFor{deferred.kind}", unit="Count", value=1)
        return True

    def _after_batch(self, outcomes: list[SendOutcome]) -> None:
        windows = {
            (int(o.record.item["poll_window"]), o.record.connection or "")
            for o in outcomes
            if o.needs_polling and o.record
        }
        workflow = self.workflow
        if workflow is None:
            return
        for window, name in sorted(windows):
            plan = self.plans(name or None) if self.plans else None
            try:
                workflow.start(window, self.service.clock(), name or None, plan)
            except WorkflowError as exc:
                # The messages are sent; callbacks still report their status. Count it, don't fail the batch.
                metrics.add_metric(name="PollStartFailed", unit="Count", value=1)
                logger.error("poll execution not started", extra={"error": str(exc), "window": window})
