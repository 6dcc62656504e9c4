"""Use cases. Today: turning one send request into at most one Twilio message.

SendService.send is safe to call any number of times for the same message id:
the ledger claim makes sure Twilio sees at most one create, and an attempt that
died half-way is reconciled against Twilio's own list before anything is resent.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.domain import rules
from chalicelib.domain.connection import DEFAULT_CONNECTION, ConnectionSettings
from chalicelib.domain.ledger import MessageLedger, MessageRecord, SentMessage
from chalicelib.domain.models import (
    OutboundMessage,
    ValidationError,
)
from chalicelib.domain.pacing import DEFAULT_VALIDITY_SECONDS, sender_rate
from chalicelib.domain.ports import (
    Credentials,
    CredentialsUnavailable,
    OptOutStore,
    SenderQueues,
    StoreError,
    TemplateStore,
)
from chalicelib.domain.rules import ClaimOutcome, ConnectorCode
from chalicelib.domain.twilio import (
    Twilio,
    TwilioCredentials,
    TwilioError,
    TwilioMessage,
    TwilioOutcomeUnknown,
    TwilioRejected,
    TwilioRetryable,
)
from chalicelib.observability import logger, metrics
from chalicelib.settings import ConfigurationError, Settings
from chalicelib.usecases.validate import Validation, ledger_attrs, partial_attrs

if TYPE_CHECKING:  # the guardrails load only for a connection that sets them (cold start)
    from chalicelib.domain.guard_ports import GuardStore
    from chalicelib.domain.guardrails import ErrorPolicy
    from chalicelib.usecases.guard import Verdict

# Twilio's clock and ours may disagree a little; widen the reconcile window by this much.
CLOCK_SKEW = timedelta(minutes=2)


class RetryLater(Exception):
    """The record must go back to the queue (batchItemFailures); nothing was lost or sent twice."""


class Deferred(RetryLater):
    """Not the record's fault (Twilio throttling, a full sender queue, time short): it is put back as a new
    message after `delay_seconds`, so the wait burns none of its receives on the way to the DLQ."""

    def __init__(self, reason: str, delay_seconds: float, kind: str) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.kind = kind  # Throttling | Pacing | Time: names the metric


@dataclass(frozen=True)
class SendOutcome:
    message_id: str
    result: str  # sent | adopted | error | duplicate
    status: str | None = None
    error_code: int | None = None
    record: MessageRecord | None = None  # the record as this attempt left it, when it changed it

    @property
    def needs_polling(self) -> bool:
        record = self.record
        return bool(record and record.twilio_sid and record.item.get("poll_window") is not None)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_token() -> str:
    return uuid.uuid4().hex


class SendService:
    def __init__(
        self,
        settings: Settings,
        ledger: MessageLedger,
        opt_outs: OptOutStore,
        templates: TemplateStore,
        twilio: Twilio,
        credentials: Credentials,
        clock: Callable[[], datetime] = _utcnow,
        new_token: Callable[[], str] = _new_token,
        senders: SenderQueues | None = None,
        connections: Mapping[str, ConnectionSettings] | None = None,
        guards: GuardStore | None = None,
    ) -> None:
        self.settings = settings
        self.guards = guards
        self.ledger = ledger
        self.opt_outs = opt_outs
        self.templates = templates
        self.twilio = twilio
        self.credentials = credentials
        self.clock = clock
        self.new_token = new_token
        self.lease = timedelta(seconds=settings.claim_lease_seconds)
        self.senders = senders
        self.validation = Validation(settings, templates, opt_outs, connections)

    @property
    def one_send_seconds(self) -> float:
        """The longest one Twilio attempt can take: a send needs this much time left to start."""
        return self.settings.twilio_connect_timeout + self.settings.twilio_read_timeout

    # --- sending -------------------------------------------------------------

    def send(self, message_id: str, raw: Any, finish_by: float | None = None) -> SendOutcome:
        now = self.clock()
        try:
            msg = self.validation.prepare(raw, now)
        except ValidationError as exc:
            return self._reject_invalid(message_id, raw, exc, now)
        except StoreError:
            raise  # the templates table: try again later
        except Exception as exc:  # a request nothing can read: an error record, never five receives to the DLQ
            logger.error("unreadable request", extra={"message_id": message_id, "error": type(exc).__name__})
            unreadable = ValidationError("", f"the request could not be read ({type(exc).__name__})")
            return self._reject_invalid(message_id, raw, unreadable, now)

        token = self.new_token()
        try:
            claim = self.ledger.claim(message_id, ledger_attrs(msg), token, now, self.lease)
        except StoreError as exc:
            raise RetryLater(str(exc)) from exc
        log = {"message_id": message_id, "to": rules.mask_phone(msg.to)}
        if claim.outcome is ClaimOutcome.DONE:
            logger.info("duplicate delivery: message already handled", extra=log)
            metrics.add_metric(name="DuplicateDeliveries", unit="Count", value=1)
            record = claim.record
            return SendOutcome(message_id, "duplicate", record.status if record else None)
        if claim.outcome is ClaimOutcome.BUSY:
            raise RetryLater(f"message {message_id} is being sent by another worker")

        # We hold the claim. A clean claim may be released on a failure that created
        # nothing; one that follows an unfinished attempt stays ambiguous until reconciled.
        reconciled = claim.outcome is ClaimOutcome.FRESH
        connection = self.validation.connection(msg.connection)
        guarded = connection.guardrails  # None: nothing of the guardrails is imported or read
        policy = guarded.error_policy if guarded else None
        scheduled_at: datetime | None = None  # quiet hours, kept by Twilio's own scheduling
        try:
            creds = self.credentials.for_connection(connection)
            if not reconciled:
                found = self._reconcile(creds, claim.record, msg, now)
                reconciled = True
                if found is not None:
                    return self._record_sent(message_id, found, now, "adopted", log)
            early = self.validation.refusal(msg, now)
            if early is not None:
                code, text = early
                # refused here, not by Twilio: an opted-out number's 21610 opts it out again of nothing
                refused = {"refused_by": "connector"}
                record = self.ledger.record_error(message_id, code, text, now, attrs=refused, token=token)
                return self._errored(message_id, code, text, log, record)
            if guarded is not None:
                from chalicelib.usecases import guard

                verdict = guard.check(self.guards, msg, message_id, token, connection, now)
                if verdict.action != "send":
                    return self._guarded(message_id, token, verdict, raw, msg, log, now)
                if verdict.until is not None:
                    scheduled_at = verdict.until
                    msg = dataclasses.replace(msg, send_at=scheduled_at, schedule_type="fixed")
            waits = self._take_place(msg, connection, now)
            if msg.send_at is not None:  # polled from the time Twilio sends it, not while it waits there
                waits = max(waits, (msg.send_at - now).total_seconds())
            named = msg.connection if msg.connection != DEFAULT_CONNECTION else None
            callback = self.settings.status_callback_url(message_id, named)
            final = policy.permanent if policy else frozenset()  # the connection's: never tried again
            sent = self.twilio.create_message(creds, msg, callback, finish_by=finish_by, final=final)
        except TwilioRejected as exc:
            code = exc.code or ConnectorCode.INVALID_REQUEST
            if scheduled_at is not None:
                from chalicelib.usecases import guard

                if code in guard.TWILIO_WONT_SCHEDULE:  # nothing was made: the connector holds it itself
                    held = guard.Verdict("hold", scheduled_at, "quiet_hours", "scheduled")
                    return self._guarded(message_id, token, held, raw, msg, log, now)
            if policy and policy.is_retryable(exc.http_status, code) and self.guards is not None:
                self._retry_by_policy(message_id, token, policy, exc, now)
            record = self.ledger.record_error(message_id, code, exc.message, now, token=token)
            if policy.opts_out(code) if policy else code in rules.OPT_OUT_CODES:
                for sender in filter(None, (msg.from_, msg.messaging_service_sid)):
                    self.opt_outs.opt_out(msg.to, sender, now)
            return self._errored(message_id, code, exc.message, log, record)
        except Deferred:
            self.ledger.release(message_id, token, now)  # nothing was sent: the copy put back claims it afresh
            raise
        except TwilioOutcomeUnknown as exc:
            self.ledger.mark_outcome_unknown(message_id, token, now)
            metrics.add_metric(name="SendOutcomeUnknown", unit="Count", value=1)
            logger.warning("Twilio outcome unknown; will reconcile on redelivery", extra={**log, "error": str(exc)})
            raise RetryLater(str(exc)) from exc
        except (TwilioRetryable, StoreError, CredentialsUnavailable, ConfigurationError) as exc:
            if reconciled:
                self.ledger.release(message_id, token, now)
            else:
                self.ledger.mark_outcome_unknown(message_id, token, now)
            metrics.add_metric(name="SendRetries", unit="Count", value=1)
            logger.warning("send deferred", extra={**log, "error": str(exc), "kind": type(exc).__name__})
            if isinstance(exc, TwilioRetryable) and exc.http_status == 429:
                raise Deferred("Twilio is throttling the account", exc.retry_after or 0, "Throttling") from exc
            raise RetryLater(str(exc)) from exc
        return self._record_sent(message_id, sent, now, "sent", log, waits)

    def _guarded(
        self, message_id: str, token: str, verdict: Verdict, raw: Any, msg: OutboundMessage,
        log: dict[str, Any], now: datetime,
    ) -> SendOutcome:  # fmt: skip
        """A guardrail refused the message (an error record) or holds it (released by app.release)."""
        if verdict.action == "refuse":
            attrs = {"refused_by": "connector"}
            record = self.ledger.record_error(message_id, verdict.code, verdict.text, now, attrs=attrs, token=token)
            return self._errored(message_id, verdict.code, verdict.text, log, record)
        assert self.guards is not None
        hold = {
            "status": verdict.status,
            "until": verdict.until,
            "reason": verdict.reason,
            "connection": msg.connection,
        }
        item = self.guards.hold(message_id, token, hold, raw, now)
        logger.info("message held", extra={**log, "reason": verdict.reason, "until": str(verdict.until)})
        return SendOutcome(message_id, "held", verdict.status, record=MessageRecord(item) if item else None)

    def _retry_by_policy(
        self, message_id: str, token: str, policy: ErrorPolicy, exc: TwilioError, now: datetime
    ) -> None:
        """The connection's error policy retries this code: put the message back, as often as it says."""
        assert self.guards is not None
        if self.guards.note_retry(message_id) <= policy.retry_attempts:
            self.ledger.release(message_id, token, now)
            reason = f"Twilio error {exc.code}, retried by the connection's error policy"
            raise Deferred(reason, policy.retry_interval_seconds, "ErrorPolicy") from exc

    def _take_place(self, msg: OutboundMessage, connection: ConnectionSettings, now: datetime) -> float:
        """Reserve the message's segments in its sender's queue at Twilio, or defer it (Pacing) when it
        would wait there longer than its validity and fail with 30001. How long it will wait there."""
        sender = msg.messaging_service_sid or msg.from_
        rates = {**self.settings.sender_rates, **connection.sender_rates}  # its own win
        rate = sender_rate(sender, rates) if sender else None
        if sender is None or rate is None or self.senders is None:
            return 0.0
        validity = msg.validity_period or DEFAULT_VALIDITY_SECONDS
        place = self.senders.reserve(sender, msg.num_segments, rate, validity, now)
        if place.next_free is None:
            metrics.add_metric(name="SenderQueueFull", unit="Count", value=1)
            raise Deferred("the sender's queue at Twilio is full for this message's validity", place.over_by, "Pacing")
        return place.wait_seconds

    def _reconcile(
        self, creds: TwilioCredentials, record: MessageRecord | None, msg: OutboundMessage, now: datetime
    ) -> TwilioMessage | None:
        """Find the message an unfinished attempt may have created: same To/From, body, time window."""
        first = (record.first_claimed_at if record else None) or now
        window_start = first - CLOCK_SKEW
        digest = (record.body_sha256 if record else None) or rules.body_digest(msg.body)
        to = (record.to if record else None) or msg.to
        metrics.add_metric(name="Reconciliations", unit="Count", value=1)
        for candidate in self.twilio.list_messages(creds, to=to, from_=msg.from_):
            if candidate.date_created is not None and candidate.date_created < window_start:
                break  # newest first: everything further is older than the claim
            if rules.body_digest(candidate.body) != digest:
                continue
            if msg.messaging_service_sid and candidate.messaging_service_sid != msg.messaging_service_sid:
                continue
            return candidate
        return None

    def _record_sent(
        self, message_id: str, sent: TwilioMessage, now: datetime, result: str, log: dict[str, Any], waits: float = 0
    ) -> SendOutcome:
        # Polled in the window Twilio will send it in: a message waiting in its sender's queue at Twilio is
        # not fetched, attempt after attempt, while it waits (its callbacks still land whenever they come).
        due = now + timedelta(seconds=waits)
        recorded = self.ledger.record_sent(
            message_id,
            SentMessage(
                twilio_sid=sent.sid,
                status=sent.status,
                price=sent.price,
                price_unit=sent.price_unit,
                error_code=sent.error_code,
                error_message=sent.error_message,
                poll_window=None if sent.status in rules.TERMINAL_STATUSES else self.settings.poll_window(due),
            ),
            now,
        )
        if recorded is None:
            # Another worker recorded a SID first: only possible if a claim outlived its lease.
            metrics.add_metric(name="DuplicateSendDetected", unit="Count", value=1)
            logger.error("a second SID for one message", extra={**log, "twilio_sid": sent.sid})
        metrics.add_metric(name="MessagesAdopted" if result == "adopted" else "MessagesSent", unit="Count", value=1)
        logger.info("message handed to Twilio", extra={**log, "twilio_sid": sent.sid, "result": result})
        return SendOutcome(message_id, result, sent.status, record=recorded)

    def _errored(
        self, message_id: str, code: int, text: str, log: dict[str, Any], record: MessageRecord | None
    ) -> SendOutcome:
        metrics.add_metric(name="MessagesErrored", unit="Count", value=1)
        logger.info("message refused", extra={**log, "error_code": int(code), "error": text})
        return SendOutcome(message_id, "error", "error", int(code), record)

    def _reject_invalid(self, message_id: str, raw: Any, exc: ValidationError, now: datetime) -> SendOutcome:
        log = {"message_id": message_id, "field": exc.field, "error_code": exc.code}
        try:
            record = self.ledger.record_error(message_id, exc.code, exc.message, now, attrs=partial_attrs(raw))
            if record is not None:
                logger.info("invalid request", extra={**log, "error": exc.message})
                return self._errored(message_id, exc.code, exc.message, log, record)
            existing = self.ledger.get(message_id)
        except StoreError as err:
            raise RetryLater(str(err)) from err
        if existing is not None and existing.claim.claim_token and existing.status == "pending":
            # An earlier attempt may have reached Twilio, and the request no longer validates
            # (its template or connection changed): leave it for an operator via the DLQ.
            raise RetryLater(f"message {message_id} has an unfinished send but now fails validation: {exc.message}")
        return SendOutcome(message_id, "duplicate", existing.status if existing else None)
