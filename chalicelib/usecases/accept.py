"""Use case: accept send requests synchronously. Validate with the same code the send Lambda uses
(so an accepted message will not fail validation later), record it `pending`, and put it on the
send queue exactly as posted. `POST /messages`, the batch route and the coming Twilio-compatible
front door are thin controllers over it; each request gets its own outcome.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.ledger import MessageLedger, MessageRecord
from chalicelib.domain.models import ValidationError
from chalicelib.domain.ports import StoreError
from chalicelib.domain.queued import Enqueue
from chalicelib.domain.rules import ConnectorCode
from chalicelib.observability import logger
from chalicelib.usecases.validate import Validation, ledger_attrs


@dataclass(frozen=True)
class Accepted:
    """Recorded `pending` and on the send queue."""

    message_id: str
    record: MessageRecord | None = None  # as written: a front door answers from it without reading it back


@dataclass(frozen=True)
class AlreadyAccepted:
    """The same request with the same idempotency key again: nothing new happens."""

    message_id: str
    record: MessageRecord | None


@dataclass(frozen=True)
class Refused:
    """The request breaks a rule: the caller must change it."""

    status: int  # 400, or 409 for a key reused with a different request
    code: int | str
    message: str
    field: str | None

    @classmethod
    def invalid(cls, exc: ValidationError) -> Refused:
        return cls(400, exc.code, exc.message, exc.field)


@dataclass(frozen=True)
class Unavailable:
    """A store or the queue did not answer: the same request later succeeds, never twice."""

    code: str
    message: str


@dataclass(frozen=True)
class Failed:
    """A bug while accepting this one request; its neighbours are unaffected."""

    error: Exception


Outcome = Accepted | AlreadyAccepted | Refused | Unavailable | Failed


@dataclass(frozen=True)
class Filing:
    """How a front door files one request: the ledger id it minted, attributes of its own, and whether
    a refusal Twilio gives at create (an opted-out recipient) is given now rather than on the record."""

    message_id: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    refuse_now: bool = False


def request_digest(raw: Any) -> str:
    """What makes two requests the same request: their content, in canonical JSON, without the key."""
    content = {k: v for k, v in raw.items() if k != "idempotency_key"} if isinstance(raw, dict) else raw
    return rules.body_digest(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str))


class AcceptMessages:
    def __init__(
        self,
        validation: Validation,
        ledger: MessageLedger,
        queue: Enqueue,
        clock: Callable[[], datetime],
    ) -> None:
        self.validation = validation
        self.ledger = ledger
        self.queue = queue
        self.clock = clock

    def accept(
        self, requests: Sequence[Any], header_key: str | None = None, filings: Sequence[Filing] | None = None
    ) -> list[Outcome]:
        """One outcome per request, in order; the valid ones go to the queue together."""
        now = self.clock()
        outcomes: list[Outcome | None] = [None] * len(requests)
        to_enqueue: list[tuple[int, str, Any, MessageRecord | None]] = []
        for index, raw in enumerate(requests):
            try:
                prepared = self._prepare(raw, header_key, now, filings[index] if filings else None)
            except Exception as exc:  # a bug on one item is that item's answer, never its neighbours'
                prepared = Failed(exc)
            if isinstance(prepared, tuple):
                to_enqueue.append((index, *prepared))
            else:
                outcomes[index] = prepared
        failed = self.queue.send([(message_id, raw) for _, message_id, raw, _ in to_enqueue]) if to_enqueue else set()
        for index, message_id, _, record in to_enqueue:
            if message_id in failed:
                outcomes[index] = Unavailable("queue_unavailable", "the send queue did not take the message; retry")
                continue
            try:
                self.ledger.mark_enqueued(message_id, now)
            except StoreError as exc:  # it is on the queue: a retry of the key may enqueue a twin; the ledger dedupes
                logger.warning("enqueued mark not written", extra={"error": str(exc)})
            outcomes[index] = Accepted(message_id, record)
        return [o for o in outcomes if o is not None]

    def _prepare(
        self, raw: Any, header_key: str | None, now: datetime, filing: Filing | None
    ) -> Outcome | tuple[str, Any, MessageRecord | None]:
        """Validate and record one request: (message id, request to enqueue, its record), or its outcome already."""
        if header_key is not None and isinstance(raw, dict):
            body_key = raw.get("idempotency_key")
            if body_key is not None and body_key != header_key:
                text = "the Idempotency-Key header and `idempotency_key` differ"
                return Refused(400, ConnectorCode.INVALID_REQUEST, text, "idempotency_key")
            raw = {**raw, "idempotency_key": header_key}
        try:
            message = self.validation.prepare(raw, now)
        except ValidationError as exc:
            return Refused.invalid(exc)
        except StoreError as exc:
            logger.error("templates unavailable", extra={"error": str(exc)})
            return Unavailable("storage_unavailable", "the template store is unavailable; retry")
        if rules.is_stale(message.not_after, now):
            return Refused(400, ConnectorCode.STALE_REQUEST, "`not_after` is already in the past", "not_after")
        key = message.idempotency_key
        message_id = rules.message_id(key, "") if key else f"msg_{uuid.uuid4().hex}"
        digest = request_digest(raw)
        attrs = {**ledger_attrs(message), "request_sha256": digest}
        if filing is not None:
            message_id, attrs = filing.message_id, {**attrs, **filing.attrs}
            refusal = self.validation.refusal(message, now) if filing.refuse_now else None
            if refusal is not None:
                return Refused(400, refusal[0], refusal[1], "to")
        try:
            created = self.ledger.create_pending(message_id, attrs, now)
            if created is not None:
                return message_id, raw, created
            existing = self.ledger.get(message_id)
        except StoreError as exc:
            logger.error("ledger unavailable", extra={"error": str(exc)})
            return Unavailable("storage_unavailable", "the message store is unavailable; retry")
        seen = existing.item.get("request_sha256") if existing else None
        if seen is not None and seen != digest:  # as payment APIs do: one key, one request
            text = f"idempotency key `{key}` was already used for a different request; use a new key"
            return Refused(409, "idempotency_key_reused", text, "idempotency_key")
        if existing is None or existing.status != "pending" or existing.item.get("enqueued_at"):
            return AlreadyAccepted(message_id, existing)
        return message_id, raw, existing  # accepted before but never enqueued (the queue failed then): enqueue it now
