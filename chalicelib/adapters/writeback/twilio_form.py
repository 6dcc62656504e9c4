"""`twilio`: what Twilio itself posts, for CleverTap and anything that reads Twilio's callbacks — a
StatusCallback form per change after the one the create answered, and for a reply the incoming-message
webhook — signed X-Twilio-Signature with the front-door account's token, as Twilio signs with yours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from chalicelib.adapters.writeback.base import Format, twilio_status
from chalicelib.domain import rules
from chalicelib.domain.events import INBOUND_MEDIA, REPLY_RECEIVED, STATUS_CHANGED
from chalicelib.domain.twilio_signature import compute_signature
from chalicelib.domain.writeback import Context, Request

# Twilio's request to an incoming-message webhook (twilio.com/docs/messaging/guides/webhook-request): the
# geographic fields are sent even when empty; media comes as MediaUrl<N> / MediaContentType<N>.
GEOGRAPHIC = ("FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry")


class TwilioFormat(Format):
    name = "twilio"
    credentials_hint = "the receiver refused X-Twilio-Signature: give it the front-door account's token"

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None:
        url = detail.get("status_callback") if detail_type == STATUS_CHANGED else None
        if context.configured is not None:
            options = context.configured.options
            inbound = options.get("inbound_url") if detail_type != STATUS_CHANGED else None
            url = url or inbound or context.configured.url
        if not url:
            return None
        account = context.account()  # the one the platform knows: a message sent through our API names it too
        return twilio(detail_type, {**detail, "account_sid": account.account_sid}, str(url), account.auth_token)


def twilio(detail_type: str, detail: Mapping[str, Any], url: str, token: str) -> Request | None:
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
    """What Twilio posts to a StatusCallback (twilio.com/docs/messaging/guides/track-outbound-message-status):
    the message's SID in Twilio's shape (^(SM|MM)[0-9a-fA-F]{32}$), the same in every callback."""
    status = twilio_status(detail)
    first = str(detail.get("created_as") or "queued")
    if rules.STATUS_RANK.get(status, 0) <= rules.STATUS_RANK[first] or status in rules.TRANSIENT_STATUSES:
        return None
    sid = str(detail.get("sid") or rules.message_sid(str(detail["id"])))
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
    if detail.get("raw_dlr_done_date"):
        params.append(("RawDlrDoneDate", str(detail["raw_dlr_done_date"])))
    return params


def incoming_message_form(detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    sid = str(detail.get("twilio_sid") or detail.get("id") or "")
    given: Mapping[str, str] = detail.get("twilio_fields") or {}  # as Twilio posted them to our webhook
    params = [
        ("ToCountry", given.get("ToCountry", "")),
        ("ToState", given.get("ToState", "")),
        ("SmsMessageSid", sid),
        ("NumMedia", given.get("NumMedia", "0")),
        ("ToCity", given.get("ToCity", "")),
        ("FromZip", given.get("FromZip", "")),
        ("SmsSid", sid),
        ("FromState", given.get("FromState", "")),
        ("SmsStatus", "received"),
        ("FromCity", given.get("FromCity", "")),
        ("Body", str(detail.get("body") or "")),
        ("FromCountry", given.get("FromCountry", "")),
        ("To", str(detail.get("received_by") or "")),
        ("ToZip", given.get("ToZip", "")),
        ("NumSegments", given.get("NumSegments", "1")),
        ("MessageSid", sid),
        ("AccountSid", str(detail.get("account_sid") or "")),
        ("From", str(detail.get("from") or "")),
        ("ApiVersion", "2010-04-01"),
    ]
    params += [(name, value) for name, value in given.items() if name.startswith(INBOUND_MEDIA)]
    if detail.get("messaging_service_sid"):
        params.append(("MessagingServiceSid", str(detail["messaging_service_sid"])))
    return params
