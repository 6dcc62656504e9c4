"""What became of a message, told to its platform in the platform's own language (one request per event).

Pure builders: each turns an event (a status change, a reply, an opt-out) into the HTTP request its
platform expects. `events.CallbackForwarder` sends them, with EventBridge's retries and DLQ.

- `json`    the connector's signed JSON (X-Connector-Signature), to the request's `status_callback`
- `twilio`  what Twilio posts: a StatusCallback form, or the incoming-message webhook for a reply,
            signed with X-Twilio-Signature using the front-door token (CleverTap's callback URL)
- `swrve`   Swrve's Events API: `Queued`, `Sent`, `Delivered`, `Undelivered`, `Failed`, `black_listed_error`
- `tealium` Tealium's HTTP API (collect), one event per change
- `ci360`   SAS CI360's external event API, authorised by an HS256 JWT made from the client secret

The identity a platform needs comes from the request's `metadata` (names in IDENTITY).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from chalicelib import rules
from chalicelib.events import OPTED_OUT, REPLY_RECEIVED, STATUS_CHANGED
from chalicelib.settings import WriteBack
from chalicelib.twilio_signature import compute_signature

TEALIUM_URL = "https://collect.tealiumiq.com/event"
TEALIUM_RATE = 100.0  # requests/s Tealium's HTTP API takes
SWRVE_NAMES = {"queued": "Queued", "sent": "Sent", "delivered": "Delivered", "undelivered": "Undelivered"}
BLACKLISTED = "black_listed_error"  # Swrve's name for a recipient who replied STOP (or 21610)
# where each platform's identity for the recipient is read from the request's metadata, first found wins
IDENTITY = {
    "swrve": ("swrve_user_id", "user_id", "user"),
    "tealium": ("tealium_visitor_id", "visitor_id"),
    "ci360": ("datahub_id",),
}


class NotDeliverable(Exception):
    """The event cannot be told to this platform (no identity for the recipient, say): never retried."""


@dataclass(frozen=True)
class Request:
    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def twilio_status(detail: Mapping[str, Any]) -> str:
    return rules.as_twilio_status(str(detail.get("status")))


def identity(fmt: str, detail: Mapping[str, Any]) -> str:
    metadata = detail.get("metadata") or {}
    for name in IDENTITY[fmt]:
        if metadata.get(name):
            return str(metadata[name])
    names = " or ".join(f"metadata.{n}" for n in IDENTITY[fmt])
    raise NotDeliverable(f"the `{fmt}` write-back needs the recipient's id in {names}")


def _opted_out(detail_type: str, detail: Mapping[str, Any]) -> bool:
    return detail_type == OPTED_OUT or detail.get("error_code") in (21610, "21610")


def swrve(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack, api_key: str) -> Request | None:
    if _opted_out(detail_type, detail):
        name = BLACKLISTED
    elif detail_type == STATUS_CHANGED:
        status = twilio_status(detail)
        name = SWRVE_NAMES.get(status, "Failed" if status == "failed" else "")
        if not name:
            return None  # accepted, scheduled, read…: Swrve's integration has no event for it
    else:
        return None  # a reply: Swrve's Twilio integration reports opt-outs only
    host = "eu-api" if write_back.options.get("region") == "eu" else "api"
    url = write_back.url or f"https://{write_back.options['app_id']}.{host}.swrve.com/1/event"
    payload = {k: detail.get(k) for k in ("id", "status", "error_code") if detail.get(k) is not None}
    form = {
        "api_key": api_key,
        "user": identity("swrve", detail),
        "name": name,
        "app_version": write_back.options.get("app_version", "1.0"),
        "swrve_payload": json.dumps(payload, separators=(",", ":")),
    }
    return Request(url, urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"})


def tealium(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack) -> Request:
    event = {STATUS_CHANGED: f"sms_{twilio_status(detail)}", OPTED_OUT: "sms_opt_out", REPLY_RECEIVED: "sms_reply"}
    body = {
        "tealium_account": write_back.options["account"],
        "tealium_profile": write_back.options["profile"],
        "tealium_datasource": write_back.options.get("datasource"),
        "tealium_event": event.get(detail_type, "sms_event"),
        "tealium_visitor_id": identity("tealium", detail),
        "message_id": detail.get("id") or detail.get("in_reply_to"),
        "message_status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "connection": detail.get("connection"),
        "reply_body": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    clean = {k: v for k, v in body.items() if v is not None}
    return Request(write_back.url or TEALIUM_URL, json.dumps(clean), {"Content-Type": "application/json"})


def jwt_hs256(claims: Mapping[str, Any], secret: str) -> str:
    """A JWT signed HS256 with the base64-decoded client secret, as CI360's gateway expects."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = part(json.dumps(dict(claims), separators=(",", ":")).encode())
    key = base64.b64decode(secret + "=" * (-len(secret) % 4))
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


def ci360(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack, client_secret: str) -> Request:
    metadata = detail.get("metadata") or {}
    names = {STATUS_CHANGED: "sms_status", OPTED_OUT: "sms_opt_out", REPLY_RECEIVED: "sms_reply"}
    event = {
        "eventName": write_back.options.get(f"event_{names.get(detail_type, 'sms_event')}", names.get(detail_type)),
        "datahub_id": identity("ci360", detail),
        "response_tracking_code": metadata.get("response_tracking_code") or metadata.get("rtc"),
        "message_id": detail.get("id") if detail_type == STATUS_CHANGED else detail.get("in_reply_to"),
        "status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "reply": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    token = jwt_hs256({"clientID": write_back.options["tenant"]}, client_secret)
    url = str(write_back.url).rstrip("/") + "/marketingGateway/events"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return Request(url, json.dumps({k: v for k, v in event.items() if v is not None}), headers)


def twilio(detail_type: str, detail: Mapping[str, Any], url: str, token: str) -> Request | None:
    """Twilio's StatusCallback form (one per change after the one the create answered), or, for a reply,
    Twilio's incoming-message webhook; signed as Twilio signs, with the front-door token."""
    if detail_type == STATUS_CHANGED:
        params = status_callback_form(detail)
    elif detail_type == REPLY_RECEIVED or detail.get("body"):
        params = incoming_message_form(detail)
    else:
        return None  # an opt-out reaches a Twilio-speaking platform as the STOP reply itself
    if params is None:
        return None
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Twilio-Signature": compute_signature(url, params, token),
        "User-Agent": "TwilioProxy/1.1",
    }
    return Request(url, urlencode(params), headers)


def status_callback_form(detail: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    status = twilio_status(detail)
    first = str(detail.get("created_as") or "queued")
    if rules.STATUS_RANK.get(status, 0) <= rules.STATUS_RANK[first] or status in rules.TRANSIENT_STATUSES:
        return None
    sid = str(detail["id"])
    params = [
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", str(detail.get("to") or "")),
        ("MessageSid", sid),
        ("AccountSid", str(detail.get("account_sid") or "")),
        ("From", str(detail.get("from") or "")),
        ("ApiVersion", "2010-04-01"),
    ]
    if detail.get("messaging_service_sid"):
        params.append(("MessagingServiceSid", str(detail["messaging_service_sid"])))
    if detail.get("error_code") is not None:
        params.append(("ErrorCode", str(detail["error_code"])))
    return params


def incoming_message_form(detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    sid = str(detail.get("twilio_sid") or detail.get("id") or "")
    params = [
        ("ToCountry", ""),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", str(detail.get("body") or "")),
        ("To", str(detail.get("received_by") or "")),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", str(detail.get("account_sid") or "")),
        ("From", str(detail.get("from") or "")),
        ("ApiVersion", "2010-04-01"),
    ]
    if detail.get("messaging_service_sid"):
        params.append(("MessagingServiceSid", str(detail["messaging_service_sid"])))
    return params
