"""Status events to EventBridge, so a CDP can trigger on "undelivered" or "opted out",
and their forwarding to a request's own `status_callback`, signed with the connector's HMAC.

Publishing never fails the caller: a lost event is logged and counted, while the
message record (the source of truth) is already written.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import rules
from chalicelib.ledger import MessageRecord
from chalicelib.observability import logger, metrics
from chalicelib.twilio_signature import compute_signature

if TYPE_CHECKING:
    from chalicelib.facade_accounts import FacadeAccounts

SOURCE = "twilio.connector"
STATUS_CHANGED = "Message Status Changed"
OPTED_OUT = "Recipient Opted Out"
OPTED_IN = "Recipient Opted In"
REPLY_RECEIVED = "Reply Received"
SIGNATURE_HEADER = "X-Connector-Signature"
TIMESTAMP_HEADER = "X-Connector-Timestamp"


def status_detail(record: MessageRecord) -> dict[str, Any]:
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
    }
    if record.status_callback:
        detail["status_callback"] = record.status_callback
    for name in ("account_sid", "callback_format", "created_as"):  # messages from the Twilio-compatible door
        if record.item.get(name):
            detail[name] = record.item[name]
    return detail


def twilio_callback(detail: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """What Twilio would post for this change, or None for the status the create already answered."""
    status = "failed" if detail["status"] == "error" else str(detail["status"])
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


class Events(Protocol):
    """Where status events go (EventBridge when deployed)."""

    def publish(self, detail_type: str, details: Sequence[Mapping[str, Any]]) -> None: ...


class EventPublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(self, detail_type: str, details: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(details), 10):  # PutEvents takes at most 10 entries
            chunk = details[start : start + 10]
            entries = [
                {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(d), "EventBusName": self.bus_name}
                for d in chunk
            ]
            try:
                result = self.client.put_events(Entries=entries)
                failed = int(result.get("FailedEntryCount") or 0)
            except (ClientError, BotoCoreError) as exc:
                failed = len(entries)
                logger.warning("status events not published", extra={"error": str(exc)})
            if failed:
                metrics.add_metric(name="EventsNotPublished", unit="Count", value=failed)
            metrics.add_metric(name="EventsPublished", unit="Count", value=len(entries) - failed)


def sign(key: str, timestamp: str, body: str) -> str:
    """`v1=` + hex HMAC-SHA256 of "<timestamp>.<body>": what a receiver recomputes to trust a forward."""
    return "v1=" + hmac.new(key.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


class ForwardFailed(Exception):
    """The caller's status_callback did not take the event; EventBridge's Lambda retries re-deliver it."""


def resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


class CallbackForwarder:
    def __init__(
        self,
        session: requests.Session,
        signing_key: str,
        timeout: float = 5.0,
        allow_local: bool = False,
        resolver: Callable[[str], list[str]] = resolve,
        accounts: FacadeAccounts | None = None,
    ) -> None:
        self.accounts = accounts  # the front door's accounts: their tokens sign Twilio-format callbacks
        self.session = session
        self.signing_key = signing_key
        self.timeout = timeout
        self.allow_local = allow_local
        self.resolver = resolver

    def _refusal(self, url: str) -> str | None:
        """Checked again where the request goes: a public name may resolve to a private address."""
        refusal = rules.callback_target_refusal(url, self.allow_local)
        host = urlsplit(url).hostname or ""
        if refusal is not None or not host:
            return refusal or "has no host"
        try:
            addresses = self.resolver(host)
        except OSError:
            return None  # unresolvable now: the POST fails and EventBridge retries
        for address in addresses:
            refused = rules.address_refusal(ipaddress.ip_address(address.split("%")[0]), self.allow_local)
            if refused:
                return refused
        return None

    def forward(self, detail: Mapping[str, Any], now: float | None = None) -> int:
        if detail.get("callback_format") == "twilio":
            return self._forward_as_twilio(detail)
        if not self.signing_key:
            raise ForwardFailed("no `callback_signing_key` in the Twilio secret: status_callback forwarding is off")
        url = str(detail["status_callback"])
        refusal = self._refusal(url)
        if refusal is not None:  # never retried: it will not become allowed
            metrics.add_metric(name="ForwardRefused", unit="Count", value=1)
            logger.warning("status_callback refused", extra={"message_id": detail.get("id"), "reason": refusal})
            return 0
        body = json.dumps({k: v for k, v in detail.items() if k != "status_callback"}, separators=(",", ":"))
        timestamp = str(int(now if now is not None else time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.signing_key, timestamp, body),
        }
        return self._post(url, body, headers)

    def _forward_as_twilio(self, detail: Mapping[str, Any]) -> int:
        """As Twilio posts a StatusCallback: a form, signed with the account's token (X-Twilio-Signature)."""
        params = twilio_callback(detail)
        if params is None:
            return 0
        url = str(detail["status_callback"])
        refusal = self._refusal(url)
        if refusal is not None:
            metrics.add_metric(name="ForwardRefused", unit="Count", value=1)
            logger.warning("status_callback refused", extra={"message_id": detail.get("id"), "reason": refusal})
            return 0
        account = self.accounts.get(str(detail.get("account_sid"))) if self.accounts else None
        if account is None:
            raise ForwardFailed("the message's front-door account is gone: its callback cannot be signed")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "X-Twilio-Signature": compute_signature(url, params, account.auth_token),
            "User-Agent": "TwilioProxy/1.1",
        }
        return self._post(url, urlencode(params), headers)

    def _post(self, url: str, body: str, headers: Mapping[str, str]) -> int:
        try:
            response = self.session.post(url, data=body, headers=dict(headers), timeout=self.timeout)
        except requests.RequestException as exc:
            raise ForwardFailed(f"status_callback unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise ForwardFailed(f"status_callback answered {response.status_code}")
        return response.status_code
