"""The HTTP API for CDPs (DESIGN §3.2): accept messages, read records, manage templates,
test the connection, report stats, and check API keys.

Routes validate synchronously with the same code the send Lambda uses, so a 202
means the message will not fail validation later; the record is written as
`pending` and the request goes to the send queue exactly as posted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from traceback import extract_tb
from typing import Any

from chalicelib import rules
from chalicelib.models import ValidationError, is_name, parse_timestamp, require_connection
from chalicelib.observability import logger, metrics
from chalicelib.queue import SendQueue
from chalicelib.rules import ConnectorCode
from chalicelib.secrets import CredentialsUnavailable, SecretsCredentials
from chalicelib.services import SendService, ledger_attrs
from chalicelib.settings import ConfigurationError, Settings
from chalicelib.store import MessageLedger, StoreError
from chalicelib.tables import StatsStore, TemplateStore
from chalicelib.templates import TO_KEY, Template, check_unrendered_size, placeholders
from chalicelib.twilio_api import TwilioApi, TwilioError
from chalicelib.twilio_signature import compute_signature

MAX_BATCH = 100
MAX_TEMPLATE_BYTES = 64 * 1024  # far below DynamoDB's 400 KB item
MAX_STATS_DAYS = 92


@dataclass(frozen=True)
class ApiResult:
    status: int
    body: Any


def error(status: int, code: int | str, message: str, field: str | None = None) -> ApiResult:
    return ApiResult(status, {"error": {"code": code, "message": message, "field": field}})


def invalid(exc: ValidationError) -> ApiResult:
    return ApiResult(400, {"error": exc.to_dict()})


def from_chalice(status: int, body: Any, headers: Mapping[str, Any]) -> ApiResult | None:
    """Chalice answers some requests itself (405, 415) as {"Code", "Message"}: the same in our shape."""
    if status < 400 or not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return None
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower().removesuffix("_error")
    allowed = headers.get("Allow")
    return error(status, code, f"{body['Message']}; this route allows {allowed}" if allowed else str(body["Message"]))


def unexpected(exc: Exception, path: str) -> ApiResult:
    """A bug answered as a 500 in our shape; logged by where it happened, not by its message (it may hold data)."""
    frames = [
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" for frame in extract_tb(exc.__traceback__)
    ]
    logger.error("unexpected error", extra={"error": type(exc).__name__, "path": path, "frames": frames[-5:]})
    return error(500, "internal_error", "the connector failed on this request; retry, and report it if it repeats")


def request_digest(raw: Any) -> str:
    """What makes two requests the same request: their content, in canonical JSON, without the key."""
    content = {k: v for k, v in raw.items() if k != "idempotency_key"} if isinstance(raw, dict) else raw
    return rules.body_digest(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str))


class MessagesApi:
    def __init__(
        self,
        settings: Settings,
        service: SendService,
        ledger: MessageLedger,
        templates: TemplateStore,
        stats: StatsStore,
        queue: SendQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.service = service
        self.ledger = ledger
        self.templates = templates
        self.stats = stats
        self.queue = queue
        self.clock = clock

    # --- POST /messages, POST /messages/batch --------------------------------

    def accept(self, body: Any, idempotency_key: str | None) -> ApiResult:
        results = self._accept_many([body], idempotency_key)
        return results[0]

    def accept_batch(self, body: Any) -> ApiResult:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error(400, ConnectorCode.INVALID_REQUEST, 'the body must be {"messages": [ ... ]}', "messages")
        items = body["messages"]
        if not 1 <= len(items) <= MAX_BATCH:
            return error(
                400, ConnectorCode.INVALID_REQUEST, f"`messages` must hold 1 to {MAX_BATCH} requests", "messages"
            )
        results = self._accept_many(items, None)
        rows = [{"index": i, "http_status": r.status, **r.body} for i, r in enumerate(results)]
        return ApiResult(200, {"results": rows})

    def _accept_many(self, bodies: Sequence[Any], header_key: str | None) -> list[ApiResult]:
        now = self.clock()
        results: list[ApiResult | None] = [None] * len(bodies)
        to_enqueue: list[tuple[int, str, dict[str, Any]]] = []
        for index, raw in enumerate(bodies):
            try:
                outcome = self._accept_one(raw, header_key, now)
            except Exception as exc:  # a bug on one item is that item's answer, never its neighbours'
                outcome = unexpected(exc, f"messages[{index}]")
            if isinstance(outcome, ApiResult):
                results[index] = outcome
            else:
                to_enqueue.append((index, *outcome))
        failed = self.queue.send([(message_id, body) for _, message_id, body in to_enqueue]) if to_enqueue else set()
        for index, message_id, _ in to_enqueue:
            if message_id in failed:
                results[index] = error(503, "queue_unavailable", "the send queue did not take the message; retry", None)
                continue
            try:
                self.ledger.mark_enqueued(message_id, now)
            except (
                StoreError
            ) as exc:  # it is on the queue: a later retry of the key may enqueue a twin, the ledger dedupes
                logger.warning("enqueued mark not written", extra={"error": str(exc)})
            results[index] = ApiResult(202, {"id": message_id, "status": "pending"})
        return [r for r in results if r is not None]

    def _accept_one(self, raw: Any, header_key: str | None, now: datetime) -> ApiResult | tuple[str, dict[str, Any]]:
        if header_key is not None and isinstance(raw, dict):
            body_key = raw.get("idempotency_key")
            if body_key is not None and body_key != header_key:
                return error(
                    400,
                    ConnectorCode.INVALID_REQUEST,
                    "the Idempotency-Key header and `idempotency_key` differ",
                    "idempotency_key",
                )
            raw = {**raw, "idempotency_key": header_key}
        try:
            message = self.service.prepare(raw, now)
        except ValidationError as exc:
            return invalid(exc)
        except StoreError as exc:
            logger.error("templates unavailable", extra={"error": str(exc)})
            return error(503, "storage_unavailable", "the template store is unavailable; retry", None)
        if rules.is_stale(message.not_after, now):
            return error(400, ConnectorCode.STALE_REQUEST, "`not_after` is already in the past", "not_after")
        key = message.idempotency_key
        message_id = rules.message_id(key, "") if key else f"msg_{uuid.uuid4().hex}"
        digest = request_digest(raw)
        try:
            created = self.ledger.create_pending(message_id, {**ledger_attrs(message), "request_sha256": digest}, now)
            if created is None:
                existing = self.ledger.get(message_id)
                seen = existing.item.get("request_sha256") if existing else None
                if seen is not None and seen != digest:  # as payment APIs do: one key, one request
                    text = f"idempotency key `{key}` was already used for a different request; use a new key"
                    return error(409, "idempotency_key_reused", text, "idempotency_key")
                if existing is None or existing.status != "pending" or existing.item.get("enqueued_at"):
                    return ApiResult(200, existing.public() if existing else {"id": message_id})
                # accepted before but never enqueued (the queue failed then): enqueue it now
            else:
                self.stats.count("pending", None, now)
        except StoreError as exc:
            logger.error("ledger unavailable", extra={"error": str(exc)})
            return error(503, "storage_unavailable", "the message store is unavailable; retry", None)
        return message_id, raw

    # --- GET /messages/{id} -----------------------------------------------------

    def get(self, message_id: str) -> ApiResult:
        record = self.ledger.get(message_id)
        if record is None:
            return error(404, "not_found", f"no message with id `{message_id}`", "id")
        return ApiResult(200, record.public())

    # --- templates ------------------------------------------------------------------

    def put_template(self, name: str, body: Any) -> ApiResult:
        try:
            template = parse_template(name, body)
            require_connection(self.settings, template.connection)
        except ValidationError as exc:
            return invalid(exc)
        self.templates.put(template)
        return ApiResult(200, template.to_dict())

    def get_template(self, name: str) -> ApiResult:
        template = self.templates.get(name)
        if template is None:
            return error(404, "not_found", f"no template named `{name}`", "name")
        return ApiResult(200, template.to_dict())

    # --- GET /stats --------------------------------------------------------------------

    def stats_for(self, query: Mapping[str, str]) -> ApiResult:
        today = self.clock().date()
        try:
            start = _day(query.get("from"), "from") or today
            end = _day(query.get("to"), "to") or today
        except ValidationError as exc:
            return invalid(exc)
        if end < start:
            return error(400, ConnectorCode.INVALID_REQUEST, "`to` must not be before `from`", "to")
        if (end - start).days >= MAX_STATS_DAYS:
            return error(
                400, ConnectorCode.INVALID_REQUEST, f"the window may span at most {MAX_STATS_DAYS} days", "from"
            )
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        return ApiResult(200, {"from": days[0], "to": days[-1], **self.stats.totals(days)})


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return parse_timestamp(name, value).date()


def parse_template(name: str, body: Any) -> Template:
    """A template as PUT: known fields only, and a field map that can fill every placeholder."""
    if not isinstance(body, dict):
        raise ValidationError("", "the template must be a JSON object")
    if len(json.dumps(body)) > MAX_TEMPLATE_BYTES:  # sizes first: DynamoDB takes 400 KB, the rest scans it
        raise ValidationError("", f"a template must be at most {MAX_TEMPLATE_BYTES // 1024} KB as JSON")
    allowed = {"body", "media_urls", "from", "messaging_service_sid", "connection", "field_map"}
    unknown = sorted(set(body) - allowed - {"name"})
    if unknown:
        raise ValidationError(
            unknown[0], f"unknown field `{unknown[0]}`; a template has {', '.join(sorted(allowed))}", 20001
        )
    if not is_name(name):
        raise ValidationError("name", "a template name must be 1-128 printable characters, no space at either end")
    text = body.get("body")
    media = body.get("media_urls") or []
    if text is not None and not isinstance(text, str):
        raise ValidationError("body", "`body` must be a string")
    check_unrendered_size(text or "")
    if not isinstance(media, list) or not all(
        isinstance(m, str) and m.startswith(("http://", "https://")) for m in media
    ):
        raise ValidationError("media_urls", "`media_urls` must be a list of http(s) URLs", 21620)
    if not text and not media:
        raise ValidationError("body", "a template needs a `body` or `media_urls`", 21602)
    field_map = body.get("field_map") or {}
    if not isinstance(field_map, dict) or not all(isinstance(v, str) and v for v in field_map.values()):
        raise ValidationError("field_map", "`field_map` must map names to the caller's field names")
    used = placeholders(text or "")
    unused = sorted(set(field_map) - {TO_KEY, *used})
    if unused:
        raise ValidationError("field_map", f"`field_map` maps `{unused[0]}`, which the body does not use")
    if field_map:
        unmapped = [p for p in used if p not in field_map]
        if unmapped:
            raise ValidationError(
                "field_map", f"placeholder <{unmapped[0]}> has no entry in `field_map`, so nothing can fill it"
            )
    connection = body.get("connection")
    if connection is not None and (not isinstance(connection, str) or not is_name(connection)):
        raise ValidationError("connection", "`connection` must be a connection's name (1-128 printable characters)")
    sender, service = body.get("from"), body.get("messaging_service_sid")
    if sender is not None and (not isinstance(sender, str) or not rules.is_valid_sender(sender)):
        raise ValidationError(
            "from", "`from` must be an E.164 number, a short code or an alphanumeric sender ID", 21212
        )
    if service is not None and (not isinstance(service, str) or not rules.MESSAGING_SERVICE_SID.match(service)):
        raise ValidationError("messaging_service_sid", "`messaging_service_sid` must match ^MG[0-9a-fA-F]{32}$", 21705)
    return Template(
        name=name,
        body=text,
        media_urls=tuple(media),
        from_=sender,
        messaging_service_sid=service,
        connection=body.get("connection"),
        field_map=dict(field_map),
    )


# --- POST /connection/test -----------------------------------------------------------


class ConnectionCheck:
    """What HCL Unica's "Test connection" does, and more: credentials, sender, webhook round trip."""

    def __init__(
        self, settings: Settings, credentials: SecretsCredentials, twilio: TwilioApi, http_post: Callable[..., Any]
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.twilio = twilio
        self.http_post = http_post

    def run(self, name: str | None) -> ApiResult:
        try:
            connection = require_connection(self.settings, name)
        except ValidationError as exc:
            return invalid(exc)
        checks: list[dict[str, Any]] = []
        try:
            creds = self.credentials.for_connection(connection)
            account = self.twilio.fetch_account(creds)
            checks.append(
                {
                    "check": "credentials",
                    "ok": True,
                    "detail": f"account {account.get('sid')} is {account.get('status')}",
                }
            )
        except (CredentialsUnavailable, ConfigurationError) as exc:
            checks.append({"check": "credentials", "ok": False, "detail": f"cannot read the secret: {exc}"})
            creds = None
        except TwilioError as exc:
            checks.append(
                {"check": "credentials", "ok": False, "detail": f"Twilio refused them ({exc.code}): {exc.message}"}
            )
            creds = None
        checks.append(self._sender(connection.from_numbers, connection.messaging_service_sid))
        checks.append(self._webhook(creds.auth_token if creds else None))
        ok = all(c["ok"] for c in checks)
        return ApiResult(200 if ok else 502, {"ok": ok, "connection": connection.name, "checks": checks})

    @staticmethod
    def _sender(numbers: Sequence[str], service: str | None) -> dict[str, Any]:
        if not numbers and not service:
            return {"check": "sender", "ok": False, "detail": "no TWILIO_DEFAULT_FROM or TWILIO_MESSAGING_SERVICE_SID"}
        bad = [n for n in numbers if not rules.is_valid_sender(n)]
        if bad or (service and not rules.MESSAGING_SERVICE_SID.match(service)):
            return {"check": "sender", "ok": False, "detail": f"not a valid sender: {', '.join(bad) or service}"}
        return {
            "check": "sender",
            "ok": True,
            "detail": f"{len(numbers)} number(s)" + (f", service {service}" if service else ""),
        }

    def _webhook(self, auth_token: str | None) -> dict[str, Any]:
        url = self.settings.status_callback_url("connection-test")
        if url is None:
            return {
                "check": "webhook",
                "ok": False,
                "detail": "neither WEBHOOK_BASE_URL nor PUBLIC_BASE_URL is set: Twilio cannot reach the connector",
            }
        if auth_token is None:
            return {"check": "webhook", "ok": False, "detail": "skipped: no working credentials to sign with"}
        params = [("MessageSid", "SM" + "0" * 32), ("MessageStatus", "sent"), ("AccountSid", "connection-test")]
        headers = {"X-Twilio-Signature": compute_signature(url, params, auth_token)}
        try:
            status = self.http_post(url, data=params, headers=headers, timeout=10).status_code
        except Exception as exc:
            return {"check": "webhook", "ok": False, "detail": f"{url} unreachable: {type(exc).__name__}"}
        if status == 200:
            return {"check": "webhook", "ok": True, "detail": f"a signed callback to {url} was accepted"}
        hint = (
            " (the signature did not match: is WEBHOOK_BASE_URL / PUBLIC_BASE_URL the exact public URL Twilio calls?)"
            if status == 403
            else ""
        )
        return {"check": "webhook", "ok": False, "detail": f"{url} answered {status}{hint}"}


# --- API keys ----------------------------------------------------------------------------


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`x-api-key: <key>` or `Authorization: Bearer <key>`."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeys:
    """Key hashes from Secrets Manager ({"keys": [{"name", "sha256"}]}); a key is never stored in clear."""

    def __init__(self, provider: Any, secret_id: str | None, max_age: int = 300) -> None:
        self.provider = provider
        self.secret_id = secret_id
        self.max_age = max_age

    def check(self, headers: Mapping[str, str]) -> ApiResult | None:
        """None when the caller may proceed; else the 401/403 to answer."""
        key = presented_key(headers)
        if key is None:
            return error(401, "unauthorized", "send an API key as `x-api-key` or `Authorization: Bearer <key>`")
        if not self.secret_id:
            return error(403, "forbidden", "no API keys are configured (API_KEYS_SECRET_ID)")
        try:
            value = self.provider.get(self.secret_id, max_age=self.max_age, transform="json")
        except Exception as exc:
            logger.error("API keys unavailable", extra={"error": type(exc).__name__})
            return error(503, "keys_unavailable", "API keys could not be read; retry")
        digest = key_hash(key)
        known = [str(k.get("sha256", "")) for k in (value or {}).get("keys", []) if isinstance(k, dict)]
        if not any(hmac.compare_digest(digest, h) for h in known):
            metrics.add_metric(name="ApiKeyRejected", unit="Count", value=1)
            return error(403, "forbidden", "this API key is not valid")
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw_body: bytes | str) -> Any:
    """A request body as JSON, or a ValidationError the API answers with 400."""
    if not raw_body:
        raise ValidationError("", "the request body must be a JSON object")
    try:
        return json.loads(raw_body, parse_constant=_no_constant)  # NaN and Infinity are not JSON
    except RecursionError as exc:
        raise ValidationError("", "the request body nests objects or lists too deeply") from exc
    except ValueError as exc:
        raise ValidationError("", f"the request body is not valid JSON: {exc}") from exc
