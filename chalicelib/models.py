"""The send request (DESIGN §3.1): parsing, complete validation, and the message it becomes.

Plain code rather than pydantic keeps the send path's import time inside the
cold-start budget (DESIGN §6). Every failure is a ValidationError that names the
field, the rule, and a Twilio error code where Twilio has one for the same rule.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from chalicelib import rules
from chalicelib.rules import ConnectorCode
from chalicelib.settings import ConnectionSettings, Settings

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
MAX_METADATA_BYTES = 2048
MAX_IDEMPOTENCY_KEY = 255
MAX_NESTING = 8  # levels of objects and lists inside `metadata` (DynamoDB allows 32 in a whole item)
# DynamoDB's numbers: 38 significant digits, magnitude 1E-130 to 9.99E+125.
DYNAMO_DIGITS, DYNAMO_MIN_EXP, DYNAMO_MAX_EXP = 38, -130, 125
VALIDITY_RANGE = (1, 36000)
SCHEDULE_MIN = timedelta(seconds=300)
SCHEDULE_MAX = timedelta(days=35)


class ValidationError(Exception):
    """Bad input. `field` uses the connector's snake_case name."""

    def __init__(self, field: str, message: str, code: int = ConnectorCode.INVALID_REQUEST) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = int(code)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}


# canonical name -> (Twilio alias or None, kind)
_SCHEMA: dict[str, tuple[str | None, str]] = {
    "to": ("To", "str"),
    "from": ("From", "str"),
    "messaging_service_sid": ("MessagingServiceSid", "str"),
    "body": ("Body", "str"),
    "media_urls": ("MediaUrl", "str_list"),
    "content_sid": ("ContentSid", "str"),
    "content_variables": ("ContentVariables", "json_object"),
    "status_callback": ("StatusCallback", "str"),
    "validity_period": ("ValidityPeriod", "int"),
    "send_at": ("SendAt", "datetime"),
    "schedule_type": ("ScheduleType", "str"),
    "max_price": ("MaxPrice", "decimal"),
    "provide_feedback": ("ProvideFeedback", "bool"),
    "application_sid": ("ApplicationSid", "str"),
    "smart_encoded": ("SmartEncoded", "bool"),
    "shorten_urls": ("ShortenUrls", "bool"),
    "risk_check": ("RiskCheck", "str"),
    "attempt": ("Attempt", "int"),
    "force_delivery": ("ForceDelivery", "bool"),
    "template": (None, "str"),
    "fields": (None, "object"),
    "connection": (None, "str"),
    "idempotency_key": (None, "str"),
    "metadata": (None, "object"),
    "not_after": (None, "datetime"),
}
_ALIASES = {alias: name for name, (alias, _) in _SCHEMA.items() if alias}


@dataclass(frozen=True, kw_only=True)
class MessageOptions:
    """What a request carries unchanged into its message: Twilio's pass-through
    parameters and the connector's own per-message options."""

    content_sid: str | None = None
    content_variables: str | None = None
    status_callback: str | None = None  # the caller's URL the connector forwards events to
    validity_period: int | None = None
    send_at: datetime | None = None
    schedule_type: str | None = None
    max_price: Decimal | None = None
    provide_feedback: bool | None = None
    application_sid: str | None = None
    smart_encoded: bool | None = None
    shorten_urls: bool | None = None
    risk_check: str | None = None
    attempt: int | None = None
    force_delivery: bool | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    not_after: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class SendRequest(MessageOptions):
    """A request after type checks, before templates and content rules."""

    to: str | None = None
    from_: str | None = None
    messaging_service_sid: str | None = None
    body: str | None = None
    media_urls: tuple[str, ...] = ()
    template: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    connection: str | None = None


@dataclass(frozen=True, kw_only=True)
class OutboundMessage(MessageOptions):
    """A fully resolved, valid message: what the send Lambda hands to Twilio."""

    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str | None
    media_urls: tuple[str, ...]
    connection: str
    encoding: str
    num_segments: int


# --- type coercion -----------------------------------------------------------


def _coerce(name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "str":
        if not isinstance(value, str):
            raise ValidationError(name, f"`{name}` must be a string")
        return value
    if kind == "int":
        if isinstance(value, bool):
            raise ValidationError(name, f"`{name}` must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and rules.ASCII_INTEGER.match(value.strip()):
            return int(value.strip())  # ASCII digits only: "²" and "٣" pass isdigit() but are no integer here
        raise ValidationError(name, f"`{name}` must be an integer")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValidationError(name, f"`{name}` must be true or false")
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError(name, f"`{name}` must be a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValidationError(name, f"`{name}` must be a number") from exc
        if not number.is_finite():
            raise ValidationError(name, f"`{name}` must be a finite number")
        return number
    if kind == "datetime":
        return parse_timestamp(name, value)
    if kind == "str_list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValidationError(name, f"`{name}` must be a URL or a list of URLs")
        return tuple(items)
    if kind == "object":
        if not isinstance(value, dict):
            raise ValidationError(name, f"`{name}` must be a JSON object")
        return value
    if kind == "json_object":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValidationError(name, f"`{name}` must be a JSON object", 21656) from exc
        if not isinstance(value, dict):
            raise ValidationError(name, f"`{name}` must be a JSON object", 21656)
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    raise AssertionError(f"unknown kind {kind}")  # pragma: no cover - schema bug


def require_connection(settings: Settings, name: str | None) -> ConnectionSettings:
    """The named Twilio connection (the default one when no name is given), or the 400 that names it."""
    connection = settings.connection(name)
    if connection is None:
        known = ", ".join(sorted(settings.connections)) or "none configured"
        raise ValidationError(
            "connection", f"unknown connection `{name}` (known: {known})", ConnectorCode.UNKNOWN_CONNECTION
        )
    return connection


def is_name(value: str) -> bool:
    """A template or connection name: printable, trimmed, 1-128 characters (no newline sneaks a twin in)."""
    return 1 <= len(value) <= 128 and value.isprintable() and value == value.strip()


def parse_timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(name, f"`{name}` must be an ISO-8601 timestamp string")
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(name, f"`{name}` must be an ISO-8601 timestamp, e.g. 2026-01-31T09:00:00Z") from exc
    if parsed.tzinfo is None:
        raise ValidationError(name, f"`{name}` must include a timezone (Z or an offset such as +01:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 with an offset leaves datetime's range
        raise ValidationError(name, f"`{name}` must be a time between the years 2 and 9998") from exc


def check_storable(name: str, value: Any, depth: int = 0) -> None:
    """What DynamoDB will store: finite numbers in its range and precision, bounded nesting,
    string keys that are not empty (moto is laxer than DynamoDB on all three)."""
    if depth > MAX_NESTING:
        raise ValidationError(name, f"`{name}` may nest objects and lists at most {MAX_NESTING} levels deep")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
        if not number.is_finite():
            raise ValidationError(name, f"`{name}` holds {value}: numbers must be finite")
        if number != 0:
            digits = len(number.as_tuple().digits)  # as written: boto3 refuses to round 40 digits to 38
            exponent = number.adjusted()
            if digits > DYNAMO_DIGITS or not DYNAMO_MIN_EXP <= exponent <= DYNAMO_MAX_EXP:
                raise ValidationError(
                    name, f"`{name}` holds {value}: numbers have at most 38 digits, between 1e-130 and 9.99e125"
                )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValidationError(name, f"`{name}` keys must be non-empty strings")
            check_storable(name, item, depth + 1)
        return
    if isinstance(value, list):
        for item in value:
            check_storable(name, item, depth + 1)
        return
    raise ValidationError(name, f"`{name}` holds a value of type {type(value).__name__}")


def parse_send_request(data: Any) -> SendRequest:
    """Check shape and types; accept Twilio's PascalCase names; reject unknown fields."""
    if not isinstance(data, dict):
        raise ValidationError("", "the request must be a JSON object")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in _SCHEMA:
            raise ValidationError(str(key), f"unknown field `{key}`; see the README for the accepted fields", 20001)
        if name in values:
            raise ValidationError(name, f"`{name}` is given twice (as `{name}` and its Twilio alias)")
        values[name] = _coerce(name, _SCHEMA[name][1], value)
    fields_ = values.pop("fields", None) or {}
    metadata = values.pop("metadata", None) or {}
    check_storable("metadata", metadata)
    if len(json.dumps(metadata, separators=(",", ":"), default=str)) > MAX_METADATA_BYTES:
        raise ValidationError("metadata", f"`metadata` must be at most {MAX_METADATA_BYTES} bytes as JSON")
    for name in ("template", "connection"):
        value = values.get(name)
        if value is not None and not is_name(value):
            rule = "a name of 1-128 printable characters, no space at either end"
            raise ValidationError(name, f"`{name}` must be {rule}")
    key = values.get("idempotency_key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError("idempotency_key", f"`idempotency_key` must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    for name, value in fields_.items():
        if isinstance(value, (dict, list)):
            raise ValidationError("fields", f"field `{name}` must be a string, number or boolean")
    return SendRequest(
        from_=values.pop("from", None),
        media_urls=values.pop("media_urls", None) or (),
        fields=fields_,
        metadata=metadata,
        **values,
    )


# --- content rules -----------------------------------------------------------


def _valid_url(url: str, allow_underscore: bool = True) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or " " in url:
        return False
    return allow_underscore or "_" not in host


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
    """Apply every rule of DESIGN §3.1 to a request whose templates are already rendered."""
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
    if req.attempt is not None and req.attempt < 1:
        raise ValidationError("attempt", "`attempt` must be a positive integer")
    if req.max_price is not None and req.max_price < 0:
        raise ValidationError("max_price", "`max_price` must not be negative")

    info = rules.segment_info(req.body or "")
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
