"""Twilio's resource shapes (2010-04-01) for the front door: Message, Account, pages, errors.

Shapes follow `MessageResource` in Twilio's OpenAPI spec (tests hold every field to it); the official
`twilio` clients read these answers as they read Twilio's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from chalicelib.adapters.facade_accounts import FacadeAccount
from chalicelib.domain import rules
from chalicelib.domain.ledger import MessageRecord

API_VERSION = "2010-04-01"
PREFIX = f"/{API_VERSION}"


@dataclass(frozen=True)
class Answer:
    """A function URL response: status, JSON body, headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_function_url(self) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", **self.headers}
        return {"statusCode": self.status, "headers": headers, "body": json.dumps(self.body)}


def twilio_error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return Answer(status, body, dict(headers or {}))


def rfc2822(iso: str | None) -> str | None:
    """Twilio's dates: `Thu, 26 Nov 2026 12:00:00 +0000`."""
    if not iso:
        return None
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")))


def created_status(record: MessageRecord) -> str:
    """What Twilio answers at create: `scheduled` with SendAt, `accepted` with a messaging service."""
    return str(record.item.get("created_as") or "queued")


def twilio_status(record: MessageRecord) -> str:
    status = record.status
    if status == "pending":
        return created_status(record)
    return rules.as_twilio_status(status)


def message_uri(account_sid: str, sid: str) -> str:
    return f"{PREFIX}/Accounts/{account_sid}/Messages/{sid}"


def message_resource(record: MessageRecord, account_sid: str, body: str | None = None) -> dict[str, Any]:
    """Twilio's Message. `body` only at create: the ledger keeps a body's hash, not its text."""
    base = message_uri(account_sid, record.id)
    code = record.error_code
    created = record.item.get("created_at")
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": rfc2822(created),
        "date_sent": rfc2822(record.item.get("sent_at")),
        "date_updated": rfc2822(record.item.get("updated_at") or created),
        "direction": "outbound-api",
        "error_code": int(code) if code is not None else None,
        "error_message": record.error_message,
        "from": record.item.get("from"),
        "messaging_service_sid": record.messaging_service_sid,
        "num_media": str(int(record.item.get("num_media") or 0)),
        "num_segments": str(int(record.item.get("num_segments") or 1)),
        "price": record.item.get("price"),
        "price_unit": record.item.get("price_unit") or "USD",
        "sid": record.id,
        "status": twilio_status(record),
        "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
        "to": record.to,
        "uri": f"{base}.json",
    }


def page(
    key: str,
    items: Sequence[Any],
    path: str,
    filters: Mapping[str, str],
    size: int,
    number: int,
    next_token: str | None,
) -> dict[str, Any]:
    """Twilio's page: the items under `key` and the paging fields its clients follow."""

    def uri(page_number: int, token: str | None = None) -> str:
        params = {**filters, "PageSize": str(size), "Page": str(page_number)}
        if token:
            params["PageToken"] = token
        return f"{path}?{urlencode(params)}"

    start = number * size
    return {
        key: list(items),
        "page": number,
        "page_size": size,
        "start": start,
        "end": start + max(len(items) - 1, 0),
        "uri": uri(number),
        "first_page_uri": uri(0),
        "next_page_uri": uri(number + 1, next_token) if next_token else None,
        "previous_page_uri": None,  # pages are read forwards, as Twilio's own clients read them
    }


def account_resource(account: FacadeAccount) -> dict[str, Any]:
    """What a platform's "Test connection" reads. Never a token."""
    sid = account.account_sid
    base = f"{PREFIX}/Accounts/{sid}"
    created = rfc2822(account.date_created) or "Thu, 01 Jan 2026 00:00:00 +0000"
    return {
        "sid": sid,
        "friendly_name": account.friendly_name,
        "status": "active",
        "type": "Full",
        "owner_account_sid": sid,
        "date_created": created,
        "date_updated": created,
        "uri": f"{base}.json",
        "subresource_uris": {
            "messages": f"{base}/Messages.json",
            "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json",
        },
    }


def phone_number_resource(account_sid: str, number: str) -> dict[str, Any]:
    sid = "PN" + hashlib.sha256(f"{account_sid}:{number}".encode()).hexdigest()[:32]
    return {
        "sid": sid,
        "account_sid": account_sid,
        "phone_number": number,
        "friendly_name": number,
        "capabilities": {"sms": True, "mms": True, "voice": False, "fax": False},
        "status": "in-use",
        "api_version": API_VERSION,
        "uri": f"{PREFIX}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json",
    }
