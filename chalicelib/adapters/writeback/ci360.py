"""`ci360`: SAS CI360's external events (`POST <gateway>/marketingGateway/events`), one named event per
outcome as SAS's own SMS connector sends them (sassoftware/ci360-extensions, code/ci360-scg-connector:
`scg_response_event_<STATE>`, `externalCode`, a configurable `identity_field`), authorised by a JWT signed as
SAS's own clients sign it (docs/platforms.md, "Per platform: what it needs, and where that comes from")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.writeback.base import Format, mapped, twilio_status
from chalicelib.domain.connection import WriteBack
from chalicelib.domain.events import OPTED_OUT, REPLY_RECEIVED, STATUS_CHANGED
from chalicelib.domain.models import ValidationError
from chalicelib.domain.writeback import Check, Context, NotDeliverable, Request

# CI360 names a customer by the identity its tenant uses (SAS's ci360-api-helper offers these four; its SMS
# connector makes the field configurable): options.identity, default datahub_id.
IDENTITIES = ("datahub_id", "subject_id", "customer_id", "login_id")
# One external event per outcome: the connection names each with options.event_<name>; empty sends nothing.
EVENTS = (
    "accepted", "scheduled", "queued", "sent", "delivered", "undelivered", "failed", "canceled", "read",
    "reply", "opt_out",
)  # fmt: skip
OLD_EVENTS = ("sms_status", "sms_reply", "sms_opt_out")  # the names before per-status events


class Ci360Format(Format):
    name = "ci360"
    credentials_hint = "check the connection's options.tenant and its client secret, as CI360 shows it"
    required_options = ("tenant",)
    secret_required = True  # the client secret signs the JWT

    def request(self, detail_type: str, detail: Mapping[str, Any], context: Context) -> Request | None:
        if context.configured is None:
            raise NotDeliverable("the message's connection has no `ci360` write-back configured")
        return ci360(detail_type, detail, context.configured, context.secret())

    def check(self, config: WriteBack, secret: str) -> Check | None:
        """What SAS's own tools read to validate a gateway and its credentials (ci360-extensions:
        code/snowy/Chrome/js/tenant-config-manager.js, `GET /marketingGateway/configuration` with the JWT)."""
        url = str(config.url).rstrip("/") + "/marketingGateway/configuration"
        return Check("GET", url, {"Authorization": f"Bearer {token(config.options['tenant'], secret)}"})

    def validate(self, options: Mapping[str, str], attributes: Mapping[str, str], allow_local: bool) -> None:
        super().validate(options, attributes, allow_local)
        identity = options.get("identity")
        if identity is not None and identity not in IDENTITIES:
            raise ValidationError(
                "write_back.options.identity",
                f"`options.identity` must be one of CI360's identities: {', '.join(IDENTITIES)}",
            )
        names = {f"event_{n}" for n in (*EVENTS, *OLD_EVENTS)}
        odd = sorted(k for k in options if k.startswith("event_") and k not in names)
        if odd:
            known = ", ".join(f"event_{n}" for n in EVENTS)
            raise ValidationError(f"write_back.options.{odd[0]}", f"`options.{odd[0]}` is not one of: {known}")


def token(tenant: str, client_secret: str) -> str:
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


def event_name(detail_type: str, detail: Mapping[str, Any], options: Mapping[str, str]) -> str:
    """`options.event_<status|reply|opt_out>`, else the one name set before per-status events, else
    `sms_<status>` (`sms_reply`, `sms_opt_out`). Empty: nothing is sent for it."""
    kind = {OPTED_OUT: "opt_out", REPLY_RECEIVED: "reply"}.get(detail_type) or twilio_status(detail)
    old = {"opt_out": "event_sms_opt_out", "reply": "event_sms_reply"}.get(kind, "event_sms_status")
    for name in (f"event_{kind}", old):
        if name in options:
            return options[name]
    return f"sms_{kind}"


def ci360(detail_type: str, detail: Mapping[str, Any], write_back: WriteBack, client_secret: str) -> Request | None:
    options = write_back.options
    name = event_name(detail_type, detail, options)
    if not name:
        return None  # the connection sends nothing for this one
    metadata = detail.get("metadata") or {}
    identity = options.get("identity") or "datahub_id"
    source = write_back.attributes.get(identity, identity)
    if metadata.get(source) in (None, ""):
        raise NotDeliverable(
            f"the `ci360` write-back needs the recipient's {identity} (options.identity) in metadata.{source}"
        )
    rtc = metadata.get("response_tracking_code") or metadata.get("rtc")
    event = {
        **mapped(write_back, detail),
        "eventName": name,
        identity: str(metadata[source]),
        "externalCode": metadata.get("external_code") or metadata.get("externalCode") or rtc,
        "response_tracking_code": rtc,
        "message_id": detail.get("id") if detail_type == STATUS_CHANGED else detail.get("in_reply_to"),
        "status": detail.get("status"),
        "error_code": detail.get("error_code"),
        "reply": detail.get("body") if detail_type == REPLY_RECEIVED else None,
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token(options['tenant'], client_secret)}"}
    url = str(write_back.url).rstrip("/") + "/marketingGateway/events"
    return Request(url, json.dumps({k: v for k, v in event.items() if v is not None}), headers)
