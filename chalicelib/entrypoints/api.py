"""The HTTP API for CDPs (docs/user-guide.md, "The HTTP API"): accept messages, read records, manage templates, report
stats. (Answers and errors: responses.py; API keys: api_keys.py; the connection test: connection_check.py.)

Routes validate synchronously with the same code the send Lambda uses, so a 202
means the message will not fail validation later; the record is written as
`pending` and the request goes to the send queue exactly as posted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib.domain.connection import DEFAULT_CONNECTION, ConnectionSettings, require_connection
from chalicelib.domain.guard_ports import GuardStore
from chalicelib.domain.ledger import CONTENT_PREFIX, MessageLedger
from chalicelib.domain.models import ValidationError, parse_timestamp
from chalicelib.domain.ports import StatsStore, TemplateStore
from chalicelib.domain.rules import ConnectorCode
from chalicelib.domain.templates import parse_template
from chalicelib.entrypoints.operations import describe_errors
from chalicelib.entrypoints.responses import ApiResult, error, invalid, unexpected
from chalicelib.settings import Settings
from chalicelib.usecases.accept import Accepted, AcceptMessages, AlreadyAccepted, Outcome, Refused, Unavailable

MAX_BATCH = 100
MAX_STATS_DAYS = 92


def answer(outcome: Outcome, where: str) -> ApiResult:
    """An accept outcome as the HTTP API answers it."""
    if isinstance(outcome, Accepted):
        return ApiResult(202, {"id": outcome.message_id, "status": "pending"})
    if isinstance(outcome, AlreadyAccepted):
        return ApiResult(200, outcome.record.public() if outcome.record else {"id": outcome.message_id})
    if isinstance(outcome, Refused):
        return error(outcome.status, outcome.code, outcome.message, outcome.field)
    if isinstance(outcome, Unavailable):
        return error(503, outcome.code, outcome.message, None)
    return unexpected(outcome.error, where)


class MessagesApi:
    def __init__(
        self,
        settings: Settings,
        ledger: MessageLedger,
        templates: TemplateStore,
        stats: StatsStore,
        accepting: AcceptMessages,
        clock: Callable[[], datetime],
        connections: Mapping[str, ConnectionSettings] | None = None,
        guards: GuardStore | None = None,
    ) -> None:
        self.settings = settings
        self.guards = guards
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections
        self.ledger = ledger
        self.templates = templates
        self.stats = stats
        self.accepting = accepting
        self.clock = clock

    # --- POST /messages, POST /messages/batch --------------------------------

    def accept(self, body: Any, idempotency_key: str | None, limited: frozenset[str] | None = None) -> ApiResult:
        refused = out_of_scope(body, limited)
        if refused is not None:
            return refused
        (outcome,) = self.accepting.accept([body], idempotency_key)
        return answer(outcome, "/messages")

    def accept_batch(self, body: Any, limited: frozenset[str] | None = None) -> ApiResult:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error(400, ConnectorCode.INVALID_REQUEST, 'the body must be {"messages": [ ... ]}', "messages")
        items = body["messages"]
        if not 1 <= len(items) <= MAX_BATCH:
            return error(
                400, ConnectorCode.INVALID_REQUEST, f"`messages` must hold 1 to {MAX_BATCH} requests", "messages"
            )
        refusals = [out_of_scope(item, limited) for item in items]
        accepted = iter(self.accepting.accept([item for item, r in zip(items, refusals, strict=True) if r is None]))
        results = [r if r is not None else answer(next(accepted), f"messages[{i}]") for i, r in enumerate(refusals)]
        rows = [{"index": i, "http_status": r.status, **r.body} for i, r in enumerate(results)]
        return ApiResult(200, {"results": rows})

    # --- GET /messages/{id} -----------------------------------------------------

    def get(self, message_id: str, limited: frozenset[str] | None = None) -> ApiResult:
        # a content window's item shares the table but is no message; a key limited to connections sees theirs
        record = None if message_id.startswith(CONTENT_PREFIX) else self.ledger.get(message_id)
        if record is not None and limited is not None and (record.connection or DEFAULT_CONNECTION) not in limited:
            record = None
        if record is None:
            return error(404, "not_found", f"no message with id `{message_id}`", "id")
        return ApiResult(200, record.public())

    # --- templates ------------------------------------------------------------------

    def put_template(self, name: str, body: Any) -> ApiResult:
        try:
            template = parse_template(name, body)
            require_connection(self.connections, template.connection)
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
        totals = self.stats.totals(days)
        described = describe_errors(totals.get("by_error_code", {}))  # Twilio's words for each code
        answer = {"from": days[0], "to": days[-1], **totals, "error_descriptions": described}
        return ApiResult(200, {**answer, "budgets": self._budgets()})

    def _budgets(self) -> dict[str, dict[str, int]]:
        """Today's spend against each connection's daily segment budget (guardrails)."""
        budgets: dict[str, dict[str, int]] = {}
        for name, connection in sorted(self.connections.items()):
            limit = connection.guardrails.daily_segments if connection.guardrails else None
            if limit is not None and self.guards is not None:
                spent, extra = self.guards.spend(name, self.clock())
                budgets[name] = {"daily_segments": limit, "added_today": extra, "spent": spent}
        return budgets


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return parse_timestamp(name, value).date()


def out_of_scope(body: Any, limited: frozenset[str] | None) -> ApiResult | None:
    """A 403 for a request through a connection the key is not limited to; None when it may go on."""
    if limited is None or not isinstance(body, dict):
        return None
    name = body.get("connection") or DEFAULT_CONNECTION
    if name in limited:
        return None
    allowed = ", ".join(f"`{n}`" for n in sorted(limited))
    return error(403, "forbidden", f"this API key may send through {allowed} only, not `{name}`", "connection")
