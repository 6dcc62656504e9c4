"""What became of a message, told to its platform in the platform's own language (one request per event).

Pure builders: each turns an event (a status change, a reply, an opt-out) into the HTTP request its
platform expects. `events.CallbackForwarder` sends them, with EventBridge's retries and DLQ. Each format
follows its platform's own code or documentation (docs/platforms.md, "Connections and write-back", cites them):

- `json`    the connector's signed JSON (X-Connector-Signature), to the request's `status_callback`
- `twilio`  what Twilio posts: a StatusCallback form, or the incoming-message webhook for a reply,
            signed with X-Twilio-Signature using the front-door token (CleverTap's callback URL)
- `swrve`   Swrve's Events API: `Queued`, `Sent`, `Delivered`, `Undelivered`, `Failed`, `black_listed_error`
- `tealium` Tealium's Collect HTTP API, v1 or the authenticated v3, one event per change
- `ci360`   SAS CI360's external event API, authorised by an HS256 JWT signed as SAS's own clients sign it

The identity a platform needs comes from the request's `metadata` (IDENTITY; `write_back.attributes`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from chalicelib.adapters.events import OPTED_OUT, REPLY_RECEIVED, STATUS_CHANGED
from chalicelib.domain import rules
from chalicelib.domain.connection import WriteBack
from chalicelib.domain.twilio_signature import compute_signature

TEALIUM_URL = "https://collect.tealiumiq.com/event"  # Collect HTTP API v1 (docs.tealium.com/platforms/http-api)
# Collect HTTP API v3, authenticated (docs.tealium.com/api/v3/http-api/about), and the v3 token exchange
# (docs.tealium.com/api/v3/getting-started/authentication): username and API key for a 30-minute JWT.
TEALIUM_V3_URL = "https://collect.tealiumiq.com/v3/collect/event"
TEALIUM_AUTH_URL = "https://platform.tealiumapis.com/v3/auth/accounts/{account}/profiles/{profile}"
TEALIUM_TOKEN_SECONDS = 25 * 60  # Tealium's tokens live 30 minutes and must be reused, not made per call
TEALIUM_RATE = 100.0  # events/s Tealium's HTTP API takes (docs.tealium.com/api/v3/http-api/about, v1 alike)
TEALIUM_RESERVED = ("tealium_account", "tealium_profile", "tealium_datasource", "tealium_event")
SWRVE_NAMES = {"queued": "Queued", "sent": "Sent", "delivered": "Delivered", "undelivered": "Undelivered"}
BLACKLISTED = "black_listed_error"  # Swrve's name for a recipient who replied STOP (or 21610)
# CI360 names a customer by the identity its tenant uses (SAS's ci360-api-helper offers these four; its SMS
# connector makes the field configurable, `identity_field`): options.identity, default datahub_id.
CI360_IDENTITIES = ("datahub_id", "subject_id", "customer_id", "login_id")
# One external event per outcome, as SAS's SMS connector sends them (scg_response_event_<STATE>): the
# connection names each with options.event_<name>; an empty name sends nothing for it.
CI360_EVENTS = (
    "accepted", "scheduled", "queued", "sent", "delivered", "undelivered", "failed", "canceled", "read",
    "reply", "opt_out",
)  # fmt: skip
CI360_OLD_EVENTS = ("sms_status", "sms_reply", "sms_opt_out")  # the names before per-status events
# where each platform's identity for the recipient is read from the request's metadata, first found wins
IDENTITY = {
    "swrve": ("swrve_user_id", "user_id", "user"),
    "tealium": ("tealium_visitor_id", "visitor_id"),
}


class NotDeliverable(Exception):
    """The event cannot be told to this platform (no identity for the recipient, say): never retried."""


class CredentialsRefused(NotDeliverable):
    """The platform refused the connector's credentials: never retried, counted and shown as such."""


@dataclass(frozen=True)
class Request:
    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def twilio_status(detail: Mapping[str, Any]) -> str:
    return rules.as_twilio_status(str(detail.get("status")))


def identity(fmt: str, detail: Mapping[str, Any]) -> str | None:
    metadata = detail.get("metadata") or {}
    return next((str(metadata[name]) for name in IDENTITY[fmt] if metadata.get(name)), None)


def mapped(write_back: WriteBack, detail: Mapping[str, Any]) -> dict[str, str]:
    """The platform's attributes the connection maps from the request's metadata, those present."""
    metadata = detail.get("metadata") or {}
    return {
        attr: str(metadata[key]) for attr, key in write_back.attributes.items() if metadata.get(key) not in (None, "")
    }


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
    user = identity("swrve", detail)
    if user is None:
        names = " or ".join(f"metadata.{n}" for n in IDENTITY["swrve"])
        raise NotDeliverable(f"the `swrve` write-back needs the recipient's Swrve user id in {names}")
    host = "eu-api" if write_back.options.get("region") == "eu" else "api"
    url = write_back.url or f"https://{write_back.options['app_id']}.{host}.swrve.com/1/event"
    payload = {k: detail.get(k) for k in ("id", "status", "error_code") if detail.get(k) is not None}
    form = {
        "api_key": api_key,
        "user": user,
        "name": name,
        "app_version": write_back.options.get("app_version", "1.0"),
        "swrve_payload": json.dumps(payload, separators=(",", ":")),
    }
    return Request(url, urlencode(form), {"Content-Type": "application/x-www-form-urlencoded"})


def tealium_v3(write_back: WriteBack) -> bool:
    return write_back.options.get("api") == "v3"


def tealium(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack) -> Request:
    """A collect event. AudienceStream knows a visitor by `tealium_visitor_id` or by a known visitor ID
    attribute (docs.tealium.com/platforms/http-api/endpoint, "Visitor identifiers"): the connection maps
    request metadata to such attributes (`write_back.attributes`, e.g. {"email_address_hash": "email_hash"})."""
    known = mapped(write_back, detail)
    visitor = known.pop("tealium_visitor_id", None) or identity("tealium", detail)
    if visitor is None and not known:
        wanted = [f"metadata.{n}" for n in IDENTITY["tealium"]] + [
            f"metadata.{k}" for k in write_back.attributes.values()
        ]
        raise NotDeliverable(
            f"the `tealium` write-back needs the recipient's visitor id or a known visitor attribute: "
            f"none of {', '.join(dict.fromkeys(wanted))} is set (map more with write_back.attributes)"
        )
    event = {STATUS_CHANGED: f"sms_{twilio_status(detail)}", OPTED_OUT: "sms_opt_out", REPLY_RECEIVED: "sms_reply"}
    body = {
        **known,
        "tealium_account": write_back.options["account"],
        "tealium_profile": write_back.options["profile"],
        "tealium_datasource": write_back.options.get("datasource"),
        "tealium_event": event.get(detail_type, "sms_event"),
        "tealium_visitor_id": visitor,
        "message_id": detail.get("id") or detail.get("in_reply_to"),
        "message_status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "connection": detail.get("connection"),
        "reply_body": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    clean = {k: v for k, v in body.items() if v is not None}
    default = TEALIUM_V3_URL if tealium_v3(write_back) else TEALIUM_URL
    return Request(write_back.url or default, json.dumps(clean), {"Content-Type": "application/json"})


def tealium_token_request(write_back: WriteBack, api_key: str) -> Request:
    """The v3 token exchange: form-encoded username and API key, answered {"token", "host"}."""
    options = write_back.options
    url = options.get("auth_url") or TEALIUM_AUTH_URL.format(
        account=quote(options["account"], safe=""), profile=quote(options["profile"], safe="")
    )
    body = urlencode({"username": options["username"], "key": api_key})
    return Request(url, body, {"Content-Type": "application/x-www-form-urlencoded"})


class BearerTokens:
    """Tokens reused until shortly before they expire, per (URL, user): Tealium throttles a client that
    exchanges its key for every call."""

    def __init__(self, lifetime: float = TEALIUM_TOKEN_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()  # one exchange at a time: concurrent forwards wait for its token
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, key: tuple[str, str], fetch: Callable[[], str]) -> str:
        with self._lock:
            held = self._tokens.get(key)
            if held is not None and held[1] > self.clock():
                return held[0]
            token = fetch()
            self._tokens[key] = (token, self.clock() + self.lifetime)
            return token

    def forget(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return self._tokens.pop(key, None) is not None


def ci360_token(tenant: str, client_secret: str) -> str:
    """The gateway's JWT: HS256 over {"clientID": tenant}, keyed by the base64 encoding of the client
    secret's UTF-8 bytes, as SAS's own clients make it (sassoftware/ci360-extensions:
    code/ci360-connector-templates/java/code/scripts/send_event.py, `b64encode(bytes(secret, 'utf8'))` given
    to `jwt.encode`; the event download agent's TasksApi.java and the API helper's `btoa(secret)` alike)."""
    return jwt_hs256({"clientID": tenant}, base64.b64encode(client_secret.encode("utf-8")))


def jwt_hs256(claims: Mapping[str, Any], key: bytes) -> str:
    """A compact JWT, HS256, header and claims serialized as PyJWT serializes them."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = part(json.dumps(dict(claims), separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


def ci360_event_name(detail_type: str, detail: Mapping[str, Any], options: Mapping[str, str]) -> str:
    """`options.event_<status|reply|opt_out>`, else the one name set before per-status events, else
    `sms_<status>` (`sms_reply`, `sms_opt_out`). Empty: nothing is sent for it."""
    kind = {OPTED_OUT: "opt_out", REPLY_RECEIVED: "reply"}.get(detail_type) or twilio_status(detail)
    old = {"opt_out": "event_sms_opt_out", "reply": "event_sms_reply"}.get(kind, "event_sms_status")
    for name in (f"event_{kind}", old):
        if name in options:
            return options[name]
    return f"sms_{kind}"


def ci360(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack, client_secret: str) -> Request | None:
    """An external event (POST <gateway>/marketingGateway/events), as SAS's SMS connector sends one per
    outcome: the identity the tenant uses, the outbound task's external code, Twilio's error code."""
    options = write_back.options
    name = ci360_event_name(detail_type, detail, options)
    if not name:
        return None  # the connection sends nothing for this one
    metadata = detail.get("metadata") or {}
    identity_attr = options.get("identity") or "datahub_id"
    source = write_back.attributes.get(identity_attr, identity_attr)
    if metadata.get(source) in (None, ""):
        raise NotDeliverable(
            f"the `ci360` write-back needs the recipient's {identity_attr} (options.identity) in metadata.{source}"
        )
    rtc = metadata.get("response_tracking_code") or metadata.get("rtc")
    event = {
        **mapped(write_back, detail),
        "eventName": name,
        identity_attr: str(metadata[source]),
        "externalCode": metadata.get("external_code") or metadata.get("externalCode") or rtc,
        "response_tracking_code": rtc,
        "message_id": detail.get("id") if detail_type == STATUS_CHANGED else detail.get("in_reply_to"),
        "status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "reply": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    token = ci360_token(options["tenant"], client_secret)
    url = str(write_back.url).rstrip("/") + "/marketingGateway/events"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return Request(url, json.dumps({k: v for k, v in event.items() if v is not None}), headers)


def ci360_check_url(write_back: WriteBack) -> str:
    """What SAS's own tools read to validate a gateway and its credentials (ci360-extensions:
    code/snowy/Chrome/js/tenant-config-manager.js, `GET /marketingGateway/configuration` with the JWT)."""
    return str(write_back.url).rstrip("/") + "/marketingGateway/configuration"


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


# Twilio's request to an incoming-message webhook (twilio.com/docs/messaging/guides/webhook-request): the
# geographic fields are sent even when empty; media comes as MediaUrl<N> / MediaContentType<N>.
GEOGRAPHIC = ("FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry")


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
    params += [(name, value) for name, value in given.items() if name.startswith(("MediaUrl", "MediaContentType"))]
    if detail.get("messaging_service_sid"):
        params.append(("MessagingServiceSid", str(detail["messaging_service_sid"])))
    return params
