"""Connections as the platforms know them (CleverTap's provider, Unica's Twilio connection, a CI360
endpoint): deploy-time ones from the environment (TWILIO_SECRET_ID, TWILIO_CONNECTIONS) and managed
ones made with `PUT /connections/{name}`, an item in the connections table whose secrets (the auth
token, a write-back secret) live in Secrets Manager, never in DynamoDB and never in an answer.

Every function sees both through `LiveConnections`, which the composition root builds once
(wiring.connections()) and injects where a connection is looked up: the managed ones are read (one small
scan) at most every CONNECTIONS_MAX_AGE seconds per container.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.adapters.dynamo import DynamoTable, deserialize, serialize
from chalicelib.domain import rules
from chalicelib.domain.connection import ConnectionSettings, WriteBack
from chalicelib.domain.models import ValidationError
from chalicelib.domain.ports import StoreError
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.domain.guardrails import Guardrails

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}\Z")
FIELDS = {
    "account_sid", "auth_token", "from_numbers", "messaging_service_sid", "retry_interval_ms", "retry_attempts",
    "sender_rates", "write_back", "default", "facade", "dedup_seconds", "guardrails",
}  # fmt: skip


def connection_from_item(item: Mapping[str, Any]) -> ConnectionSettings:
    """A managed connection as its table item holds it."""
    write_back = item.get("write_back")
    return ConnectionSettings(
        name=str(item["name"]),
        secret_id=str(item["secret_id"]),
        account_sid=item.get("account_sid"),
        from_numbers=tuple(item.get("from_numbers") or ()),
        messaging_service_sid=item.get("messaging_service_sid"),
        retry_interval_ms=_optional_int(item.get("retry_interval_ms")),
        retry_attempts=_optional_int(item.get("retry_attempts")),
        sender_rates={str(k): float(v) for k, v in (item.get("sender_rates") or {}).items()},
        write_back=WriteBack(
            format=str(write_back["format"]),
            url=write_back.get("url"),
            options={str(k): str(v) for k, v in (write_back.get("options") or {}).items()},
            attributes={str(k): str(v) for k, v in (write_back.get("attributes") or {}).items()},
        )
        if isinstance(write_back, Mapping)
        else None,
        dedup_seconds=_optional_int(item.get("dedup_seconds")),
        is_default=bool(item.get("is_default")),
        managed=True,
        guardrails=_stored_guardrails(item),
    )


def _stored_guardrails(item: Mapping[str, Any]) -> Guardrails | None:
    if not item.get("guardrails"):
        return None
    from chalicelib.domain.guardrails import parse_guardrails

    try:
        return parse_guardrails(item.get("guardrails"))  # deserialize() made its numbers JSON's again
    except ValidationError as exc:  # checked when it was put: only a hand-edited item gets here
        extra = {"connection": item.get("name"), "error": exc.message}
        logger.error("a connection's stored guardrails are unreadable; it sends without them", extra=extra)
        return None


def _described(guardrails: Guardrails | None) -> dict[str, Any] | None:
    if guardrails is None:
        return None
    from chalicelib.domain.guardrails import describe_guardrails

    return describe_guardrails(guardrails)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def describe(connection: ConnectionSettings, has_secret: bool = True) -> dict[str, Any]:
    """A connection as the API shows it: everything but its secrets."""
    write_back = connection.write_back
    return {
        "name": connection.name,
        "source": "api" if connection.managed else "deploy",
        "account_sid": connection.account_sid,
        "from_numbers": list(connection.from_numbers),
        "messaging_service_sid": connection.messaging_service_sid,
        "retry_interval_ms": connection.retry_interval_ms,
        "retry_attempts": connection.retry_attempts,
        "sender_rates": dict(connection.sender_rates),
        "dedup_seconds": connection.dedup_seconds,
        "guardrails": _described(connection.guardrails),
        "write_back": {
            "format": write_back.format,
            "url": write_back.url,
            "options": dict(write_back.options),
            "attributes": dict(write_back.attributes),
        }
        if write_back
        else None,
        "default": connection.is_default,
        "auth_token": "stored in Secrets Manager" if has_secret else None,
    }


def parse_connection(name: str, body: Any, existing: Mapping[str, Any] | None, allow_local: bool) -> tuple[
    dict[str, Any], dict[str, str]
]:  # fmt: skip
    """Check a PUT body: (the table item's fields, the secrets for Secrets Manager). Every failure names
    the field and the rule; on an update, fields left out keep their value."""
    if not NAME.match(name):
        raise ValidationError("name", "a connection name is 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(body, dict):
        raise ValidationError("", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValidationError(
            unknown[0], f"unknown field `{unknown[0]}`; see docs/platforms.md for a connection's fields"
        )
    item: dict[str, Any] = {k: v for k, v in (existing or {}).items() if k not in ("updated_at",)}
    secrets: dict[str, str] = {}
    if "account_sid" in body:
        if not isinstance(body["account_sid"], str) or not ACCOUNT_SID.match(body["account_sid"]):
            raise ValidationError("account_sid", "`account_sid` must be AC followed by 32 hexadecimal characters")
        item["account_sid"] = body["account_sid"]
    if "auth_token" in body:
        token = body["auth_token"]
        if not isinstance(token, str) or not 16 <= len(token) <= 128:
            raise ValidationError("auth_token", "`auth_token` must be the account's auth token (16-128 characters)")
        secrets["auth_token"] = token
    if existing is None:
        for required in ("account_sid", "auth_token"):
            if required not in body:
                raise ValidationError(required, f"`{required}` is required for a new connection")
    if "from_numbers" in body:
        numbers = body["from_numbers"]
        if not isinstance(numbers, list) or len(numbers) > 50:
            raise ValidationError("from_numbers", "`from_numbers` must be a list of at most 50 senders")
        if not all(isinstance(n, str) and rules.is_valid_sender(n) for n in numbers):
            raise ValidationError(
                "from_numbers", "each of `from_numbers` must be an E.164 number, short code or sender ID"
            )
        item["from_numbers"] = numbers
    if "messaging_service_sid" in body:
        service = body["messaging_service_sid"]
        if service is not None and (not isinstance(service, str) or not rules.MESSAGING_SERVICE_SID.match(service)):
            raise ValidationError("messaging_service_sid", "`messaging_service_sid` must match ^MG[0-9a-fA-F]{32}$")
        item["messaging_service_sid"] = service
    for field_name, low, high in (
        ("retry_interval_ms", 1000, 3_600_000),
        ("retry_attempts", 0, 100),
        ("dedup_seconds", 0, 86_400),
    ):
        if field_name in body:
            value = body[field_name]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise ValidationError(field_name, f"`{field_name}` must be an integer from {low} to {high}")
            item[field_name] = value
    if "sender_rates" in body:
        rates = body["sender_rates"]
        if not isinstance(rates, dict) or not all(
            _map_key(k) and isinstance(v, int | float) and not isinstance(v, bool) and 0.001 <= v <= 1000
            for k, v in rates.items()
        ):
            raise ValidationError("sender_rates", "`sender_rates` maps a sender to segments per second, 0.001-1000")
        item["sender_rates"] = {k: round(float(v), 6) for k, v in rates.items()}
    if "write_back" in body:
        item["write_back"], secret = _write_back(body["write_back"], allow_local)
        if secret is not None:
            secrets["write_back_secret"] = secret
        elif item["write_back"] and needs_secret(item["write_back"]) and not (existing or {}).get("write_back"):
            raise ValidationError(
                "write_back.secret", f"the `{item['write_back']['format']}` write-back needs a `secret`"
            )
    if "guardrails" in body:
        from chalicelib.domain.guardrails import parse_guardrails

        parse_guardrails(body["guardrails"])  # every rule, each failure naming its field
        item["guardrails"] = body["guardrails"]
    for flag in ("default", "facade"):
        if flag in body and not isinstance(body[flag], bool):
            raise ValidationError(flag, f"`{flag}` must be true or false")
    if "default" in body:
        item["is_default"] = body["default"]
    item["name"] = name
    return {k: v for k, v in item.items() if v is not None}, secrets


def needs_secret(write_back: Mapping[str, Any]) -> bool:
    """Swrve's API key, CI360's client secret, Tealium v3's API key: as the format says."""
    from chalicelib.adapters.writeback.registry import formats

    return formats()[write_back["format"]].needs_secret(write_back.get("options") or {})


def _write_back(spec: Any, allow_local: bool) -> tuple[dict[str, Any] | None, str | None]:
    from chalicelib.adapters.writeback.registry import NAMES, formats  # only PUT /connections: off cold starts

    if spec is None:
        return None, None
    if not isinstance(spec, dict) or spec.get("format") not in NAMES:
        raise ValidationError("write_back.format", f"`write_back.format` must be one of: {', '.join(NAMES)}")
    unknown = sorted(set(spec) - {"format", "url", "options", "secret", "attributes"})
    if unknown:
        raise ValidationError(f"write_back.{unknown[0]}", f"unknown field `write_back.{unknown[0]}`")
    fmt = spec["format"]
    options = spec.get("options") or {}
    if not isinstance(options, dict) or not all(_map_key(k) and isinstance(v, str) for k, v in options.items()):
        raise ValidationError("write_back.options", "`write_back.options` maps names (1-64 characters) to strings")
    attributes = spec.get("attributes") or {}
    if (
        not isinstance(attributes, dict)
        or len(attributes) > 20
        or not all(_map_key(k) and _map_key(v) for k, v in attributes.items())
    ):
        raise ValidationError(
            "write_back.attributes",
            "`write_back.attributes` maps at most 20 of the platform's attribute names to metadata keys "
            '(1-64 characters each), e.g. {"email_address_hash": "email_hash"}',
        )
    formats()[fmt].validate(options, attributes, allow_local)  # what the platform accepts (its module says why)
    url = spec.get("url")
    if fmt == "ci360" and not url:
        raise ValidationError("write_back.url", "the `ci360` write-back needs `url`, the tenant's external gateway")
    if url is not None:
        refusal = rules.callback_target_refusal(url, allow_local) if isinstance(url, str) else "must be a URL"
        if refusal:
            raise ValidationError("write_back.url", f"`write_back.url` {refusal}")
    secret = spec.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ValidationError("write_back.secret", "`write_back.secret` must be a non-empty string")
    written: dict[str, Any] = {"format": fmt, "url": url, "options": options}
    if attributes:
        written["attributes"] = attributes
    return written, secret


def _map_key(key: Any) -> bool:
    """A name DynamoDB can store as a map key: never empty (moto takes one and then cannot read the item)."""
    return isinstance(key, str) and 1 <= len(key) <= 64


class ConnectionTable(Protocol):
    def get(self, name: str) -> dict[str, Any] | None: ...

    def put(self, item: Mapping[str, Any]) -> None: ...

    def delete(self, name: str) -> None: ...

    def all(self) -> list[dict[str, Any]]: ...


class DynamoConnections(DynamoTable):
    """The connections table: a handful of items, keyed by name."""

    def get(self, name: str) -> dict[str, Any] | None:
        item = self._call("get_item", Key={"name": {"S": name}}, ConsistentRead=True).get("Item")
        return deserialize(item) if item else None

    def put(self, item: Mapping[str, Any]) -> None:
        self._call("put_item", Item=serialize(item))

    def delete(self, name: str) -> None:
        self._call("delete_item", Key={"name": {"S": name}})

    def all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {"ConsistentRead": True}
        while True:
            result = self._call("scan", **request)
            items += [deserialize(i) for i in result.get("Items", [])]
            if "LastEvaluatedKey" not in result:
                return items
            request["ExclusiveStartKey"] = result["LastEvaluatedKey"]


class LiveConnections(Mapping[str, ConnectionSettings]):
    """Deploy-time connections, then managed ones (a deploy-time name cannot be taken by the API)."""

    def __init__(
        self,
        fixed: Mapping[str, ConnectionSettings],
        table: Callable[[], ConnectionTable] | None,
        max_age: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = dict(fixed)
        self._table = table
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._managed: dict[str, ConnectionSettings] = {}
        self._read_at: float | None = None

    def refresh(self) -> None:
        with self._lock:
            self._read_at = None

    def managed(self) -> dict[str, ConnectionSettings]:
        if self._table is None:
            return {}
        with self._lock:
            now = self.clock()
            if self._read_at is not None and now - self._read_at < self.max_age:
                return self._managed
            try:
                items = self._table().all()
            except StoreError as exc:  # keep what was read last: a connection does not vanish with a blip
                logger.warning("connections table unreadable; using the last read", extra={"error": str(exc)})
                if self._read_at is None:
                    raise
                return self._managed
            self._managed = {i["name"]: connection_from_item(i) for i in items if i.get("name") not in self.fixed}
            self._read_at = now
            return self._managed

    def __getitem__(self, name: str) -> ConnectionSettings:
        if name in self.fixed:
            return self.fixed[name]
        return self.managed()[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self.fixed, **self.managed()})

    def __len__(self) -> int:
        return len({**self.fixed, **self.managed()})
