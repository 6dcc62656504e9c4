"""The content rules (docs/user-guide.md, "The send request") a parsed, rendered request must meet to become
a message for Twilio.

Every failure is a ValidationError naming the field, the rule, and Twilio's error code for the same rule.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from urllib.parse import urlsplit

from chalicelib.domain import rules
from chalicelib.domain.models import (
    MAX_BODY_CHARS,
    MAX_MEDIA,
    SCHEDULE_MAX,
    SCHEDULE_MIN,
    VALIDITY_RANGE,
    MessageOptions,
    OutboundMessage,
    SendRequest,
    ValidationError,
)


def _valid_url(url: str, allow_underscore: bool = True) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or " " in url:
        return False
    return allow_underscore or "_" not in host


WRITE_BACK_FORMATS = ("json", "twilio", "swrve", "tealium", "ci360", "none")
# Twilio's enums for its create parameters (OpenAPI spec, 2010-04-01).
ENUMS = {
    "address_retention": ("retain", "obfuscate"),
    "content_retention": ("retain", "discard"),
    "traffic_type": ("free",),
}


def pick_sender(from_numbers: tuple[str, ...], to: str) -> str:
    """The same recipient always hears from the same number of a pool (conversations stay threaded)."""
    index = sum(to.encode()) % len(from_numbers)
    return from_numbers[index]


def validate_outbound(
    req: SendRequest,
    connection: str,
    default_from: tuple[str, ...],
    default_service: str | None,
    now: datetime,
    allow_local_callbacks: bool = False,
) -> OutboundMessage:
    """Apply every content rule to a request whose templates are already rendered."""
    if not req.to:
        raise ValidationError("to", "`to` is required", 21604)
    if not rules.is_valid_recipient(req.to):
        raise ValidationError("to", "`to` must be an E.164 number (+ and 8-15 digits) or whatsapp:+...", 21211)

    sender, service = req.from_, req.messaging_service_sid
    if sender is None and service is None:
        service = default_service
        if service is None and default_from:
            sender = pick_sender(default_from, req.to)
    if not sender and not service:
        raise ValidationError(
            "from", "`from` or `messaging_service_sid` is required (or configure a default sender)", 21603
        )
    if sender is not None and not rules.is_valid_sender(sender):
        raise ValidationError(
            "from",
            "`from` must be an E.164 number, a 5-6 digit short code, or an alphanumeric sender ID "
            "(1-11 letters, digits or spaces, at least one letter)",
            21212,
        )
    if service is not None and not rules.MESSAGING_SERVICE_SID.match(service):
        raise ValidationError("messaging_service_sid", "`messaging_service_sid` must match ^MG[0-9a-fA-F]{32}$", 21705)

    if not req.body and not req.media_urls and not req.content_sid:
        raise ValidationError("body", "one of `body`, `media_urls` or `content_sid` is required", 21602)
    if req.body is not None and len(req.body) > MAX_BODY_CHARS:
        raise ValidationError("body", f"`body` must be at most {MAX_BODY_CHARS} characters after rendering", 21617)
    if len(req.media_urls) > MAX_MEDIA:
        raise ValidationError("media_urls", f"at most {MAX_MEDIA} `media_urls` are allowed", 21623)
    for url in req.media_urls:
        if not _valid_url(url):
            raise ValidationError("media_urls", "every `media_urls` entry must be an http(s) URL", 21620)
    if req.content_sid is not None and not _is_sid(req.content_sid, "HX"):
        raise ValidationError("content_sid", "`content_sid` must match ^HX[0-9a-fA-F]{32}$")
    if req.content_variables is not None and req.content_sid is None:
        raise ValidationError("content_variables", "`content_variables` needs a `content_sid`", 21654)
    refusal = rules.callback_target_refusal(req.status_callback, allow_local_callbacks) if req.status_callback else None
    if refusal is not None:
        raise ValidationError("status_callback", f"`status_callback` {refusal}", 21609)
    if req.status_callback is not None and not _valid_url(req.status_callback, allow_underscore=False):
        raise ValidationError(
            "status_callback", "`status_callback` must be an http(s) URL whose hostname has no underscore", 21609
        )
    if req.validity_period is not None and not VALIDITY_RANGE[0] <= req.validity_period <= VALIDITY_RANGE[1]:
        raise ValidationError("validity_period", "`validity_period` must be between 1 and 36000 seconds", 21624)
    _check_schedule(req, service, now)
    if req.application_sid is not None and not _is_sid(req.application_sid, "AP"):
        raise ValidationError("application_sid", "`application_sid` must match ^AP[0-9a-fA-F]{32}$")
    if req.risk_check is not None and req.risk_check not in ("enable", "disable"):
        raise ValidationError("risk_check", "`risk_check` must be `enable` or `disable`")
    for name, value, allowed in (
        ("address_retention", req.address_retention, ENUMS["address_retention"]),
        ("content_retention", req.content_retention, ENUMS["content_retention"]),
        ("traffic_type", req.traffic_type, ENUMS["traffic_type"]),
        ("category", req.category, ("marketing", "transactional")),
    ):
        if value is not None and value not in allowed:
            raise ValidationError(name, f"`{name}` must be one of: {', '.join(allowed)}")
    if req.write_back is not None and req.write_back not in WRITE_BACK_FORMATS:
        raise ValidationError("write_back", f"`write_back` must be one of: {', '.join(WRITE_BACK_FORMATS)}")
    if req.fallback_from is not None and not rules.is_valid_sender(req.fallback_from):
        raise ValidationError("fallback_from", "`fallback_from` must be an E.164 number or a short code", 21212)
    if req.attempt is not None and req.attempt < 1:
        raise ValidationError("attempt", "`attempt` must be a positive integer")
    if req.max_price is not None and req.max_price < 0:
        raise ValidationError("max_price", "`max_price` must not be negative")

    # Twilio's SmartEncoded sends smart quotes as GSM-7: count the segments it will send
    body = req.body or ""
    if req.smart_encoded:
        from chalicelib.domain.guardrails import smart_encode  # only a request that asks for it loads the table

        body = smart_encode(body)
    info = rules.segment_info(body)
    options = {f.name: getattr(req, f.name) for f in dataclasses.fields(MessageOptions)}
    return OutboundMessage(
        to=req.to,
        from_=sender,
        messaging_service_sid=service,
        body=req.body,
        media_urls=req.media_urls,
        connection=connection,
        encoding=info.encoding,
        num_segments=info.num_segments,
        **options,
    )


def _is_sid(value: str, prefix: str) -> bool:
    tail = value[2:]
    return value.startswith(prefix) and len(tail) == 32 and all(c in "0123456789abcdefABCDEF" for c in tail)


def _check_schedule(req: SendRequest, service: str | None, now: datetime) -> None:
    if req.schedule_type is None and req.send_at is None:
        return
    if req.schedule_type is None:
        raise ValidationError("schedule_type", "`send_at` needs `schedule_type` set to `fixed`", 35126)
    if req.schedule_type != "fixed":
        raise ValidationError("schedule_type", "`schedule_type` must be `fixed`", 35126)
    if req.send_at is None:
        raise ValidationError("send_at", "`schedule_type` needs a `send_at` timestamp", 35111)
    ahead = req.send_at - now
    if not SCHEDULE_MIN < ahead <= SCHEDULE_MAX:
        raise ValidationError("send_at", "`send_at` must be more than 300 seconds and at most 35 days ahead", 35114)
    if service is None:
        raise ValidationError("messaging_service_sid", "scheduling needs a `messaging_service_sid`", 35118)
