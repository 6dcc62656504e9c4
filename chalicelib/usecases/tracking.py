"""Use cases after the send: what became of each message, and what recipients say back.

Three sources report status — the poll loop, Twilio's status callbacks and the
send itself — and whichever is first wins; the ledger only ever moves a status
forward (docs/user-guide.md, "What became of each message"), so late and duplicate reports change nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain import events, rules
from chalicelib.domain.connection import ConnectionSettings, require_connection
from chalicelib.domain.ledger import MessageLedger, MessageRecord, StatusUpdate
from chalicelib.domain.models import ValidationError
from chalicelib.domain.outbox import OPT_IN, OPT_OUT
from chalicelib.domain.polling import PollState
from chalicelib.domain.ports import Credentials, OptOutStore
from chalicelib.domain.twilio import Twilio, TwilioError, TwilioMessage, TwilioRetryable
from chalicelib.observability import logger, metrics
from chalicelib.settings import Settings

# What a poll run keeps in hand before its Lambda timeout: one page of fetches (POLL_PAGE_SIZE at
# POLL_CONCURRENCY, Twilio's read timeout each at worst) and the ledger's writes.
POLL_RESERVE_S = 20.0
HELP = "HELP"
KEYWORDS = {
    **{w: OPT_OUT for w in ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")},
    **{w: OPT_IN for w in ("START", "YES", "UNSTOP")},
    **{w: HELP for w in ("HELP", "INFO")},
}


def keyword_of(body: str, opt_out_type: str | None) -> str | None:
    """Twilio's OptOutType when present, else a single case-insensitive keyword."""
    if opt_out_type and opt_out_type.upper() in (OPT_OUT, OPT_IN, HELP):
        return opt_out_type.upper()
    return KEYWORDS.get(body.strip().upper())


@dataclass(frozen=True)
class StatusReport:
    """A status callback as Twilio posts it, read at the webhook (Twilio's form names stay there)."""

    message_id: str | None  # ours, from StatusCallback's `mid`
    twilio_sid: str | None
    status: str
    error_code: int | None = None
    raw_dlr_done_date: str | None = None

    @classmethod
    def from_form(cls, message_id: str | None, form: Mapping[str, str]) -> StatusReport:
        return cls(
            message_id=message_id,
            twilio_sid=form.get("MessageSid") or form.get("SmsSid") or None,
            status=(form.get("MessageStatus") or form.get("SmsStatus") or "").lower(),
            error_code=_int(form.get("ErrorCode")),
            raw_dlr_done_date=form.get("RawDlrDoneDate") or None,
        )


@dataclass(frozen=True)
class InboundMessage:
    """A message a recipient sent to one of our numbers, read at the webhook."""

    twilio_sid: str
    phone: str  # who wrote: the recipient of our messages
    our_number: str
    messaging_service_sid: str | None
    body: str
    opt_out_type: str | None = None
    # the rest of Twilio's webhook that a platform reading Twilio's form expects relayed (events.INBOUND_FIELDS)
    twilio_fields: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> InboundMessage:
        kept = {
            name: value
            for name, value in form.items()
            if name in events.INBOUND_FIELDS or name.startswith(events.INBOUND_MEDIA)
        }
        return cls(
            twilio_sid=form.get("MessageSid") or form.get("SmsSid") or "",
            phone=form.get("From", "").strip(),
            our_number=form.get("To", "").strip(),
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            body=form.get("Body", ""),
            opt_out_type=form.get("OptOutType") or None,
            twilio_fields=kept,
        )


@dataclass(frozen=True)
class CallbackResult:
    outcome: str  # applied | stale | transient | unknown


class TrackingService:
    def __init__(
        self,
        settings: Settings,
        ledger: MessageLedger,
        opt_outs: OptOutStore,
        twilio: Twilio,
        credentials: Credentials,
        clock: Callable[[], datetime],
        executor: ThreadPoolExecutor,
        connections: Mapping[str, ConnectionSettings] | None = None,
    ) -> None:
        self.settings = settings
        # deploy-time and managed connections (wiring gives the live store); else the deploy-time ones
        self.connections = settings.connections if connections is None else connections
        self.ledger = ledger
        self.opt_outs = opt_outs
        self.twilio = twilio
        self.credentials = credentials
        self.clock = clock
        self.executor = executor

    # --- shared: one status report ------------------------------------------

    def apply(self, message_id: str, update: StatusUpdate) -> MessageRecord | None:
        """Apply a report if it moves the message forward. What follows from it (its event, the counters, the
        opt-out an error code means) follows from the ledger's change (domain/outbox.py), not from here."""
        updated = self.ledger.apply_status(message_id, update, self.clock())
        if updated is not None:
            metrics.add_metric(name=f"StatusFrom{update.source.capitalize()}", unit="Count", value=1)
        return updated

    def _reply_context(self, replied_to: str | None) -> dict[str, Any]:
        return _context_of(self.ledger.get(replied_to) if replied_to else None)

    # --- the poll loop (Step Functions) -------------------------------------

    def poll(self, state: PollState, seconds_left: Callable[[], float] | None = None) -> PollState:
        """One poll attempt over a window, a page of its open messages at a time (what callbacks finished
        has left it), each page fetched concurrently. A run short of time hands back a cursor and the state
        machine runs the attempt on from there at once: a big window is never cut short by a timeout."""
        window, cursor, still_open = state.window, state.cursor, state.open_so_far
        attempt = state.attempt + 1
        while True:
            ids, cursor = self.ledger.open_page(window, cursor, self.settings.poll_page_size)
            still_open += self._poll_page(state, ids, attempt)
            if cursor is None:
                break
            if seconds_left is not None and seconds_left() < POLL_RESERVE_S:
                logger.info("poll attempt continues", extra={"window": window, "attempt": attempt})
                return dataclasses.replace(state, cursor=cursor, open_so_far=still_open)  # no Wait: on at once
        logger.info("poll attempt", extra={"window": window, "attempt": attempt, "open": still_open})
        return dataclasses.replace(
            state,
            remaining=still_open,
            attempt=attempt,
            wait_seconds=state.retry_interval_seconds,
            cursor=None,
            open_so_far=0,
        )

    def _poll_page(self, state: PollState, ids: Sequence[str], attempt: int) -> int:
        """How many of these messages are still open after asking Twilio about them."""
        records = self.ledger.get_many(ids)
        open_ = [
            r
            for r in records.values()
            if r.status not in rules.TERMINAL_STATUSES and r.twilio_sid and state.follows(r.connection)
        ]
        fetched = list(self.executor.map(self._fetch, open_))
        failures = [f for f in fetched if isinstance(f, TwilioError)]
        if open_ and len(failures) == len(open_) and all(isinstance(f, TwilioRetryable) for f in failures):
            raise failures[0]  # Twilio is down for all of them: let the state machine's Retry wait
        still_open = 0
        for record, result in zip(open_, fetched, strict=True):
            status = record.status
            # Only a change is written (with the attempt that saw it): an unchanged poll costs no write.
            if isinstance(result, TwilioMessage) and rules.advances(record.status, result.status):
                updated = self.apply(record.id, _update_from(result, "poll", attempt))
                status = updated.status if updated else status
            if status not in rules.TERMINAL_STATUSES:
                still_open += 1
        return still_open

    def _fetch(self, record: MessageRecord) -> TwilioMessage | TwilioError:
        try:
            connection = require_connection(self.connections, record.connection)
            sid = record.twilio_sid or ""  # only records with a SID are polled
            return self.twilio.fetch_message(self.credentials.for_connection(connection), sid)
        except ValidationError as exc:  # its connection was removed since it was sent
            logger.warning("poll fetch failed", extra={"message_id": record.id, "error": exc.message})
            return TwilioError(exc.message)
        except TwilioError as exc:
            logger.warning("poll fetch failed", extra={"message_id": record.id, "error": exc.message})
            return exc

    def finalize(self, state: PollState) -> dict[str, Any]:
        """Polling is over: whatever is still open keeps its last status, marked as exhausted."""
        now = self.clock()
        remaining = self.ledger.open_in_window(state.window)
        if state.connection is not None:  # another connection's execution finalizes its own
            remaining = [i for i, r in self.ledger.get_many(remaining).items() if state.follows(r.connection)]
        for message_id in remaining:
            self.ledger.mark_poll_exhausted(message_id, state.attempt, now)
        if remaining:
            metrics.add_metric(name="PollsExhausted", unit="Count", value=len(remaining))
        if state.error is not None:  # a poll run failed past its retries: the window ends before its attempts do
            metrics.add_metric(name="PollWindowsAbandoned", unit="Count", value=1)
            logger.error("poll window finalized early", extra={"window": state.window, "attempt": state.attempt})
        return {"finalized": len(remaining), "attempts": state.attempt, "error": state.error}

    # --- Twilio's webhooks ----------------------------------------------------

    def status_callback(self, report: StatusReport) -> CallbackResult:
        message_id, sid, status = report.message_id, report.twilio_sid, report.status
        log = {"message_id": message_id, "twilio_sid": sid, "status": status}
        if not message_id or not sid or status not in rules.STATUS_RANK:
            logger.warning("status callback for no message of ours", extra=log)
            return CallbackResult("unknown")
        if status in rules.TRANSIENT_STATUSES:
            return CallbackResult("transient")  # acknowledged; `sent` follows
        update = StatusUpdate(
            status=status,
            source="callback",
            twilio_sid=sid,
            error_code=report.error_code,
            raw_dlr_done_date=report.raw_dlr_done_date,
        )
        if self.apply(message_id, update) is not None:
            return CallbackResult("applied")
        if self.ledger.get(message_id) is None:
            logger.warning("status callback for an unknown message", extra=log)
            return CallbackResult("unknown")
        return CallbackResult("stale")  # duplicate or out of order: the status already moved past it

    def inbound(self, message: InboundMessage) -> str:
        """A recipient wrote back: opt out, opt in, ask for help, or reply. Acted on once per MessageSid,
        so a replayed earlier START (validly signed) cannot undo a later STOP."""
        phone, our_number, service = message.phone, message.our_number, message.messaging_service_sid
        body, sid = message.body, message.twilio_sid
        keyword = keyword_of(body, message.opt_out_type)
        now = self.clock()
        senders = [our_number, service]
        reply: dict[str, Any] = {
            "id": f"in_{sid}",
            "direction": "inbound",
            "status": "received",
            "twilio_sid": sid,
            "from": phone,
            "received_by": our_number,
            "messaging_service_sid": service,
            "body": body,
            "keyword": keyword,
            "in_reply_to": self.ledger.last_message_to(phone),
            "created_at": rules.iso(now),
            "updated_at": rules.iso(now),
        }
        context = self._reply_context(reply["in_reply_to"])
        if context:
            reply["context"] = context  # what the reply's event tells its platform (domain/outbox.py)
        if message.twilio_fields:
            reply["twilio_fields"] = dict(message.twilio_fields)
        earlier = self.ledger.record_reply({k: v for k, v in reply.items() if v is not None}, now)
        if earlier is not None and earlier.item.get("handled"):
            logger.info("inbound message seen before; not acted on again", extra={"twilio_sid": sid})
            return "duplicate"
        named = [s for s in senders if s]
        if keyword == OPT_OUT:
            for sender in named:
                self.opt_outs.opt_out(phone, sender, now)
        elif keyword == OPT_IN:
            for sender in named:
                self.opt_outs.opt_in(phone, sender)
        # After acting: a failure before it is retried whole. The mark is what the reply's event follows from.
        self.ledger.mark_reply_handled(str(reply["id"]))
        logger.info("inbound message", extra={"from": rules.mask_phone(phone), "keyword": keyword})
        return keyword or "reply"


def _context_of(record: MessageRecord | None) -> dict[str, Any]:
    """What the message replied to tells the reply's write-back: its platform's format and identity."""
    if record is None:
        return {}
    write_back = events.write_back_of(record.item)
    if write_back is None or (write_back == "json" and not record.status_callback):
        return {}
    context: dict[str, Any] = {
        "write_back": write_back,
        "metadata": dict(record.metadata or {}),
        "in_reply_to": record.id,  # where a refused write-back of the reply or STOP is noted
    }
    for name in ("connection", "account_sid", "status_callback"):
        if record.item.get(name):
            context[name] = record.item[name]
    return context


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _update_from(message: TwilioMessage, source: str, attempt: int) -> StatusUpdate:
    return StatusUpdate(
        poll_attempts=attempt,
        status=message.status,
        source=source,
        twilio_sid=message.sid,
        error_code=message.error_code,
        error_message=message.error_message,
        price=message.price,
        price_unit=message.price_unit,
    )
