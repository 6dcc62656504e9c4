"""What a change to a message means to the world outside: the events the connector publishes (their names,
what each carries) and the format its platform hears them in. Which change yields which event is
domain/outbox.py's; publishing is an adapter's (EventBridge); telling the platform is the forward use case's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chalicelib.domain.ledger import MessageRecord

SOURCE = "twilio.connector"
STATUS_CHANGED = "Message Status Changed"
OPTED_OUT = "Recipient Opted Out"
OPTED_IN = "Recipient Opted In"
REPLY_RECEIVED = "Reply Received"
# What of Twilio's incoming-message webhook a reply event keeps, so a `twilio` write-back relays it as Twilio
# sent it (twilio.com/docs/messaging/guides/webhook-request; media also as MediaUrl<N>, MediaContentType<N>).
INBOUND_FIELDS = (
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry",
    "NumMedia", "NumSegments",
)  # fmt: skip
INBOUND_MEDIA = ("MediaUrl", "MediaContentType")  # numbered: MediaUrl0, MediaContentType0, …


class Events(Protocol):
    """Where status events go (EventBridge when deployed), from the outbox only."""

    def publish(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> int | None:
        """Publish (detail type, detail) entries in order: the index of the first one refused, or None."""
        ...


def status_detail(record: MessageRecord) -> dict[str, Any]:
    """A status change as its event carries it (docs/user-guide.md, "What became of each message")."""
    latest = (record.events or [{}])[-1]
    detail = {
        "id": record.id,
        "status": record.status,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "twilio_sid": record.twilio_sid,
        "to": record.to,
        "from": record.item.get("from"),
        "messaging_service_sid": record.messaging_service_sid,
        "source": latest.get("source"),
        "at": latest.get("at") or record.updated_at,
        "metadata": dict(record.metadata or {}),
        "sid": record.sid,  # the Twilio-shaped SID every Twilio-format callback of this message carries
    }
    if record.item.get("raw_dlr_done_date"):
        detail["raw_dlr_done_date"] = record.item["raw_dlr_done_date"]
    if record.status_callback:
        detail["status_callback"] = record.status_callback
    for name in ("account_sid", "created_as", "connection"):
        if record.item.get(name):
            detail[name] = record.item[name]
    write_back = write_back_of(record.item)
    if write_back:
        detail["write_back"] = write_back  # what the forward rule matches on
    return detail


def write_back_of(item: Mapping[str, Any]) -> str | None:
    """The format a message's events go out in: its own (or its connection's, set at accept), Twilio's for
    a front-door message with a StatusCallback, else the connector's JSON to a request's status_callback."""
    if item.get("write_back"):
        return str(item["write_back"])
    if item.get("callback_format") == "twilio":
        return "twilio"
    return "json" if item.get("status_callback") else None
