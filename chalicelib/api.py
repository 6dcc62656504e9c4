"""The HTTP API for CDPs (DESIGN §3.2): accept messages, read records, manage templates, report
stats. (Answers and errors: responses.py; API keys: api_keys.py; the connection test: connection_check.py.)

Routes validate synchronously with the same code the send Lambda uses, so a 202
means the message will not fail validation later; the record is written as
`pending` and the request goes to the send queue exactly as posted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib import rules
from chalicelib.models import ValidationError, parse_timestamp, require_connection
from chalicelib.observability import logger
from chalicelib.queue import SendQueue
from chalicelib.responses import ApiResult, error, invalid, unexpected
from chalicelib.rules import ConnectorCode
from chalicelib.services import SendService, ledger_attrs
from chalicelib.settings import Settings
from chalicelib.store import MessageLedger, StoreError
from chalicelib.tables import StatsStore, TemplateStore
from chalicelib.templates import parse_template

MAX_BATCH = 100
MAX_STATS_DAYS = 92


def request_digest(raw: Any) -> str:
    """What makes two requests the same request: their content, in canonical JSON, without the key."""
    content = {k: v for k, v in raw.items() if k != "idempotency_key"} if isinstance(raw, dict) else raw
    return rules.body_digest(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str))


class MessagesApi:
    def __init__(
        self,
        settings: Settings,
        service: SendService,
        ledger: MessageLedger,
        templates: TemplateStore,
        stats: StatsStore,
        queue: SendQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.service = service
        self.ledger = ledger
        self.templates = templates
        self.stats = stats
        self.queue = queue
        self.clock = clock

    # --- POST /messages, POST /messages/batch --------------------------------

    def accept(self, body: Any, idempotency_key: str | None) -> ApiResult:
        results = self._accept_many([body], idempotency_key)
        return results[0]

    def accept_batch(self, body: Any) -> ApiResult:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error(400, ConnectorCode.INVALID_REQUEST, 'the body must be {"messages": [ ... ]}', "messages")
        items = body["messages"]
        if not 1 <= len(items) <= MAX_BATCH:
            return error(
                400, ConnectorCode.INVALID_REQUEST, f"`messages` must hold 1 to {MAX_BATCH} requests", "messages"
            )
        results = self._accept_many(items, None)
        rows = [{"index": i, "http_status": r.status, **r.body} for i, r in enumerate(results)]
        return ApiResult(200, {"results": rows})

    def _accept_many(self, bodies: Sequence[Any], header_key: str | None) -> list[ApiResult]:
        now = self.clock()
        results: list[ApiResult | None] = [None] * len(bodies)
        to_enqueue: list[tuple[int, str, dict[str, Any]]] = []
        for index, raw in enumerate(bodies):
            try:
                outcome = self._accept_one(raw, header_key, now)
            except Exception as exc:  # a bug on one item is that item's answer, never its neighbours'
                outcome = unexpected(exc, f"messages[{index}]")
            if isinstance(outcome, ApiResult):
                results[index] = outcome
            else:
                to_enqueue.append((index, *outcome))
        failed = self.queue.send([(message_id, body) for _, message_id, body in to_enqueue]) if to_enqueue else set()
        for index, message_id, _ in to_enqueue:
            if message_id in failed:
                results[index] = error(503, "queue_unavailable", "the send queue did not take the message; retry", None)
                continue
            try:
                self.ledger.mark_enqueued(message_id, now)
            except (
                StoreError
            ) as exc:  # it is on the queue: a later retry of the key may enqueue a twin, the ledger dedupes
                logger.warning("enqueued mark not written", extra={"error": str(exc)})
            results[index] = ApiResult(202, {"id": message_id, "status": "pending"})
        return [r for r in results if r is not None]

    def _accept_one(self, raw: Any, header_key: str | None, now: datetime) -> ApiResult | tuple[str, dict[str, Any]]:
        if header_key is not None and isinstance(raw, dict):
            body_key = raw.get("idempotency_key")
            if body_key is not None and body_key != header_key:
                return error(
                    400,
                    ConnectorCode.INVALID_REQUEST,
                    "the Idempotency-Key header and `idempotency_key` differ",
                    "idempotency_key",
                )
            raw = {**raw, "idempotency_key": header_key}
        try:
            message = self.service.prepare(raw, now)
        except ValidationError as exc:
            return invalid(exc)
        except StoreError as exc:
            logger.error("templates unavailable", extra={"error": str(exc)})
            return error(503, "storage_unavailable", "the template store is unavailable; retry", None)
        if rules.is_stale(message.not_after, now):
            return error(400, ConnectorCode.STALE_REQUEST, "`not_after` is already in the past", "not_after")
        key = message.idempotency_key
        message_id = rules.message_id(key, "") if key else f"msg_{uuid.uuid4().hex}"
        digest = request_digest(raw)
        try:
            created = self.ledger.create_pending(message_id, {**ledger_attrs(message), "request_sha256": digest}, now)
            if created is None:
                existing = self.ledger.get(message_id)
                seen = existing.item.get("request_sha256") if existing else None
                if seen is not None and seen != digest:  # as payment APIs do: one key, one request
                    text = f"idempotency key `{key}` was already used for a different request; use a new key"
                    return error(409, "idempotency_key_reused", text, "idempotency_key")
                if existing is None or existing.status != "pending" or existing.item.get("enqueued_at"):
                    return ApiResult(200, existing.public() if existing else {"id": message_id})
                # accepted before but never enqueued (the queue failed then): enqueue it now
            else:
                self.stats.count("pending", None, now)
        except StoreError as exc:
            logger.error("ledger unavailable", extra={"error": str(exc)})
            return error(503, "storage_unavailable", "the message store is unavailable; retry", None)
        return message_id, raw

    # --- GET /messages/{id} -----------------------------------------------------

    def get(self, message_id: str) -> ApiResult:
        record = self.ledger.get(message_id)
        if record is None:
            return error(404, "not_found", f"no message with id `{message_id}`", "id")
        return ApiResult(200, record.public())

    # --- templates ------------------------------------------------------------------

    def put_template(self, name: str, body: Any) -> ApiResult:
        try:
            template = parse_template(name, body)
            require_connection(self.settings, template.connection)
        except ValidationError as exc:
            return invalid(exc)
        self.templates.put(template)
        return ApiResult(200, template.to_dict())

    def get_template(self, name: str) -> ApiResult:
        template = self.templates.get(name)
        if template is None:
            return error(404, "not_found", f"no template named `{name}`", "name")
        return ApiResult(200, template.to_dict())

    # --- GET /stats --------------------------------------------------------------------

    def stats_for(self, query: Mapping[str, str]) -> ApiResult:
        today = self.clock().date()
        try:
            start = _day(query.get("from"), "from") or today
            end = _day(query.get("to"), "to") or today
        except ValidationError as exc:
            return invalid(exc)
        if end < start:
            return error(400, ConnectorCode.INVALID_REQUEST, "`to` must not be before `from`", "to")
        if (end - start).days >= MAX_STATS_DAYS:
            return error(
                400, ConnectorCode.INVALID_REQUEST, f"the window may span at most {MAX_STATS_DAYS} days", "from"
            )
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        return ApiResult(200, {"from": days[0], "to": days[-1], **self.stats.totals(days)})


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return parse_timestamp(name, value).date()
