"""The Twilio-compatible front door (docs/user-guide.md, same name): platforms that speak Twilio change one Base URL.

A thin controller over the same accept use case as `POST /messages`: the same validation, ledger,
queue, opt-outs and pacing. It answers in Twilio's shapes, from the ledger (a poll every 10 s per
message costs one DynamoDB read, never a Twilio request). Served on a Lambda function URL.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib.adapters.facade_accounts import FacadeAccount, FacadeAccounts, Refusal
from chalicelib.domain.connection import ConnectionSettings, pick
from chalicelib.domain.ledger import BadPageToken, MessageLedger, MessageRecord, PageQuery, StatusUpdate
from chalicelib.domain.ports import Credentials, StoreError
from chalicelib.domain.twilio import Twilio, TwilioError
from chalicelib.entrypoints.facade_requests import BadRequest, FacadeRequest, create_params
from chalicelib.entrypoints.facade_resources import (
    PREFIX,
    Answer,
    account_resource,
    message_resource,
    page,
    phone_number_resource,
    twilio_error,
    twilio_status,
)
from chalicelib.observability import logger, metrics, where
from chalicelib.settings import Settings
from chalicelib.usecases.accept import (
    Accepted,
    AcceptMessages,
    AlreadyAccepted,
    Failed,
    Filing,
    Outcome,
    Refused,
    request_digest,
)

ACCOUNT = r"(?P<account>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(rf"{PREFIX}/Accounts/{ACCOUNT}\.json\Z"), {"GET": "account"}),
    (re.compile(rf"{PREFIX}/Accounts/{ACCOUNT}/IncomingPhoneNumbers\.json\Z"), {"GET": "numbers"}),
    (re.compile(rf"{PREFIX}/Accounts/{ACCOUNT}/Messages\.json\Z"), {"GET": "list", "POST": "create"}),
    (re.compile(rf"{PREFIX}/Accounts/{ACCOUNT}/Messages/(?P<sid>[^/]+)\.json\Z"), {"GET": "fetch", "POST": "update"}),
]
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}\Z")
BUSY = {"Retry-After": "1"}
MAX_PAGE_SIZE = 1000


def not_found(path: str) -> Refusal:
    return Refusal(404, 20404, f"The requested resource {path} was not found")


class TwilioFacade:
    def __init__(
        self,
        settings: Settings,
        accounts: FacadeAccounts,
        accept: AcceptMessages,
        ledger: MessageLedger,
        twilio: Twilio,
        credentials: Credentials,
        clock: Callable[[], datetime],
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.settings = settings
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections
        self.accounts = accounts
        self.accept = accept
        self.ledger = ledger
        self.twilio = twilio
        self.credentials = credentials
        self.clock = clock

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        request = FacadeRequest.from_function_url(event)
        try:
            answer = self._route(request)
        except Refusal as refusal:
            headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if refusal.status == 401 else {}
            answer = twilio_error(refusal.status, refusal.code, refusal.message, headers)
        except BadRequest as exc:
            answer = twilio_error(400, 20001, f"Invalid request: {exc}")
        except StoreError as exc:
            logger.warning("front door: store unavailable", extra={"error": str(exc)})
            answer = twilio_error(429, 20429, "Too Many Requests", BUSY)
        except Exception as exc:
            logger.error("front door: unexpected error", extra={"kind": type(exc).__name__, "frames": where(exc)})
            answer = twilio_error(500, 20500, "Internal Server Error")
        return answer.to_function_url()

    def _route(self, request: FacadeRequest) -> Answer:
        for pattern, methods in ROUTES:
            found = pattern.match(request.path)
            if found is None:
                continue
            operation = methods.get(request.method)
            if operation is None:
                raise Refusal(405, 20004, "Method not allowed")
            account = self.accounts.authenticate(request.headers, found["account"])
            if operation == "account":
                return Answer(200, account_resource(account))
            if operation == "numbers":
                return self._numbers(account, request)
            if operation == "create":
                return self._create(account, request)
            if operation == "list":
                return self._list(account, request)
            record = self._record(account, found["sid"], request.path)
            return self._update(account, record, request) if operation == "update" else self._fetch(account, record)
        raise not_found(request.path)

    # --- messages --------------------------------------------------------------

    def _create(self, account: FacadeAccount, request: FacadeRequest) -> Answer:
        params = create_params(request.pairs(), request.headers.get("idempotency-key"))
        raw = params.request
        if account.connection:
            raw["connection"] = account.connection
        prefix = "MM" if raw.get("media_urls") else "SM"
        now = self.clock()
        if params.idempotency_key is not None:
            sid = prefix + _hex(f"{account.account_sid}:key:{params.idempotency_key}")
        else:
            sid = prefix + uuid.uuid4().hex
            window = self._dedup_seconds(account)
            if window > 0:  # a caller that retries without a key gets the first message back
                content = _hex(f"{account.account_sid}:{request_digest(raw)}")
                sid = self.ledger.claim_content(content, sid, now, timedelta(seconds=window))
        created_as = "scheduled" if raw.get("send_at") else "accepted" if raw.get("messaging_service_sid") else "queued"
        attrs = {
            "account_sid": account.account_sid,
            "created_as": created_as,
            "num_media": len(raw.get("media_urls") or []),
        }
        if raw.get("status_callback"):
            attrs["callback_format"] = "twilio"
            raw["write_back"] = (
                "twilio"  # its StatusCallback hears as from Twilio, whatever its connection's write-back
            )
        outcome = self.accept.accept([raw], filings=[Filing(sid, attrs, refuse_now=True)])[0]
        if params.ignored:
            logger.info(
                "front door: parameters Twilio's create does not have were ignored", extra={"names": params.ignored}
            )
        return self._created(account, outcome, raw.get("body"))

    def _dedup_seconds(self, account: FacadeAccount) -> int:
        """The account's own window, else its connection's, else FACADE_DEDUP_SECONDS."""
        if account.dedup_seconds is not None:
            return account.dedup_seconds
        connection = pick(self.connections, account.connection)
        if connection is not None and connection.dedup_seconds is not None:
            return connection.dedup_seconds
        return self.settings.facade_dedup_seconds

    def _created(self, account: FacadeAccount, outcome: Outcome, body: str | None) -> Answer:
        if isinstance(outcome, Accepted | AlreadyAccepted):
            record = outcome.record or self.ledger.get(outcome.message_id)
            if record is None:
                raise StoreError("the message was accepted but cannot be read back")
            metrics.add_metric(name="FacadeMessagesAccepted", unit="Count", value=1)
            return Answer(201, message_resource(record, account.account_sid, body))
        if isinstance(outcome, Refused):
            code = outcome.code if isinstance(outcome.code, int) else 20001
            return twilio_error(400 if outcome.status == 409 else outcome.status, code, outcome.message)
        if isinstance(outcome, Failed):
            logger.error("front door: accept failed", extra={"frames": where(outcome.error)})
            return twilio_error(500, 20500, "Internal Server Error")
        return twilio_error(429, 20429, f"Too Many Requests: {outcome.message}", BUSY)

    def _record(self, account: FacadeAccount, sid: str, path: str) -> MessageRecord:
        record = self.ledger.get(sid) if MESSAGE_SID.match(sid) else None
        if record is None or record.item.get("account_sid") != account.account_sid:
            raise not_found(path)
        return record

    def _fetch(self, account: FacadeAccount, record: MessageRecord) -> Answer:
        metrics.add_metric(name="FacadeFetches", unit="Count", value=1)
        return Answer(200, message_resource(record, account.account_sid))

    def _update(self, account: FacadeAccount, record: MessageRecord, request: FacadeRequest) -> Answer:
        form = dict(request.pairs())
        if form.get("Status") == "canceled":
            return Answer(200, message_resource(self._cancel(record), account.account_sid))
        if form.get("Body") == "":
            return Answer(200, message_resource(self._redact(record), account.account_sid))
        raise Refusal(400, 20001, "Give `Status=canceled` to cancel a scheduled message or `Body=` to redact one")

    def _cancel(self, record: MessageRecord) -> MessageRecord:
        now = self.clock()
        if record.status == "pending":
            canceled = self.ledger.cancel_pending(record.id, now)
            if canceled is not None:
                return canceled
            record = self.ledger.get(record.id) or record  # a send claimed it meanwhile
        if record.twilio_sid and twilio_status(record) == "scheduled":
            self._at_twilio(record, [("Status", "canceled")])
            update = StatusUpdate("canceled", "api", twilio_sid=record.twilio_sid)
            changed = self.ledger.apply_status(record.id, update, now)
            return changed or self.ledger.get(record.id) or record
        raise Refusal(400, 30409, "This message cannot be canceled")

    def _redact(self, record: MessageRecord) -> MessageRecord:
        """The ledger never held the text (only its hash); Twilio's copy is redacted once final."""
        if record.twilio_sid is None or twilio_status(record) not in ("delivered", "undelivered", "failed", "canceled"):
            raise Refusal(400, 20001, "A message's body can be redacted once it is delivered, undelivered or failed")
        self._at_twilio(record, [("Body", "")])
        return record

    def _at_twilio(self, record: MessageRecord, form: list[tuple[str, str]]) -> None:
        connection = pick(self.connections, record.connection)
        if connection is None or record.twilio_sid is None:
            raise Refusal(400, 30409, "This message cannot be changed: its connection is gone")
        try:
            self.twilio.update_message(self.credentials.for_connection(connection), record.twilio_sid, form)
        except TwilioError as exc:
            status = exc.http_status if 400 <= exc.http_status < 500 else 503
            raise Refusal(status, exc.code or 20503, exc.message) from exc

    def _list(self, account: FacadeAccount, request: FacadeRequest) -> Answer:
        q = request.query
        try:
            size = int(q.get("PageSize") or 50)
            number = int(q.get("Page") or 0)
        except ValueError as exc:
            raise Refusal(400, 20001, "`PageSize` and `Page` must be integers") from exc
        if not 1 <= size <= MAX_PAGE_SIZE or number < 0:
            raise Refusal(400, 20001, f"`PageSize` must be 1-{MAX_PAGE_SIZE}")
        query = PageQuery(
            size=size,
            token=q.get("PageToken") or None,
            to=q.get("To") or None,
            sender=q.get("From") or None,
            sent_on=_day(q, "DateSent"),
            sent_before=_day(q, "DateSent<"),
            sent_after=_day(q, "DateSent>"),
        )
        try:
            records, token = self.ledger.account_page(account.account_sid, query)
        except BadPageToken as exc:
            raise Refusal(400, 20001, str(exc)) from exc
        items = [message_resource(r, account.account_sid) for r in records]
        filters = {k: v for k, v in q.items() if k in ("To", "From", "DateSent", "DateSent<", "DateSent>")}
        return Answer(200, page("messages", items, request.path, filters, size, number, token))

    def _numbers(self, account: FacadeAccount, request: FacadeRequest) -> Answer:
        connection = pick(self.connections, account.connection)
        numbers = connection.from_numbers if connection else ()
        items = [phone_number_resource(account.account_sid, n) for n in numbers]
        return Answer(200, page("incoming_phone_numbers", items, request.path, {}, 50, 0, None))


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _day(query: Mapping[str, str], name: str) -> str | None:
    """Twilio's clients send a date (`2026-11-26`) or a datetime (`2026-11-26T00:00:00Z`): its day."""
    value = query.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError as exc:
        raise Refusal(400, 20001, f"`{name}` must be a date, YYYY-MM-DD") from exc
