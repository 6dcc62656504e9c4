"""A record of the send queue as the consumer reads it: the request, the ledger id it names (a message
attribute, which a DLQ redrive keeps) and how often it was deferred; the Protocols for putting one on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.domain import rules
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.json_reader import read_json

MESSAGE_ID_ATTRIBUTE = "connector_message_id"


DEFERRALS_ATTRIBUTE = "connector_deferrals"


class QueueError(Exception):
    """SQS did not take the message."""


def record_message_id(record: Mapping[str, Any]) -> str | None:
    """The ledger id an SQS record names (API requests and deferred copies), if any."""
    found = ((record.get("messageAttributes") or {}).get(MESSAGE_ID_ATTRIBUTE) or {}).get("stringValue")
    return str(found) if found else None


def record_deferrals(record: Mapping[str, Any]) -> int:
    found = ((record.get("messageAttributes") or {}).get(DEFERRALS_ATTRIBUTE) or {}).get("stringValue")
    return int(found) if found and str(found).isdecimal() else 0


@dataclass(frozen=True)
class QueuedRequest:
    """An SQS record read at the edge: its request (the JSON of a POST /messages body, None when the
    body is not JSON) and the ledger id every copy of it shares."""

    delivery_id: str  # SQS's messageId
    message_id: str
    request: Any
    keyed: bool  # named by an idempotency key or an attribute, not by the messageId a redrive replaces
    body: str  # as posted: a deferred record is put back exactly so
    deferrals: int  # how often it was put back before

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QueuedRequest:
        delivery_id, body = str(record.get("messageId")), str(record.get("body") or "")
        try:
            request: Any = read_json(body)
        except ValidationError as exc:
            request = exc  # parse_send_request puts it on the record as the error it is
        key = request.get("idempotency_key") if isinstance(request, dict) else None
        key = key if isinstance(key, str) and key else None
        named = record_message_id(record)
        message_id = named or rules.message_id(key, delivery_id)
        return cls(delivery_id, message_id, request, bool(named or key), body, record_deferrals(record))


class Enqueue(Protocol):
    """What accepting needs of the queue: put requests on it, learn which it did not take."""

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> set[str]: ...


class Requeue(Protocol):
    """What the send consumer needs of the queue: put a deferred record back, seen again after a delay."""

    def defer(self, message_id: str, body: str, delay_seconds: float, deferrals: int) -> None: ...
