"""The SQS send queue as the connector writes to it: the API enqueues accepted requests, and the send
function puts back a record it defers (Twilio throttling, a sender's queue full, time short) as a new
message with a delay, so a deferral never burns one of the record's receives on its way to the DLQ.

Both name the ledger record in a message attribute, so every copy of a request is the same message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain import rules
from chalicelib.observability import logger

MESSAGE_ID_ATTRIBUTE = "connector_message_id"
DEFERRALS_ATTRIBUTE = "connector_deferrals"
MAX_DELAY_SECONDS = 900  # SQS's longest DelaySeconds


class QueueError(Exception):
    """SQS did not take the message."""


def _attribute(value: str | int) -> dict[str, str]:
    if isinstance(value, int):
        return {"DataType": "Number", "StringValue": str(value)}
    return {"DataType": "String", "StringValue": value}


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
            request: Any = json.loads(body)
        except (ValueError, RecursionError):
            request = None  # parse_send_request turns this into a clear error on the record
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


class SendQueue:
    def __init__(self, client: Any, queue_name: str, queue_url: str | None = None) -> None:
        self.client = client
        self.queue_name = queue_name
        self._url = queue_url  # the deployed functions get it from the template: no GetQueueUrl call, no grant

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = str(self.client.get_queue_url(QueueName=self.queue_name)["QueueUrl"])
        return self._url

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> set[str]:
        """Enqueue (message id, body) pairs, ten per call; the ids SQS did not take."""
        failed: set[str] = set()
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(body),
                    "MessageAttributes": {MESSAGE_ID_ATTRIBUTE: _attribute(message_id)},
                }
                for i, (message_id, body) in enumerate(chunk)
            ]
            try:
                result = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
                failed |= {chunk[int(f["Id"])][0] for f in result.get("Failed", [])}
            except Exception as exc:  # botocore errors of any kind: report the chunk as not enqueued
                logger.error("send queue unavailable", extra={"error": str(exc)})
                failed |= {message_id for message_id, _ in chunk}
        return failed

    def defer(self, message_id: str, body: str, delay_seconds: float, deferrals: int) -> None:
        """Put a record back as a new message, seen again after `delay_seconds` (at most 900)."""
        delay = max(0, min(MAX_DELAY_SECONDS, int(delay_seconds + 0.999)))
        attributes = {MESSAGE_ID_ATTRIBUTE: _attribute(message_id), DEFERRALS_ATTRIBUTE: _attribute(deferrals)}
        try:
            self.client.send_message(
                QueueUrl=self.url, MessageBody=body, DelaySeconds=delay, MessageAttributes=attributes
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"could not put message {message_id} back on the queue: {exc}") from exc
