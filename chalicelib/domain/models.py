"""The send request (docs/user-guide.md, same name): parsing each field, and the message it becomes
(content rules: outbound.py).

Plain code rather than pydantic keeps the send path's import time inside the
cold-start budget (docs/deploy.md, "Package weight"). Every failure is a ValidationError that names the
field, the rule, and a Twilio error code where Twilio has one for the same rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from chalicelib.domain import rules
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.json_reader import read_json

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
    "address_retention": ("AddressRetention", "str"),
    "content_retention": ("ContentRetention", "str"),
    "fallback_from": ("FallbackFrom", "str"),
    "persistent_action": ("PersistentAction", "str_list"),
    "send_as_mms": ("SendAsMms", "bool"),
    "traffic_type": ("TrafficType", "str"),
    "template": (None, "str"),
    "fields": (None, "object"),
    "connection": (None, "str"),
    "idempotency_key": (None, "str"),
    "metadata": (None, "object"),
    "not_after": (None, "datetime"),
    "write_back": (None, "str"),
    "category": (None, "str"),
}
# Twilio's create parameter -> the request field it fills
TWILIO_ALIASES = {alias: name for name, (alias, _) in _SCHEMA.items() if alias}
_ALIASES = TWILIO_ALIASES


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
    address_retention: str | None = None
    content_retention: str | None = None
    fallback_from: str | None = None
    persistent_action: tuple[str, ...] = ()
    send_as_mms: bool | None = None
    traffic_type: str | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    not_after: datetime | None = None
    write_back: str | None = None  # json | twilio | swrve | tealium | ci360 | none; default: the connection's
    category: str | None = None  # marketing | transactional: quiet hours and caps are for marketing (guardrails)


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
            raise ValidationError(name, f"`{name}` must be a string or a list of strings")
        return tuple(items)
    if kind == "object":
        if not isinstance(value, dict):
            raise ValidationError(name, f"`{name}` must be a JSON object")
        return value
    if kind == "json_object":
        if isinstance(value, str):
            value = read_json(value, name, code=21656)
        if not isinstance(value, dict):
            raise ValidationError(name, f"`{name}` must be a JSON object", 21656)
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    raise AssertionError(f"unknown kind {kind}")  # pragma: no cover - schema bug


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
    """Check shape and types; accept Twilio's PascalCase names; reject unknown fields. A body the JSON
    reader refused comes as its refusal (domain/queued.py)."""
    if isinstance(data, ValidationError):
        raise data
    if not isinstance(data, dict):
        raise ValidationError("", "the request must be a JSON object")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in _SCHEMA:
            raise ValidationError(
                str(key), f"unknown field `{key}`; see docs/user-guide.md for the accepted fields", 20001
            )
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
        persistent_action=values.pop("persistent_action", None) or (),
        fields=fields_,
        metadata=metadata,
        **values,
    )
