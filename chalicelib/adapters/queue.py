"""The SQS send queue as the connector writes to it: the API enqueues accepted requests, and the send
function puts back a record it defers (Twilio throttling, a sender's queue full, time short) as a new
message with a delay, so a deferral never burns one of the record's receives on its way to the DLQ.

Both name the ledger record in a message attribute, so every copy of a request is the same message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.ports import StoreError
from chalicelib.domain.queued import (
    DEFERRALS_ATTRIBUTE,
    MESSAGE_ID_ATTRIBUTE,
    QueueError,
)
from chalicelib.observability import logger

MAX_DELAY_SECONDS = 900  # SQS's longest DelaySeconds


def _attribute(value: str | int) -> dict[str, str]:
    if isinstance(value, int):
        return {"DataType": "Number", "StringValue": str(value)}
    return {"DataType": "String", "StringValue": value}


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

    def send(self, items: Sequence[tuple[str, Mapping[str, Any]]], delay_seconds: int = 0) -> set[str]:
        """Enqueue (message id, body) pairs, ten per call; the ids SQS did not take."""
        failed: set[str] = set()
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(body),
                    "MessageAttributes": {MESSAGE_ID_ATTRIBUTE: _attribute(message_id)},
                    **({"DelaySeconds": delay_seconds} if delay_seconds else {}),
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


class ForwardQueue:
    """Where a write-back its platform did not take waits: a FIFO queue, one message per event, grouped by the
    ledger message, so the forward function tells a message's platform its changes in the stream's order
    (a group waits while its first event is refused) and other messages' are not held up."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self.client = client
        self.url = queue_url

    @staticmethod
    def body_of(kind: str, detail: Mapping[str, Any]) -> str:
        return json.dumps({"detail_type": kind, "detail": detail}, sort_keys=True)

    def token(self, group: str, kind: str, detail: Mapping[str, Any]) -> str:
        return parked_token(group, self.body_of(kind, detail))

    def park(self, group: str, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        for start in range(0, len(entries), 10):  # in order: a batch keeps a group's order
            batch = []
            for i, (kind, detail) in enumerate(entries[start : start + 10]):
                body = self.body_of(kind, detail)
                dedup = parked_token(group, body)  # a replayed batch parks once
                batch.append(
                    {"Id": str(i), "MessageBody": body, "MessageGroupId": group, "MessageDeduplicationId": dedup}
                )
            try:
                failed = self.client.send_message_batch(QueueUrl=self.url, Entries=batch).get("Failed") or []
            except (ClientError, BotoCoreError) as exc:
                raise StoreError(f"the forward queue did not take a write-back: {exc}") from exc
            if failed:
                raise StoreError(f"the forward queue refused {len(failed)} write-backs: {failed[0].get('Message')}")


def parked_token(group: str, body: str) -> str:
    """A parked event's id: its deduplication id, and the mark its message carries while it waits."""
    return hashlib.sha256(f"{group}|{body}".encode()).hexdigest()


def parked_entry(body: str) -> tuple[str, dict[str, Any]]:
    """A forward queue message's event, as ForwardQueue.park wrote it."""
    entry = json.loads(body)
    return str(entry["detail_type"]), dict(entry["detail"])
